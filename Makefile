# The README's two commands: `make run` (the main job, end to end) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/image-retrain
OUTPUT_DIR ?= output
PYTEST_ARGS ?=
RUN_ARGS ?=

.PHONY: setup module lint test test-fast test-deps run doctor lock bench serve clean

setup: ## Create .venv (idempotent) and the builtin EfficientNet-Lite0 module.
	bash scripts/setup_env.sh
	@$(MAKE) --no-print-directory module

module: ## Convert the builtin image module once (reused afterwards).
	$(CLI) module convert efficientnet_lite0

test-deps: ## System packages some tests use (headless Chromium for the web page test).
	bash scripts/install_test_deps.sh

lint: setup ## ruff (lint + import order), configured in pyproject.toml.
	$(PY) -m ruff check .

test: setup test-deps lint ## Lint, then run the whole test suite.
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup ## Unit tests only (no end-to-end pipeline/server runs).
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

run: setup ## The main job: digits data set -> pipeline -> model server -> one gRPC and one REST prediction (RUN_ARGS=--verbose: all logs).
	$(PY) -m pipelines.demo --output-dir $(OUTPUT_DIR) $(RUN_ARGS)

doctor: ## Check the stack and the C runtime in use.
	@if [ ! -e $(CLI) ]; then echo "no venv: run 'make setup'" >&2; exit 2; fi
	$(CLI) doctor

lock: ## Re-pin requirements.lock from the current venv (without requirements-overrides.txt's packages).
	( echo "# Constraints for 'make setup' (pip -c): two fresh installs resolve the same versions."; \
	  echo "# Regenerate: make lock"; $(PY) -m pip freeze --exclude-editable | grep -v '^-e' \
	  | grep -v -i -E "^($$(sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/\1/p' requirements-overrides.txt | paste -sd'|'))==" ) \
	  > requirements.lock

bench: setup ## Run every benchmark script (prints figures; see BENCHMARKS.md).
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

serve: setup ## Serve the models pushed by `make run`.
	$(CLI) serve --port 8500 --rest_api_port 8501 --model_name digits --model_base_path $(abspath $(OUTPUT_DIR))/serving/digits

clean:
	rm -rf $(OUTPUT_DIR) .pytest_cache
