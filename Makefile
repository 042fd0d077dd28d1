# greenpipe — two commands on a fresh clone (Python 3.11; no servers, no DVC cache needed):
#   make demo   installs everything and runs the whole DAG (dvc repro) on the built-in data
#   make test   installs the dev dependencies and runs the test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
PYTEST_ARGS ?=

# The project keeps its own Prefect home and sends no telemetry.
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1
# dvc.yaml runs `python -m tasks...`: make that the project's interpreter.
export PATH := $(BIN):$(PATH)

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "setuptools<81" uv
	# torch first, pinned to the CPU wheel, so no dependency can pull a CUDA build.
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode -e ".[dev]"
	# the detect recipe's built-in data: the annotated images inside the deepforest wheel (MIT), not installed
	$(BIN)/python -m pip download -q "deepforest==2.1.0" --no-deps --only-binary=:all: -d .whl
	touch $@

demo: setup
	$(BIN)/greenpipe data restore
	$(BIN)/greenpipe check
	$(BIN)/dvc repro
	$(BIN)/greenpipe summary

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/int8_speedup.py

clean:
	rm -rf $(VENV) .prefect
