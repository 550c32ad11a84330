# Two commands do all the set-up on a fresh machine:
#   make train   — create .venv, install handprop, train the default model
#   make test    — create .venv, install handprop with its test tools, run the test suite
# torch is installed first if the venv has none: TORCH=... picks the build, e.g.
#   make test TORCH=torch==2.13.0      (a CPU machine whose pip offers that CPU build)
# A GPU machine needs nothing special: plain `torch` from PyPI is the CUDA build.
VENV   ?= .venv
PYTHON ?= python3
TORCH  ?= torch
ARGS   ?=
PY     := $(VENV)/bin/python

.PHONY: install train test bench lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH)"
	$(PY) -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

train: install
	$(VENV)/bin/handprop-train $(ARGS)

test: install
	$(VENV)/bin/pytest -q $(ARGS)

bench: install
	$(PY) scripts/bench_functions.py

lint: install
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
