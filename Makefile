# Two commands do all the set-up on a fresh machine:
#   make train   — create .venv, install handprop (what training needs), train the default model
#   make test    — the same plus the test tools and the optional extras, then run the test suite
# torch is installed first if the venv has none. TORCH picks the build:
#   TORCH=torch            (default) plain torch from your index: on PyPI the CUDA build, GBs
#   TORCH=cpu              the CPU-only build from PyTorch's CPU index (TORCH_CPU_INDEX, by
#                          default download.pytorch.org/whl/cpu; a mirror of it works too)
#   TORCH=torch==2.13.0    any pip requirement, e.g. a CPU build your own index offers, or the
#                          path of a torch wheel file downloaded elsewhere
# Where the index cannot be reached, pip gives up after one retry and make says what to do.
# Then the commands live in .venv/bin: `source .venv/bin/activate`, or the targets below.
VENV   ?= .venv
PYTHON ?= python3
TORCH  ?= torch
ARGS   ?=
DEMO   ?= all
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

ifeq ($(TORCH),cpu)
TORCH_PIP := torch --index-url $(TORCH_CPU_INDEX) --retries 1 --timeout 30
TORCH_HELP := could not install torch from $(TORCH_CPU_INDEX). Where it cannot be reached: \
  TORCH_CPU_INDEX=<a mirror of it>, or TORCH=<path of a torch CPU wheel>, or TORCH=torch \
  (PyPI's torch: on Linux x86-64 the CUDA build, several GB, which runs on a CPU too). See \
  the README, Set-up.
else
TORCH_PIP := "$(TORCH)"
TORCH_HELP := could not install torch ($(TORCH)); see the README, Set-up.
endif

.PHONY: install install-dev train test test-kernels tensorboard demo figures bench lint clean

# What training needs: torch, then handprop with the trainer's packages (the `train` extra).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install $(TORCH_PIP) \
		|| { echo "make: $(TORCH_HELP)" >&2; exit 1; }
	$(PY) -m pip install -e ".[train]"
	touch $@

# The test tools (pytest, ruff) and the extras whose tests run too (launchers, Optuna).
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

train: install
	$(BIN)/handprop-train $(ARGS)

# The whole suite once. (test-kernels, below, runs the tests that train to a threshold again
# under the other CPU kernels torch picks on other machines; not yet part of make test, as two
# of its bars do not hold under every setting: see the README.)
test: install-dev
	$(BIN)/pytest -q $(ARGS)

# The quality bars and the demos' claims under ATen's portable kernels, then under AVX2 with MKL
# held to AVX2: a result that only holds with this machine's own kernels (AVX-512 on many) fails
# here. ARGS narrows these runs too; a selection without quality tests (pytest's status 5) is no
# failure.
test-kernels: install-dev
	ATEN_CPU_CAPABILITY=default $(BIN)/pytest -q -m quality $(ARGS) || [ $$? -eq 5 ]
	ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 $(BIN)/pytest -q -m quality $(ARGS) \
		|| [ $$? -eq 5 ]

# The loss curves, learning rates and HParams of every run under outputs/.
tensorboard: install
	$(BIN)/tensorboard --logdir outputs $(ARGS)

# Every demonstration of the notes into outputs/demos/NAME (DEMO=optimizers for one).
demo: install
	$(BIN)/handprop-demo $(DEMO) $(ARGS)

# The README's figures, regenerated in place (a clean tree stays clean).
figures: install
	$(BIN)/handprop-demo all --out docs/figures

bench: install
	$(PY) scripts/bench_functions.py

lint: install-dev
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
