# `make demo` and `make test` are the whole set-up on a fresh machine (see README).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Pinned: an unpinned `torch` pulls several GB of CUDA packages; this pin takes the CPU wheel
# where one is provided locally and the matching CUDA build on a GPU machine.
TORCH  := torch==2.13.0

.PHONY: install lock demo train-demo test gpu-check lint clean

# requirements.lock: the exact versions that made the committed results (`make lock` rewrites it
# from this venv); pyproject.toml keeps the ranges a library user installs from.
$(BIN)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

lock: install  ## rewrite requirements.lock from the venv (after a deliberate upgrade)
	$(BIN)/python -m pip freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/' > requirements.lock

install: $(BIN)/.installed

demo: install  ## the CPU quickstart (random vs core-set, 5 seeds x 6 budgets), then its table
	$(BIN)/alpose run
	$(BIN)/alpose table runs/quickstart
	$(BIN)/python scripts/compare_results.py runs/quickstart/results.csv results/quickstart/results.csv

train-demo: install  ## one training run of the small hourglass on the synthetic set; prints PCKh
	$(BIN)/alpose prepare synthetic
	$(BIN)/alpose train

test: install  ## the test suite (its time on a fresh clone: README)
	$(BIN)/python -m pytest -q

gpu-check: install  ## the GPU self-test (tests marked gpu, a few minutes on one GPU), then a summary
	$(BIN)/python scripts/gpu_check.py

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs outputs multirun .pytest_cache
