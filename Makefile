# The two commands of the README. `make install` then `make test` on a fresh clone.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install test test-learning demo

install:  ## project + test extras; torch first so pip takes the local CPU wheel; Debian's chromium for the review page tests
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev]"
	command -v chromium >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }

test:  ## the default test run (CPU, offline)
	$(PYTHON) -m pytest -q

test-learning:  ## the learning lane: pretrain the shipped recipe cold, then the demo's acceptance checks (~30 min)
	$(PYTHON) -m pytest -q -m learning --learning

demo: install  ## the whole flow offline on CPU: pretrain once (~30 min, then cached), synth -> annotate -> review -> bench -> RL -> eval (~3 min)
	maple-rl demo --out demo-out
