# The front door: every target sets up .venv from the pinned requirements first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REQS := requirements/runtime.txt requirements/train.txt requirements/dev.txt
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test test-all lint bench model clean

setup: $(STAMP)

$(STAMP): $(REQS) requirements/constraints.txt setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(addprefix -r ,$(REQS)) \
		-c requirements/constraints.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

demo: setup          ## closed-loop landing on the built-in simulator; prints the report path
	$(VENV)/bin/l3d demo

test: setup          ## the fast suite (slow and gpu tests deselected), lint included
	$(PY) -m pytest -q

test-all: setup      ## everything but gpu: training smoke runs, soak, campaigns
	$(PY) -m pytest -q -m "not gpu"

lint: setup
	$(PY) -m flake8 l3d_ros l3d_train l3d_sim launch test scripts

bench: setup         ## latency / memory benchmarks, JSON + markdown in out/bench
	$(VENV)/bin/l3d bench --out out/bench

model: setup         ## rebuild the shipped student in models/ from scratch
	$(VENV)/bin/l3d distill flight --out models

clean:
	rm -rf $(VENV) out build install log *.egg-info
