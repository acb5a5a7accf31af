"""Benchmark: core attention of the local layer spec, SDPA vs megatron's DotProductAttention.

Forward + backward of one attention layer's core (after the QKV projection) at Qwen2.5-1.5B's
heads (12 query / 2 KV heads of 128 channels), on one micro-batch of ``--length`` tokens,
with two masks: a plain causal row (one sequence) and a packed row of four sequences
(block-diagonal causal, what the actor's packing produces). The packed row also runs SDPA
given the row's boundaries (``PackedSeqParams``, how the actor calls it) instead of the mask.
All run in one process on the same inputs; reported per mask: median seconds of each, the
ratios to megatron's time and, on a GPU, the peak memory of each. Writes
``benchmarks/results/attention_<device>.json`` (device, versions, date).

    python benchmarks/attention.py                       # CPU, fp32, 1,024 tokens, 1 thread
    python benchmarks/attention.py --device cuda --length 4096   # bf16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_env import RESULTS, device_info, now, versions  # noqa: E402

HEADS, GROUPS, HEAD_DIM = 12, 2, 128


def _masks(length: int, device: str) -> dict[str, torch.Tensor]:
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    segment = torch.arange(length, device=device) * 4 // length  # four equal sequences
    packed = (segment[:, None] == segment[None, :]) & causal
    return {"causal": ~causal[None, None], "packed_4": ~packed[None, None]}


def _packed_params(length: int):
    from nemo_red.models.sdpa_attention import packed_row_params

    ends = [(length * i + 3) // 4 for i in range(5)]  # where arange * 4 // length steps
    return packed_row_params(torch.tensor(ends, dtype=torch.int32), length)


def _measure(module, inputs, call, repeats: int, device: str) -> tuple[float, int | None]:
    mask, params = call

    def step() -> None:
        q, k, v = (t.detach().requires_grad_() for t in inputs)
        if params is None:
            out = module(q, k, v, mask)
        else:  # the thd layout: megatron squeezes the batch dimension
            out = module(q[:, 0], k[:, 0], v[:, 0], None, packed_seq_params=params)
        out.float().square().mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return statistics.median(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (CPU only)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType

    from nemo_red.models.families import ModelShape
    from nemo_red.models.megatron_gpt import transformer_config
    from nemo_red.models.sdpa_attention import SDPADotProductAttention
    from nemo_red.training.parallel import ParallelLayout, init_distributed, shutdown_distributed

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    init_distributed(ParallelLayout(), seed=0)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    shape = ModelShape(
        "qwen2",
        151936,
        HEADS * HEAD_DIM,
        8960,
        1,
        HEADS,
        GROUPS,
        HEAD_DIM,
        1e-6,
        1e6,
        args.length,
        True,
    )
    config = transformer_config(shape, dtype=dtype)
    kwargs = {"layer_number": 1, "attn_mask_type": AttnMaskType.causal, "attention_type": "self"}
    modules = {
        "megatron": DotProductAttention(config, **kwargs),
        "sdpa": SDPADotProductAttention(config, **kwargs),
    }
    g = torch.Generator().manual_seed(0)
    inputs = [
        torch.randn(args.length, 1, n, HEAD_DIM, generator=g).to(args.device, dtype)
        for n in (HEADS, GROUPS, GROUPS)
    ]
    results = {}
    for name, mask in _masks(args.length, args.device).items():
        calls = {
            "megatron": (modules["megatron"], (mask, None)),
            "sdpa": (modules["sdpa"], (mask, None)),
        }
        if name == "packed_4":
            calls["sdpa_boundaries"] = (modules["sdpa"], (None, _packed_params(args.length)))
        row = {}
        for impl, (module, call) in calls.items():
            seconds, peak = _measure(module, inputs, call, args.repeats, args.device)
            row[f"{impl}_s"] = seconds
            if peak is not None:
                row[f"{impl}_peak_memory_bytes"] = peak
        for impl in calls.keys() - {"megatron"}:
            row[f"{impl}_over_megatron_time"] = row[f"{impl}_s"] / row["megatron_s"]
        results[name] = row
        print(name, json.dumps(row), flush=True)
    shutdown_distributed()
    record = {
        "benchmark": "attention",
        "date": now(),
        "device": device_info(args.device),
        "versions": versions("megatron-core"),
        "config": {
            "length": args.length,
            "heads": HEADS,
            "kv_heads": GROUPS,
            "head_dim": HEAD_DIM,
            "dtype": str(dtype),
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
        },
        "results": results,
    }
    out = args.out or RESULTS / f"attention_{args.device}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
