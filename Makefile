# Quick start: `make demo` (the whole local pipeline), `make test` (set-up and tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cdpipe-installed

.PHONY: setup demo test unit e2e lint bench down clean pipeline

setup: $(STAMP)

# System packages first (scripts/bootstrap uses apt-get), then the virtual environment.
$(STAMP): requirements.txt requirements-dev.txt app/requirements.txt pyproject.toml scripts/bootstrap
	scripts/bootstrap
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

demo: setup
	scripts/bootstrap
	$(BIN)/cdpipe up

test: setup
	scripts/bootstrap
	$(BIN)/ruff check .
	$(BIN)/mypy app cdpipe cdpipe_host monitoring bench devkit
	$(BIN)/ansible-lint --nocolor playbooks/ roles/
	$(BIN)/pytest

unit: setup
	$(BIN)/pytest tests/unit

e2e: setup
	$(BIN)/pytest tests/e2e

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy app cdpipe cdpipe_host monitoring bench devkit
	$(BIN)/ansible-lint playbooks/ roles/

# The Jenkins stages, in Jenkins' order, deploying to the local provider.
pipeline:
	scripts/ci_build
	scripts/ci_test
	scripts/ci_analysis
	CDPIPE_PROVIDER=local scripts/post_build

bench: setup
	$(BIN)/python -m bench

down: setup
	$(BIN)/cdpipe down

clean: down
	rm -rf $(VENV)
