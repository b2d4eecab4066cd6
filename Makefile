# `make demo` and `make test` are the whole set-up on a fresh machine (see README).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Pinned: an unpinned `torch` pulls several GB of CUDA packages; this pin takes the CPU wheel
# where one is provided locally and the matching CUDA build on a GPU machine.
TORCH  := torch==2.13.0

.PHONY: install demo train-demo test gpu-check lint clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install  ## the CPU quickstart (random vs core-set, 5 seeds x 6 budgets), then its table
	$(BIN)/alpose run
	$(BIN)/alpose table runs/quickstart

train-demo: install  ## one training run of the small hourglass on the synthetic set; prints PCKh
	$(BIN)/alpose prepare synthetic
	$(BIN)/alpose train

test: install  ## the test suite (about 5 minutes on 2 cores after the install)
	$(BIN)/python -m pytest -q

gpu-check: install  ## the GPU self-test (tests marked gpu, a few minutes on one GPU), then a summary
	$(BIN)/python scripts/gpu_check.py

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs outputs multirun .pytest_cache
