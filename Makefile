# Every target does its own set-up from nothing: a .venv with pinned packages.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= build/demo

.PHONY: demo test bench serve clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build from local disk; a bare or newer torch would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[cpu,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m auditsvc.demo --out $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/battery.py
	$(PY) bench/shortcuts.py

serve: $(STAMP)
	$(PY) -m auditsvc.serve

clean:
	rm -rf $(VENV) build
