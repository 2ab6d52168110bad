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
	@echo "make reproduce  the 2021 BN-vs-NF comparison, scaled down for CPU (< 1 h) -> docs/reproduction.md"

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

# The 2021 BN-vs-NF comparison at CPU scale: the three blog presets with the note's optimizer
# settings, scaled to 5 blocks x 64 channels, plus the correct NF net with skip gains starting at 1;
# same data (the bundled self-play games; floodgate as test), steps and seed for all runs (about 45
# minutes on 2 CPU cores).
REPRO       ?= reproduction
REPRO_STEPS ?= 500
REPRO_DOCS  ?= docs
REPRO_SET    = --amp off --set train.device=cpu --set model.blocks=5 --set model.channels=64 \
               --set train.steps=$(REPRO_STEPS) --set train.eval_interval=50 --set train.log_interval=10 \
               --quiet
reproduce: install
	$(BIN)/shogitrain prepare $(DATA)/selfplay --test-data $(DATA)/floodgate \
		--test-fraction 0.05 --overwrite --quiet --out $(REPRO)/dataset
	$(BIN)/shogitrain inspect $(REPRO)/dataset > $(REPRO)/dataset.txt
	rm -rf $(REPRO)/runs
	$(BIN)/shogitrain train --config configs/blog-bn.yaml --data $(REPRO)/dataset --run-dir $(REPRO)/runs/bn $(REPRO_SET)
	$(BIN)/shogitrain train --config configs/blog-nf-faithful.yaml --data $(REPRO)/dataset --run-dir $(REPRO)/runs/nf-blog $(REPRO_SET)
	$(BIN)/shogitrain train --config configs/blog-nf.yaml --data $(REPRO)/dataset --run-dir $(REPRO)/runs/nf $(REPRO_SET)
	$(BIN)/shogitrain train --config configs/blog-nf.yaml --data $(REPRO)/dataset --run-dir $(REPRO)/runs/nf-skip1 $(REPRO_SET) \
		--set model.options.skip_init=one
	for r in bn nf-blog nf nf-skip1; do $(BIN)/shogitrain eval -q --checkpoint $(REPRO)/runs/$$r/checkpoint.pt \
		--data $(REPRO)/dataset --json $(REPRO)/runs/$$r/eval.json > $(REPRO)/runs/$$r/eval.txt; done
	$(BIN)/shogitrain compare $(REPRO)/runs/bn $(REPRO)/runs/nf-blog $(REPRO)/runs/nf $(REPRO)/runs/nf-skip1 --out $(REPRO_DOCS)/reproduction
	$(BIN)/python scripts/reproduction_page.py $(REPRO) $(REPRO_DOCS)/reproduction.md

bench: install
	$(BIN)/python bench/prepare.py
	$(BIN)/python bench/features.py
	$(BIN)/python bench/mcts.py

clean:
	rm -rf $(OUT) .pytest_cache build *.egg-info
