# shogitrain — developer and demo targets. Everything runs in a local virtualenv (.venv).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= data
OUT    ?= demo-out
PYTEST_ARGS ?=

.PHONY: help install test test-slow test-all demo bench reproduce clean

help:
	@echo "make demo       prepare -> train two tiny nets (bn, nf) -> eval -> compare on data/"
	@echo "make test       the default test suite (fast; CPU)"
	@echo "make test-slow  oracle sweeps over all bundled data (and \$$SHOGITRAIN_EXTRA_DATA if set), end-to-end runs"
	@echo "make bench      throughput benchmarks (bench/*.py), ratios against the reference tools"
	@echo "make reproduce  the 2021 BN-vs-NF comparison at CPU scale, 3 seeds + a round robin (~2 h) -> docs/reproduction.md"

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

# The whole job end to end on the bundled sample, on CPU in a few minutes.
demo: install
	rm -rf $(OUT)
	$(BIN)/shogitrain prepare $(DATA)/selfplay --test-data $(DATA)/floodgate --out $(OUT)/dataset
	$(BIN)/shogitrain inspect $(OUT)/dataset
	$(BIN)/shogitrain train --config configs/tiny-bn.yaml --data $(OUT)/dataset --run-dir $(OUT)/runs/tiny-bn
	$(BIN)/shogitrain train --config configs/tiny-nf.yaml --data $(OUT)/dataset --run-dir $(OUT)/runs/tiny-nf
	$(BIN)/shogitrain eval --checkpoint $(OUT)/runs/tiny-bn/checkpoint.pt --data $(OUT)/dataset --json $(OUT)/eval-bn.json
	$(BIN)/shogitrain eval --checkpoint $(OUT)/runs/tiny-nf/checkpoint.pt --data $(OUT)/dataset --json $(OUT)/eval-nf.json
	$(BIN)/shogitrain compare $(OUT)/runs/tiny-bn $(OUT)/runs/tiny-nf --out $(OUT)/compare
	@echo "demo done: figures and report in $(OUT)/compare/report.md"

# The 2021 BN-vs-NF comparison at CPU scale (configs/experiments/blog-2021-cpu.yaml: the note's
# optimizer settings on 5x32 nets, batch 64, 10,000 steps; bn, nf-blog, nf and nf with skip gains
# at 1, three seeds each), then a round robin of the twelve final nets at $(REPRO_NODES) nodes a move,
# then compare (means over seeds with 95% intervals, paired differences, Elo) and the page.
# About 2 h on 2 free CPU cores; every step resumes where it stopped, so it can run in parts.
REPRO       ?= reproduction
REPRO_DOCS  ?= docs
REPRO_NODES ?= 64
REPRO_GAMES ?= 6
reproduce: install
	test -f $(REPRO)/dataset/manifest.json || $(BIN)/shogitrain prepare $(DATA)/selfplay \
		--test-data $(DATA)/floodgate --test-fraction 0.05 --quiet --out $(REPRO)/dataset
	$(BIN)/shogitrain inspect $(REPRO)/dataset > $(REPRO)/dataset.txt
	$(BIN)/shogitrain sweep configs/experiments/blog-2021-cpu.yaml --data $(REPRO)/dataset --out $(REPRO)/runs \
		--parallel 2 --quiet
	grep -qs '"complete": true' $(REPRO)/match/results.json || { rm -rf $(REPRO)/match && \
		$(BIN)/shogitrain match $(REPRO)/runs/*/seed-*/checkpoint.pt --games $(REPRO_GAMES) \
		--nodes $(REPRO_NODES) --concurrency 2 --seed 2021 --out $(REPRO)/match > $(REPRO)/match.txt; }
	$(BIN)/shogitrain compare $(REPRO)/runs --baseline bn --match $(REPRO)/match --out $(REPRO_DOCS)/reproduction
	$(BIN)/python scripts/reproduction_page.py $(REPRO) $(REPRO_DOCS)/reproduction.md

bench: install
	$(BIN)/python bench/prepare.py
	$(BIN)/python bench/features.py
	$(BIN)/python bench/mcts.py

clean:
	rm -rf $(OUT) .pytest_cache build *.egg-info
