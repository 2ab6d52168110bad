# shogitrain — developer and demo targets. Everything runs in a local virtualenv (.venv).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= data
OUT    ?= demo-out
PYTEST_ARGS ?=

.PHONY: help install test test-slow test-all demo bench clean

help:
	@echo "make demo       prepare -> train two tiny nets (bn, nf) -> eval -> compare on data/"
	@echo "make test       the default test suite (fast; CPU)"
	@echo "make test-slow  oracle sweeps over ../shared/data and end-to-end runs"
	@echo "make bench      throughput benchmarks (bench/*.py), ratios against the reference tools"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Reinstall when the package metadata or pins change.
$(VENV)/.installed: pyproject.toml constraints-test.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -c constraints-test.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

test-all: install
	$(BIN)/python -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

demo: install
	rm -rf $(OUT)
	$(BIN)/shogitrain prepare $(DATA)/selfplay --test-data $(DATA)/floodgate --no-require-eval --out $(OUT)/dataset
	$(BIN)/shogitrain inspect $(OUT)/dataset

bench: install
	$(BIN)/python bench/prepare.py
	$(BIN)/python bench/features.py

clean:
	rm -rf $(OUT) .pytest_cache build *.egg-info
