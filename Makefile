# Everything runs from the project's own venv (Python 3.13, as in Lambda);
# the first target that needs it creates it.
PYTHON ?= python3.13
VENV   := .venv
BIN    := $(VENV)/bin
SAM    := PATH="$(abspath $(BIN)):$$PATH" SAM_CLI_TELEMETRY=0 $(BIN)/sam
PORT   ?= 3000

.DEFAULT_GOAL := help
.PHONY: help venv run test lint typecheck validate build docs bench ci clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements-dev.txt shared/requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed ## Create the venv and install everything

run: venv ## Serve the API on http://127.0.0.1:3000 with an embedded Postgres (migrated, seeded)
	$(BIN)/python -m local.run --port $(PORT)

test: venv ## Run the test suite against a real embedded Postgres
	$(BIN)/python -m pytest

lint: venv ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv ## mypy (pydantic plugin) on the layer, the local tools and each function
	$(BIN)/mypy shared local
	for fn in functions/*/app.py; do $(BIN)/mypy $$fn || exit 1; done

validate: venv ## sam validate --lint
	$(SAM) validate --lint

build: venv ## sam build (no Docker: the local Python 3.13 builds the arm64 layer), then bytecode
	$(SAM) build
	@# Lambda cannot write __pycache__ in /opt or /var/task, so without shipped bytecode every
	@# cold start compiles every import (about 0.3 s, docs/PERFORMANCE.md). unchecked-hash:
	@# zipping changes the sources' timestamps, which would invalidate timestamp-based .pyc.
	$(BIN)/python -m compileall -q -j0 --invalidation-mode unchecked-hash .aws-sam/build

docs: venv ## Regenerate docs/openapi.json from the handlers (examples recorded on a scratch database)
	$(BIN)/python -m local.openapi

bench: venv ## Measure cold start, throughput, round trips, size (BENCH_ARGS="--markdown docs/PERFORMANCE.md" writes the table)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

ci: lint typecheck test validate build ## What CI runs

clean: ## Remove the venv, the local database and build output
	rm -rf $(VENV) .local .aws-sam
