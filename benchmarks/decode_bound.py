"""Benchmark: the native engine's decode speed against the memory-bandwidth bound.

A decode step reads every weight the step multiplies with (the decoder layers, the final
norm and the output layer; the input embedding only for the batch's rows) and the KV cache
of every sequence so far, so at batch size ``B`` it cannot produce more than
``B * bandwidth / (weight bytes + B * context * KV bytes per token)`` tokens per second.
The bandwidth is measured here (a device-to-device copy of 1 GiB: bytes read + written per
second) and, for GPUs in :data:`PEAK_BANDWIDTH`, also taken from the data sheet.

A random-weight model (``--shape``: tiny, or Qwen2.5-1.5B's shape) generates
``--new-tokens`` greedily after random prompts of ``--prompt-length`` at each batch size;
decode time is the time of that generation minus the time of a one-token generation (the
prefill). Writes ``benchmarks/results/decode_bound_<device>[_<shape>].json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from actor import SHAPES  # noqa: E402
from bench_env import RESULTS, device_info, now, versions, write_result  # noqa: E402

# HBM bandwidth from the vendors' data sheets (bytes/s), matched in this order against
# torch.cuda.get_device_name(); more specific names first.
PEAK_BANDWIDTH: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 2.0e12),
    ("H100 NVL", 3.9e12),
    ("H100", 3.35e12),  # SXM
    ("H200", 4.8e12),
    ("A100", 2.0e12),
)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measured_bandwidth(device: str, nbytes: int = 2**30, repeats: int = 5) -> float:
    """Bytes read + written per second by ``copy_`` between two ``nbytes`` buffers."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() * 4 / min(times)


def sheet_bandwidth(device: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((value for key, value in PEAK_BANDWIDTH if key in name), None)


def read_bytes(shape: Any, dtype_bytes: int) -> tuple[int, int]:
    """``(weight bytes read per decode step, KV bytes per token of context)``."""
    h, f, d = shape.hidden_size, shape.intermediate_size, shape.head_dim
    q, kv = shape.num_heads * d, shape.num_kv_heads * d
    layer = h * (q + 2 * kv) + (q + 2 * kv) + q * h + 3 * h * f + 2 * h
    weights = shape.num_layers * layer + h + shape.vocab_size * h  # + final norm, output
    kv_per_token = 2 * shape.num_layers * kv * dtype_bytes
    return weights * dtype_bytes, kv_per_token


def _generate_seconds(
    engine: Any, prompts: list[list[int]], new_tokens: int, repeats: int
) -> float:
    from nemo_red.rollout.base import SamplingParams

    params = SamplingParams(temperature=0, max_new_tokens=new_tokens)
    engine.generate(prompts, params)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        engine.generate(prompts, params)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--prompt-length", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from nemo_red.models.families import ModelShape
    from nemo_red.models.megatron_gpt import build_gpt_model
    from nemo_red.rollout.native_engine import NativeEngine
    from nemo_red.training.parallel import ParallelLayout, init_distributed, shutdown_distributed

    init_distributed(ParallelLayout(), seed=0)
    shape = ModelShape(**SHAPES[args.shape])
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = build_gpt_model(shape, dtype=dtype).to(args.device).eval()
    dtype_bytes = torch.finfo(dtype).bits // 8
    weight_bytes, kv_per_token = read_bytes(shape, dtype_bytes)
    bandwidth, sheet = measured_bandwidth(args.device), sheet_bandwidth(args.device)
    g = torch.Generator().manual_seed(0)
    runs = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        engine = NativeEngine(model, shape, max_batch_size=batch)
        prompts = torch.randint(0, shape.vocab_size, (batch, args.prompt_length), generator=g)
        full = _generate_seconds(engine, prompts.tolist(), args.new_tokens, args.repeats)
        prefill = _generate_seconds(engine, prompts.tolist(), 1, args.repeats)
        steps = args.new_tokens - 1
        context = args.prompt_length + args.new_tokens / 2  # mean over the decode steps
        step_bytes = weight_bytes + batch * context * kv_per_token
        decode_s = max(full - prefill, 1e-9)
        row = {
            "batch_size": batch,
            "decode_tokens_per_s": batch * steps / decode_s,
            "decode_step_ms": 1e3 * decode_s / steps,
            "bytes_read_per_step": step_bytes,
            "bound_tokens_per_s": batch * bandwidth / step_bytes,
            "fraction_of_bound": (step_bytes / bandwidth) / (decode_s / steps),
        }
        if sheet:
            row["sheet_bound_tokens_per_s"] = batch * sheet / step_bytes
            row["fraction_of_sheet_bound"] = (step_bytes / sheet) / (decode_s / steps)
        print(json.dumps(row), flush=True)
        runs.append(row)
    result = {
        "benchmark": "native engine decode vs the memory-bandwidth bound",
        "date": now(),
        "device": device_info(args.device),
        "versions": versions("megatron-core"),
        "config": {
            "shape_name": args.shape,
            "shape": SHAPES[args.shape],
            "dtype": str(dtype),
            "prompt_length": args.prompt_length,
            "new_tokens": args.new_tokens,
            "repeats": args.repeats,
            "weight_bytes_per_step": weight_bytes,
            "kv_bytes_per_token": kv_per_token,
        },
        "measured_bandwidth_bytes_per_s": bandwidth,
        "sheet_bandwidth_bytes_per_s": sheet,
        "runs": runs,
    }
    suffix = "" if args.shape == "tiny" else f"_{args.shape}"
    write_result(result, args.out or RESULTS / f"decode_bound_{args.device}{suffix}.json")
    shutdown_distributed()


if __name__ == "__main__":
    main()
