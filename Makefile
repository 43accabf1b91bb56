# One entry point for everything: CI calls these same targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: help env node prometheus protos protos-check wasm lint fmt test test-fast run up bench clean

help:
	@echo "make run    - build everything, start the mesh on localhost and value the sample portfolio"
	@echo "make test   - install what the tests need and run lint + the whole test suite"
	@echo "make lint   - ruff, mypy strict on services/ and clients/python, buf lint, generated-code staleness"
	@echo "make protos - regenerate gen/livecalc from protos/"
	@echo "make wasm   - rebuild the WASM models from models/ with ziglang"
	@echo "make bench  - engine benchmark (figures and ratios)"

# The virtual environment, rebuilt when the dependency list changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

env: $(STAMP)

# buf (lint) and azurite (Azure Blob emulator) come from npm, pinned by package-lock.json.
# `npm ci` rejects this lock over the platform-specific optional packages of buf that npm 11
# leaves out of it; `npm install` honours the locked versions all the same.
$(NODE_STAMP): package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

node: $(NODE_STAMP)

# A real Prometheus for the scrape tests: Debian's package, installed when we are root.
prometheus:
	@if command -v prometheus >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = "0" ]; then \
		echo "installing Debian prometheus"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	else echo "prometheus not installed and not root: the Prometheus scrape test will be skipped"; fi

protos: env
	$(PY) scripts/gen_protos.py

protos-check: env
	$(PY) scripts/gen_protos.py --check

wasm: env
	$(PY) models/build.py
	touch $(WASM_STAMP)

lint: env node
	$(BIN)/ruff check services clients/python tests scripts models
	$(BIN)/ruff format --check services clients/python tests scripts models
	$(BIN)/mypy services clients/python/livecalc_client
	npx --no-install buf lint
	$(PY) scripts/gen_protos.py --check

fmt: env
	$(BIN)/ruff check --fix services clients/python tests scripts models
	$(BIN)/ruff format services clients/python tests scripts models

# pytest exits 5 when it collected nothing; make treats that as the failure it is. The 25
# slowest tests are listed at the end, so the suite's time budget (15 minutes) can be watched.
test: env node prometheus lint
	$(BIN)/pytest -q --durations=25

test-fast: env
	$(BIN)/pytest -q -m "not slow"

up: env
	$(BIN)/livecalc up

# The shipped WASM models are committed builds of their C sources. `make run` rebuilds them only
# when a source (C, generated header, declaration, build script) is newer than the last build:
# a cold ziglang cache makes a build cost ~30 s, and the committed builds are current on a clone.
# The stamp lives in the environment, so a fresh environment builds once (byte-identical output).
WASM_DIR := services/valuation/reference_model/models
WASM_SOURCES := $(wildcard $(WASM_DIR)/src/*.c $(WASM_DIR)/src/include/*.h $(WASM_DIR)/src/include/*/*.h \
	services/valuation/reference_model/*.interface.json services/valuation/sdk/*.py) models/build.py
WASM_STAMP := $(VENV)/.wasm-built

$(WASM_STAMP): $(WASM_SOURCES) | $(STAMP)
	$(PY) models/build.py
	touch $@

# The demo: start the embedded mesh, create the sample dataset and reference package on first
# use, run a preview and the full valuation, print the table, write results.json and the plot,
# stop the mesh. RUN_ARGS passes flags through (e.g. RUN_ARGS="--rows 20000 --port-offset 100").
run: env $(WASM_STAMP)
	$(BIN)/livecalc run $(RUN_ARGS)

bench: env
	$(BIN)/livecalc bench engine

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .livecalc
