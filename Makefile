# peerfind: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VENV := .run/uv
# uv from $(PYTHON) when it has it (CI, pyenv), else from a small venv of ours: a distro's
# python3 refuses `pip install` outside a venv (PEP 668) and may have no pip at all.
UV ?= $(if $(shell $(PYTHON) -m uv --version 2>/dev/null),$(PYTHON) -m uv,$(UV_VENV)/bin/uv)
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DIR := .run
LOCAL_ROOT := $(RUN_DIR)/local
PYTEST_ARGS ?=
PEERS ?= 3
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)
# uv syncs into $(VENV), not always .venv: `make VENV=.venv-3.13 PYTHON=.../python3.13 test`.
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: help install proto check-proto lint lint-containers fmt test test-unit test-integration \
        test-compose demo bench sim local-up local-down local-status up down ps logs clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml uv.lock libs/*/pyproject.toml services/*/pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || { echo "installing uv from PyPI into $(UV_VENV)"; \
		$(PYTHON) -m venv $(UV_VENV) && $(UV_VENV)/bin/pip install --quiet --disable-pip-version-check uv; }
	$(UV) sync --frozen --all-packages
	@touch $@

install: $(VENV)/.installed ## Create .venv with every service, the CLI and the dev tools (idempotent)

proto: install ## Regenerate the gRPC stubs from proto/
	$(PY) scripts/gen_proto.py

check-proto: install ## Fail if the committed stubs drift from proto/
	$(PY) scripts/gen_proto.py --check

lint: install lint-containers ## ruff (lint + format check), mypy, and the container files
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy libs/peerfind/src libs/peerfind-cli/src libs/peerfind-devnet/src \
		services/directory/src services/transfer/src services/indexer/src scripts sim deploy/compose

DOCKERFILES := services/Dockerfile deploy/compose/prometheus/Dockerfile

lint-containers: install ## hadolint on every Dockerfile, `docker compose config` on the stack
	$(VENV)/bin/hadolint --failure-threshold info $(DOCKERFILES)
	$(VENV)/bin/docker-compose -f deploy/compose/compose.yaml config --quiet
	$(VENV)/bin/docker-compose -f deploy/compose/compose.yaml --profile monitoring config --quiet

fmt: install ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: install ## Unit and integration tests (real peers on 127.0.0.x)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-unit: install ## Unit tests only
	$(VENV)/bin/pytest libs services $(PYTEST_ARGS)

test-integration: install ## Integration tests only
	$(VENV)/bin/pytest tests/integration $(PYTEST_ARGS)

bench: install ## Benchmarks against same-run baselines; writes bench/results/latest.json
	$(PY) -m bench

sim: install ## Simulate 1,000 and 10,000 peers running our search code; writes sim/results/
	$(PY) -m sim $(SIM_ARGS)
	$(PY) -m sim.report

local-up: install ## Start PEERS (default 3, up to 50) peers as local processes (REST :800K, gRPC :5005K)
	$(PY) -m peerfind_devnet up --root $(LOCAL_ROOT) --peers '$(PEERS)'

local-down: ## Stop the local peers started by local-up
	@if [ -x $(PY) ]; then $(PY) -m peerfind_devnet down --root $(LOCAL_ROOT); else echo "nothing to stop"; fi

local-status: install ## Show the local peers' processes
	$(PY) -m peerfind_devnet status --root $(LOCAL_ROOT)

up: install ## Run PEERS (default 3, up to 50) peers in containers (Docker, else a local Podman); returns when healthy
	$(PY) scripts/stack.py up --peers '$(PEERS)'

down: ## Remove the containers, networks and volumes of `make up`
	@$(PYTHON) scripts/stack.py down

demo: install ## Replay the seed's test plan, captioned, against `make up` or `make local-up`
	$(PY) scripts/demo.py

ps: ## The stack's containers and their health
	@$(PYTHON) scripts/stack.py ps

logs: ## The stack's last log lines (SERVICES="peer1-directory ..." to pick)
	@$(PYTHON) scripts/stack.py logs $(SERVICES)

test-compose: install ## `make up`, end-to-end tests and `make demo` from the host, then `make down` (keeps the exit code)
	@rc=0; \
	$(PY) scripts/stack.py up && $(VENV)/bin/pytest tests/compose $(PYTEST_ARGS) \
		&& $(PY) scripts/demo.py --stack compose || rc=$$?; \
	$(PYTHON) scripts/stack.py down || true; \
	exit $$rc

clean: local-down ## Remove the venv, caches and run state (run `make down` first for containers)
	rm -rf $(VENV) $(RUN_DIR) .pytest_cache .mypy_cache .ruff_cache

include deploy/aws/tf.mk
include deploy/k8s/k8s.mk
