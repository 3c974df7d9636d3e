# Two entry points (see README): `make reproduce` runs the notebook suite, `make test` runs every test (what CI runs).
# `make test-fast` is for the edit-test loop: the unit tests of tests/ without the notebooks (nbval) and without the
# tests marked multiprocess (torchrun and gloo process groups, subprocess trainings, notebook kernels, SIGKILL fault
# injection). All of them create the virtual environment in $(VENV) first when it is missing or older than
# pyproject.toml or constraints.txt (the pinned versions that the committed notebook outputs were computed with).

PYTHON ?= python3
VENV ?= .venv
PRESET ?= smoke
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# the slowest tests are listed at the end, to keep CI's run time in view
PYTEST_ARGS ?= --durations=15

export MPLBACKEND = agg
# one run store for the suite, JupyterLab and the scripts (tests use their own temporary store)
export CONTRASTSEG_RUNS ?= $(CURDIR)/runs

.PHONY: setup reproduce test test-fast lab tensorboard notebooks sync clean-runs

setup: $(INSTALLED)

$(INSTALLED): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,notebooks]"
	touch $(INSTALLED)

reproduce: $(INSTALLED)
	$(PY) -m contrastseg.suite --preset $(PRESET) $(SUITE_ARGS)

test: $(INSTALLED)
	$(PY) -m pytest $(PYTEST_ARGS)

# nbval is not loaded, so pyproject's addopts, which hold nbval's options, are replaced by their plain part
test-fast: $(INSTALLED)
	$(PY) -m pytest tests -p no:nbval -o addopts=-ra -m "not multiprocess and not slow" $(PYTEST_ARGS)

# re-execute the committed notebooks at the smoke preset and strip volatile metadata (see contrastseg/nbtools.py)
NOTEBOOKS ?= $(wildcard notebooks/*.ipynb notebooks/*/*.ipynb)
notebooks: $(INSTALLED)
	$(PY) -m contrastseg.nbtools $(NOTEBOOKS)

# rewrite each notebook's py:percent pair (notebooks/jupytext.toml) from the notebook, without executing anything
sync: $(INSTALLED)
	$(PY) -m contrastseg.nbtools --pairs-only $(NOTEBOOKS)

lab: $(INSTALLED)
	$(VENV)/bin/jupyter lab --no-browser --ip=127.0.0.1 --port=8888 --ServerApp.root_dir=.

# TensorBoard over the run store: the scalars that every run writes into its folder (contrastseg/engine/tensorboard.py).
# Its Python loader (--load_fast=false) hides the events of the steps that a resumed run replayed; the Rust one does not.
TENSORBOARD_PORT ?= 6006
tensorboard: $(INSTALLED)
	$(VENV)/bin/tensorboard --logdir $(CONTRASTSEG_RUNS)/store --host 127.0.0.1 --port $(TENSORBOARD_PORT) --load_fast=false

clean-runs:
	rm -rf runs
