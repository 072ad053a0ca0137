# Two commands do all the set-up: `make demo` and `make test` (`make lint`: the linters CI runs first).
# GPU users: `make demo TORCH_INDEX=https://download.pytorch.org/whl/cu124 TORCH_VERSION=2.6.0`
# (any CUDA build of torch >= 2.2) instead of the default CPU wheel.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
DEMO_OUT ?= demo-out

BIN := $(VENV)/bin
TORCH_INDEX_FLAG := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

.PHONY: demo demo-quick test lint install clean

$(BIN)/neuropil: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)" $(TORCH_INDEX_FLAG)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(BIN)/neuropil

install: $(BIN)/neuropil

demo: install
	$(BIN)/neuropil demo --out $(DEMO_OUT)

demo-quick: install
	$(BIN)/neuropil demo --quick --out $(DEMO_OUT)

test: install
	$(BIN)/python -m pytest -q

# ruff (lint rules and formatting) and mypy (settings in pyproject.toml), as CI runs them
lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(DEMO_OUT) src/*.egg-info
