#!/usr/bin/env bash
# Every check that needs a GPU, in at most 8 minutes on one H100 / H200, writing JSON under
# benchmarks/results/ (one file per part, plus gpu_check_cuda.json: what ran, how long, why
# a part was skipped or failed):
#
#   actor       the megatron actor at Qwen2.5-1.5B's shape, bf16, 8 x 4096 tokens: tokens/s
#               and MFU of the RED and GRPO steps (benchmarks/actor.py)
#   memory      measured peak memory of an actor step at that shape with recomputation
#               none / selective / full against `nemo-red plan` (benchmarks/memory_plan.py)
#   token_stats fused vs naive log-prob / entropy kernels, bf16 (benchmarks/token_stats.py)
#   attention   SDPA core attention vs megatron's, 4096 tokens (benchmarks/attention.py)
#   decode      native-engine decode at the 1.5B shape vs the memory-bandwidth bound
#               (benchmarks/decode_bound.py)
#   red_steps   a few real RED steps (`nemo-red train`, random weights, the 1.5B shape)
#               plain, with parallel.recompute=selective|full and parallel.sequence_parallel
#               (two GPUs); a variant the config refuses is skipped with its message
#               (benchmarks/red_steps.py)
#
# Usage:
#   scripts/gpu_check.sh             # on the GPU machine, from the repository root
#   scripts/gpu_check.sh --smoke     # CPU, tiny shapes: runs every part (results: a temp dir)
#   scripts/gpu_check.sh --dry-run   # prints each part's command, runs nothing
#   options: --out DIR (results directory), --only PART[,PART] (run only those parts)
#
# What to carry to the GPU machine (it has torch with CUDA, transformers and triton, but no
# internet and no megatron-core): on a machine with internet, download the wheels for its
# Python (3.12) into wheels/ at the repository root and bring that directory along with the
# checkout (an ignored path: name it among the paths carried to the machine):
#
#   pip download --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d wheels \
#       megatron-core==0.16.1 omegaconf math-verify
#
# The script installs from wheels/ (pip --no-index --find-links wheels) whatever of
# megatron-core, omegaconf and math-verify is missing, before the first part. Without them
# the parts that import megatron fail and say so in gpu_check_cuda.json.
set -uo pipefail

cd "$(dirname "$0")/.."
MODE=gpu
OUT=""
ONLY=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) MODE=smoke ;;
    --dry-run) MODE=dry ;;
    --out) OUT="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PY="${PYTHON:-python}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-480}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ "$MODE" == smoke ]]; then
  DEVICE=cpu
  OUT="${OUT:-$(mktemp -d)}"
else
  DEVICE=cuda
  OUT="${OUT:-benchmarks/results}"
fi
mkdir -p "$OUT"
SUMMARY="$OUT/gpu_check_${DEVICE}.json"
START=$(date +%s)
ROWS=()

# part NAME SECONDS COMMAND...: runs COMMAND under a time limit unless the budget is spent
part() {
  local name="$1" limit="$2"
  shift 2
  if [[ -n "$ONLY" && ",$ONLY," != *",$name,"* ]]; then
    return
  fi
  if [[ "$MODE" == dry ]]; then
    echo "[$name] (${limit}s) $*"
    return
  fi
  local elapsed=$(( $(date +%s) - START ))
  if [[ "$MODE" == gpu && $(( elapsed + limit )) -gt $BUDGET_S ]]; then
    echo "[gpu_check] $name: skipped, ${elapsed}s of the ${BUDGET_S}s budget spent" >&2
    ROWS+=("{\"part\": \"$name\", \"status\": \"skipped\", \"reason\": \"budget spent\"}")
    return
  fi
  echo "[gpu_check] $name: $*" >&2
  local t0=$(date +%s) status=ok
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then status=timeout; elif [[ $rc -ne 0 ]]; then status=failed; fi
  local took=$(( $(date +%s) - t0 ))
  echo "[gpu_check] $name: $status in ${took}s (log: $OUT/$name.log)" >&2
  local tail=""
  if [[ "$status" != ok ]]; then
    tail=$(tail -c 1500 "$OUT/$name.log" | "$PY" -c 'import json,sys; print(json.dumps(sys.stdin.read()))')
  fi
  ROWS+=("{\"part\": \"$name\", \"status\": \"$status\", \"seconds\": $took${tail:+, \"log_tail\": $tail}}")
}

install_carried_wheels() {
  [[ "$MODE" == gpu && -d wheels ]] || return 0
  local missing=()
  "$PY" -c 'import megatron.core' 2>/dev/null || missing+=(megatron-core)
  "$PY" -c 'import omegaconf' 2>/dev/null || missing+=(omegaconf)
  "$PY" -c 'import math_verify' 2>/dev/null || missing+=(math-verify)
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "[gpu_check] installing from wheels/: ${missing[*]}" >&2
    "$PY" -m pip install --quiet --no-index --find-links wheels "${missing[@]}" >&2 \
      || echo "[gpu_check] could not install ${missing[*]} from wheels/" >&2
  fi
}

if [[ "$MODE" == smoke ]]; then
  part actor 900 "$PY" benchmarks/actor.py --device cpu --shape tiny --tp-sizes 1 \
    --sequences 4 --length 64 --token-budget 128 --repeats 1 --out "$OUT/actor_cpu.json"
  part memory 900 "$PY" benchmarks/memory_plan.py --device cpu --cases smoke \
    --recompute none,full --out "$OUT/memory_plan_cpu.json"
  part token_stats 900 "$PY" benchmarks/token_stats.py --device cpu --tokens 128 --vocab 4096 \
    --repeats 1 --out "$OUT/token_stats_cpu.json"
  part attention 900 "$PY" benchmarks/attention.py --device cpu --length 128 --repeats 1 \
    --out "$OUT/attention_cpu.json"
  part decode 900 "$PY" benchmarks/decode_bound.py --device cpu --shape tiny --batch-sizes 1,2 \
    --prompt-length 16 --new-tokens 8 --repeats 1 --out "$OUT/decode_bound_cpu.json"
  part red_steps 900 "$PY" benchmarks/red_steps.py --device cpu --shape tiny --steps 1 \
    --prompts 4 --new-tokens 8 --token-budget 256 --timeout 240 --out "$OUT/red_steps_cpu.json"
else
  [[ "$MODE" == gpu ]] && install_carried_wheels
  part actor 90 "$PY" benchmarks/actor.py --device cuda --shape qwen2.5-1.5b --tp-sizes 1 \
    --sequences 8 --length 4096 --token-budget 4096 --repeats 2 \
    --out "$OUT/actor_cuda_qwen2.5-1.5b.json"
  part memory 75 "$PY" benchmarks/memory_plan.py --device cuda --cases qwen2.5-1.5b \
    --recompute none,selective,full --out "$OUT/memory_plan_cuda.json"
  part token_stats 45 "$PY" benchmarks/token_stats.py --device cuda --dtype bf16 --tokens 8192 \
    --out "$OUT/token_stats_cuda.json"
  part attention 30 "$PY" benchmarks/attention.py --device cuda --length 4096 \
    --out "$OUT/attention_cuda.json"
  part decode 60 "$PY" benchmarks/decode_bound.py --device cuda --shape qwen2.5-1.5b \
    --batch-sizes 1,16,64 --prompt-length 256 --new-tokens 64 --repeats 1 \
    --out "$OUT/decode_bound_cuda_qwen2.5-1.5b.json"
  part red_steps 150 "$PY" benchmarks/red_steps.py --device cuda --shape qwen2.5-1.5b --steps 2 \
    --prompts 8 --new-tokens 64 --token-budget 4096 --timeout 45 \
    --variants plain,recompute_selective,recompute_full,sequence_parallel \
    --out "$OUT/red_steps_cuda.json"
fi

[[ "$MODE" == dry ]] && exit 0
TOTAL=$(( $(date +%s) - START ))
JOINED=$(IFS=,; echo "${ROWS[*]}")
printf '{"check": "scripts/gpu_check.sh", "mode": "%s", "date": "%s", "seconds": %d, "parts": [%s]}\n' \
  "$MODE" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$TOTAL" "$JOINED" \
  | "$PY" -m json.tool > "$SUMMARY"
echo "[gpu_check] wrote $SUMMARY (${TOTAL}s); results in $OUT" >&2
grep -q '"status": "\(failed\|timeout\)"' "$SUMMARY" && exit 1
exit 0
