# Everything runs from the project's own venv (Python 3.13, as in Lambda);
# the first target that needs it creates it.
PYTHON ?= python3.13
VENV   := .venv
BIN    := $(VENV)/bin
SAM    := PATH="$(abspath $(BIN)):$$PATH" SAM_CLI_TELEMETRY=0 $(BIN)/sam
PORT   ?= 3000

.DEFAULT_GOAL := help
.PHONY: help venv browser-tools lock run test lint typecheck validate build check-security docs schema bench ci clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# Installed only from the locks (make lock writes them from the .in files): every
# package pinned, every file checked against its hash, nothing resolved at install.
PIP_LOCKED = -m pip install --quiet --require-hashes --no-deps
$(BIN)/.installed: requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python $(PIP_LOCKED) -r requirements-dev.txt
	$(BIN)/python -m pip check
	touch $@

# checkov pins its own boto3, so it lives in a venv of its own inside .venv.
CHECKOV_VENV := $(VENV)/checkov
$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python $(PIP_LOCKED) -r requirements-checkov.txt
	touch $@

venv: $(BIN)/.installed browser-tools ## Create the venv and install everything from the locks

# The console's browser test (tests/test_console_browser.py) drives Debian's chromium
# through its chromedriver and reads the QR back with zbarimg; the frontend kit's test
# (tests/test_frontend_kit.py) runs the kit with node: from apt, when missing.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser-tools: ## Install chromium, chromedriver, zbarimg and node with apt, those missing ($CHROMIUM / $CHROMEDRIVER name others)
	@missing=""; \
	command -v $${CHROMIUM:-chromium} >/dev/null || missing="$$missing chromium"; \
	command -v $${CHROMEDRIVER:-chromedriver} >/dev/null || missing="$$missing chromium-driver"; \
	command -v zbarimg >/dev/null || missing="$$missing zbar-tools"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null; then $(SUDO) apt-get update && $(SUDO) apt-get install -y $$missing; \
	else echo "no apt-get: install$$missing, or the browser and kit tests fail" >&2; fi

# One resolution for every platform (the arm64 layer too), with the hash of every file.
UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --python-version 3.13 --generate-hashes \
	--custom-compile-command "make lock"
lock: venv ## Regenerate the locks (*.txt) from their inputs (*.in); keeps unchanged pins
	$(UV_COMPILE) shared/requirements.in -o shared/requirements.txt
	$(UV_COMPILE) requirements-dev.in -c shared/requirements.txt -o requirements-dev.txt
	$(UV_COMPILE) requirements-checkov.in -o requirements-checkov.txt

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

validate: venv ## sam validate --lint, and cfn-lint on the deploy role template
	$(SAM) validate --lint
	$(BIN)/cfn-lint deploy/github-oidc-role.yaml

build: venv ## sam build (no Docker: the local Python 3.13 builds the arm64 layer), then bytecode
	$(SAM) build
	@# Lambda cannot write __pycache__ in /opt or /var/task, so without shipped bytecode every
	@# cold start compiles every import (about 0.3 s, docs/PERFORMANCE.md). unchecked-hash:
	@# zipping changes the sources' timestamps, which would invalidate timestamp-based .pyc.
	$(BIN)/python -m compileall -q -j0 --invalidation-mode unchecked-hash .aws-sam/build

check-security: venv $(CHECKOV_VENV)/.installed ## zizmor (workflows), checkov (both templates), squawk (every migration)
	$(BIN)/zizmor --offline --quiet .
	$(CHECKOV_VENV)/bin/checkov --config-file .checkov.yaml -f template.yaml -f deploy/github-oidc-role.yaml
	$(BIN)/squawk supabase/migrations/*.sql

docs: venv ## Regenerate docs/openapi.json from the handlers (examples recorded on a scratch database)
	$(BIN)/python -m local.openapi

schema: venv ## Regenerate supabase/schema.sql: the migrated schema in one file (a scratch embedded Postgres, about 2 s)
	$(BIN)/python -m local.schema

bench: venv ## Measure cold start, throughput, round trips, size (BENCH_ARGS="--markdown docs/PERFORMANCE.md" writes the table)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

ci: lint typecheck check-security test validate build ## What CI runs

clean: ## Remove the venv, the local database and build output
	rm -rf $(VENV) .local .aws-sam
