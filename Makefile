# Visio: `make run` starts the service, `make test` runs the tests. `make help` lists the rest.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: help install run test lint typecheck protos check-generated validate-envoy bench fuzz ci clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Visio needs Python 3.11 or newer (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## Create .venv and install Visio with its dev tools

run: $(STAMP) ## Start the gRPC server + Envoy gateway (SQLite in ./visio.db); prints an API key on first start
	$(BIN)/visio serve

test: $(STAMP) check-generated validate-envoy ## Run the whole test suite (real dlib, real Envoy, real SQLite)
	$(BIN)/python -m pytest

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check visio_grpc tests scripts
	$(BIN)/mypy visio_grpc

protos: $(STAMP) ## Regenerate Python stubs and the Envoy descriptor set from protos/
	$(BIN)/python scripts/gen_protos.py

check-generated: $(STAMP) ## Fail if the committed generated code is stale
	$(BIN)/python scripts/gen_protos.py --check

validate-envoy: $(STAMP) ## Check envoy.yaml with Envoy itself
	$(BIN)/envoy --mode validate -c envoy.yaml --log-level error >/dev/null

bench: $(STAMP) ## Benchmark: naive dlib vs engine vs gRPC vs REST over ../shared/faces
	$(BIN)/python scripts/bench.py

fuzz: $(STAMP) ## Fuzz the upload path for longer (FUZZ_SECONDS=300)
	$(BIN)/python scripts/fuzz_upload.py --seconds $${FUZZ_SECONDS:-300}

ci: lint test ## Everything CI runs

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
