# Quick start: `make demo` (the whole local pipeline), `make test` (set-up and tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cdpipe-installed

.PHONY: setup demo test unit e2e lint bench down clean pipeline machines machines-down generated

setup: $(STAMP)

# System packages first (scripts/bootstrap uses apt-get), then the virtual environment.
$(STAMP): requirements.txt requirements-dev.txt app/requirements.txt pyproject.toml scripts/bootstrap
	scripts/bootstrap
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# The whole local pipeline, then the live dashboard in the foreground (Ctrl-C stops the
# dashboard only; `make down` removes the environment).
# DASHBOARD_PORT=N picks another port than the CLI's default (cdpipe/model.py).
demo: setup
	scripts/bootstrap
	$(BIN)/cdpipe up
	$(BIN)/cdpipe dashboard $(if $(DASHBOARD_PORT),--port $(DASHBOARD_PORT))

# Linters and every suite, the machine suite beside the local ones (docs/testing.md).
test: setup
	scripts/bootstrap
	scripts/run_tests

unit: setup
	$(BIN)/pytest tests/unit

# The vars files Ansible takes from cdpipe's Python model (roles/*/defaults/main/model.yml,
# inventory/group_vars/all/model.yml): rewritten after a model value changes.
generated: setup
	$(BIN)/python -m cdpipe.ansible_values

e2e: setup
	$(BIN)/pytest tests/e2e

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy app cdpipe cdpipe_host monitoring bench devkit rig library module_utils
	$(BIN)/ansible-lint playbooks/ roles/

# The Jenkins stages, in Jenkins' order, deploying to the local provider.
pipeline:
	scripts/ci_build
	scripts/ci_test
	scripts/ci_analysis
	CDPIPE_PROVIDER=local scripts/post_build

# The AWS path without an AWS account: a moto server whose instances are Debian machines
# (podman containers with systemd and sshd, see rig/), configured over SSH by
# `cdpipe up --provider aws`. Left up for you: `source .rig/env.sh`, then any cdpipe
# command; it removes itself after 4 hours, or at `make machines-down`.
machines: setup
	scripts/bootstrap
	$(BIN)/python -m rig up
	source .rig/env.sh && $(BIN)/cdpipe up --provider aws
	@echo "machines up: source .rig/env.sh, then .venv/bin/cdpipe status; make machines-down removes them"

machines-down: setup
	-[ -f .rig/env.sh ] && source .rig/env.sh && $(BIN)/python -m rig env >/dev/null && $(BIN)/cdpipe down
	$(BIN)/python -m rig down

bench: setup
	$(BIN)/python -m bench

down: setup
	$(BIN)/cdpipe down

clean: down
	rm -rf $(VENV)
