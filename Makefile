# Two entry points (see README): `make reproduce` runs the notebook suite, `make test` runs every test.
# Both create the virtual environment in $(VENV) first when it is missing or older than pyproject.toml.

PYTHON ?= python3
VENV ?= .venv
PRESET ?= smoke
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

export MPLBACKEND = agg

.PHONY: setup reproduce test lab clean-runs

setup: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(INSTALLED)

reproduce: $(INSTALLED)
	$(PY) -m contrastseg.suite --preset $(PRESET) $(SUITE_ARGS)

test: $(INSTALLED)
	$(PY) -m pytest $(PYTEST_ARGS)

lab: $(INSTALLED)
	$(VENV)/bin/jupyter lab --no-browser --ip=127.0.0.1 --port=8888 --ServerApp.root_dir=.

clean-runs:
	rm -rf runs
