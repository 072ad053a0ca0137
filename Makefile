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

# The browser tests (tests/browser.py) need a Chromium: Debian's package is installed when none is on PATH and
# apt-get can run as root (directly or by password-less sudo); otherwise they skip, saying why.
test: install
	@found=$${NEUROPIL_CHROMIUM:+yes}; \
	for name in chromium chromium-browser google-chrome google-chrome-stable chrome; do \
	  command -v $$name >/dev/null 2>&1 && found=yes; \
	done; \
	if [ -z "$$found" ] && command -v apt-get >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then as_root=; elif sudo -n true 2>/dev/null; then as_root="sudo -n"; else as_root=no; fi; \
	  if [ "$$as_root" != no ]; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt="$$as_root env DEBIAN_FRONTEND=noninteractive apt-get -qq -o Dpkg::Use-Pty=0"; \
	    { $$apt install -y --no-install-recommends chromium || { $$apt update && $$apt install -y --no-install-recommends chromium; }; } \
	      >/dev/null 2>&1 || echo "could not install chromium: the browser tests will skip"; \
	  fi; \
	fi
	$(BIN)/python -m pytest -q

# ruff (lint rules and formatting) and mypy (settings in pyproject.toml), as CI runs them
lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(DEMO_OUT) src/*.egg-info
