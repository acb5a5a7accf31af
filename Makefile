# Set-up and checks. `make test` works on a fresh machine: it creates .venv when absent,
# installs the project (torch pinned to the CPU wheel when no NVIDIA driver is present),
# then runs ruff and the whole test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := $(if $(shell command -v nvidia-smi 2>/dev/null),,-c constraints/cpu.txt)

.PHONY: setup test lint format bench

$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(CONSTRAINTS) -e '.[dev]'
	touch $@

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/token_stats.py
	$(BIN)/python benchmarks/grader.py
	$(BIN)/python benchmarks/actor.py
