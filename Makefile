# ae_lightning — every target installs what it needs into .venv by itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install test test-full benchmark benchmark-full reproduce lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev,bm3d,stream,codec]'
	$(BIN)/pip install --no-deps 'compressai==1.2.8'  # its metadata pins numpy<2; it runs on numpy 2 (tests/test_learned_codec.py)
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the suite (re-runs only when pyproject.toml changed)

test: install ## fast test tier (a few minutes on a 2-core CPU)
	$(BIN)/python -m pytest -q

test-full: install ## every test, slow tier included
	$(BIN)/python -m pytest -q -m ""

benchmark: install ## quick offline benchmarks on the embedded real data (< 15 min on 2 CPU cores)
	$(BIN)/python -m benchmarks.run --quick

reproduce: install ## clone HEAD into an empty folder, run make benchmark there, compare with the committed tables
	$(BIN)/python -m benchmarks.reproduce

benchmark-full: install ## the paper-scale benchmarks (GPU when present)
	$(BIN)/python -m benchmarks.run --full

lint: install ## ruff
	$(BIN)/ruff check ae_lightning tests benchmarks

clean: ## remove the virtual environment and run outputs
	rm -rf $(VENV) runs lightning_logs wandb
