#!/usr/bin/env bash
# Launch `nemo-red train` with torchrun on one or more nodes.
#
# Single node, all local GPUs:
#   scripts/launch_torchrun.sh --config examples/conf/red_qwen2.5_math_1.5b.yaml
# Two nodes of 8 GPUs (run on each node; NODE_RANK 0 on the node whose address is MASTER_ADDR):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 GPUS_PER_NODE=8 \
#     scripts/launch_torchrun.sh --config examples/conf/red_qwen2.5_math_1.5b.yaml
#
# Arguments are passed to `nemo-red train` (config path, key=value overrides).
# CPU-only hosts: GPUS_PER_NODE sets the number of processes (gloo backend), default 1.
# Python: $PYTHON if set, else the project's .venv (made by `make test` / `make demo`) when
# present, else python3 on PATH (e.g. the NGC image's, with nemo_red installed).
set -euo pipefail

NNODES="${NNODES:-1}"
NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
if [[ -z "${GPUS_PER_NODE:-}" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    GPUS_PER_NODE="$(nvidia-smi --list-gpus | wc -l)"
  else
    GPUS_PER_NODE=1
  fi
fi
if [[ -z "${PYTHON:-}" ]]; then
  venv_python="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/python"
  if [[ -x "$venv_python" ]]; then PYTHON="$venv_python"; else PYTHON=python3; fi
fi

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$PYTHON" -m torch.distributed.run \
  --nnodes "$NNODES" \
  --node_rank "$NODE_RANK" \
  --nproc_per_node "$GPUS_PER_NODE" \
  --master_addr "$MASTER_ADDR" \
  --master_port "$MASTER_PORT" \
  -m nemo_red.cli train "$@"
