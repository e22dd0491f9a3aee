# The two commands of the README. `make install` then `make test` on a fresh clone.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install test

install:  ## project + test extras; torch first so pip takes the local CPU wheel
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev]"

test:  ## the default test run (CPU, offline)
	$(PYTHON) -m pytest -q
