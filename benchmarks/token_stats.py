"""Benchmark: fused vs naive per-token log-prob + entropy (nemo_red.algorithms.token_stats).

Compares ``token_logprobs_and_entropy`` (chunked, fused) with
``naive_token_logprobs_and_entropy`` (log_softmax + gather, softmax * log_softmax) at
T = 4096 tokens and V = 151,936 (the Qwen2.5 vocabulary) by default, for

* ``forward``: logits that do not require grad, both outputs computed;
* ``forward_backward``: ``torch.autograd.grad(logp.sum() + entropy.sum(), logits)`` with the
  entropy gradient enabled for both implementations (the returned [T, V] gradient counts as
  memory for both).

Every (implementation, mode) pair runs in its own fresh subprocess, one after the other in
the same invocation, so the numbers sit side by side and one measurement cannot inherit
another's allocator state.

Time: wall-clock median of ``--repeats`` runs after one warm-up run (CUDA: synchronised).

Memory (CPU): the subprocess fills the logits row block by row block (so making them has no
transient of its own), then reads its current resident set size from ``/proc/self/statm``
(``rss_base``: interpreter + torch + logits + targets). After the warm-up and the timed runs
it reads the peak resident set size of its whole life, ``getrusage(RUSAGE_SELF).ru_maxrss``.
``peak_extra = ru_maxrss - rss_base`` is the most memory the computation ever held beyond its
inputs, as the kernel counted it (resident pages: everything the code wrote to, including
allocator slack; nothing is estimated). Memory (CUDA): ``torch.cuda.max_memory_allocated()``
minus ``memory_allocated()`` right after the logits were made, with the peak stats reset there.

Writes ``benchmarks/results/token_stats_<device>.json`` (or ``--out``) with the device, the
versions, the date, the configuration, each measurement and the fused/naive ratios.
Run with ``OMP_NUM_THREADS`` unset so that torch uses every core.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_env import device_info, now, versions  # noqa: E402

from nemo_red.algorithms import token_stats  # noqa: E402
from nemo_red.algorithms.token_stats import (  # noqa: E402
    naive_token_logprobs_and_entropy,
    token_logprobs_and_entropy,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
IMPLS = ("fused", "naive")
MODES = ("forward", "forward_backward")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _make_inputs(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device=args.device).manual_seed(0)
    logits = torch.empty(args.tokens, args.vocab, dtype=DTYPES[args.dtype], device=args.device)
    block = max(1, (1 << 22) // args.vocab)
    for r0 in range(0, args.tokens, block):  # no full-size float32 transient for bf16/fp16
        rows = logits[r0 : r0 + block]
        rows.copy_(torch.randn(rows.shape, generator=gen, device=args.device) * 3)
    targets = torch.randint(0, args.vocab, (args.tokens,), generator=gen, device=args.device)
    return logits, targets


def _step(
    impl: str, mode: str, logits: torch.Tensor, targets: torch.Tensor, chunk: int | None
) -> object:
    if impl == "fused":
        logp, ent = token_logprobs_and_entropy(
            logits, targets, with_entropy_grad=mode == "forward_backward", chunk_size=chunk
        )
    else:
        logp, ent = naive_token_logprobs_and_entropy(logits, targets)
    if mode == "forward":
        return logp, ent
    (grad,) = torch.autograd.grad(logp.sum() + ent.sum(), logits)
    return grad


def _worker(args: argparse.Namespace) -> None:
    impl, mode = args.worker.split(":")
    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    logits, targets = _make_inputs(args)
    logits.requires_grad_(mode == "forward_backward")
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
        maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for i in range(args.repeats + 1):
        t0 = time.perf_counter()
        out = _step(impl, mode, logits, targets, args.chunk_size)
        sync()
        elapsed = time.perf_counter() - t0
        del out
        if i:  # the first run is the warm-up
            times.append(elapsed)
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        extra_info = {}
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        extra_info = {"maxrss_before_bytes": maxrss_before}
    result = {
        "impl": impl,
        "mode": mode,
        "times_s": times,
        "median_s": statistics.median(times),
        "base_bytes": base,
        "peak_bytes": peak,
        "peak_extra_bytes": peak - base,
        "torch_threads": torch.get_num_threads(),
        **extra_info,
    }
    print(json.dumps(result))


def _run_one(argv: list[str], impl: str, mode: str) -> dict[str, object]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", f"{impl}:{mode}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{impl}:{mode} failed ({proc.returncode}):\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"{mode:>16} {impl:>5}: {result['median_s']:8.3f} s  "
        f"peak extra {result['peak_extra_bytes'] / 2**30:7.3f} GiB",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=None, help="fused rows per chunk")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    argv = [
        f"--tokens={args.tokens}",
        f"--vocab={args.vocab}",
        f"--device={args.device}",
        f"--dtype={args.dtype}",
        f"--repeats={args.repeats}",
    ]
    if args.chunk_size:
        argv.append(f"--chunk-size={args.chunk_size}")
    load_before = os.getloadavg()
    runs = {mode: {impl: _run_one(argv, impl, mode) for impl in IMPLS} for mode in MODES}
    load_after = os.getloadavg()
    ratios = {
        mode: {
            "time_fused_over_naive": r["fused"]["median_s"] / r["naive"]["median_s"],
            "peak_extra_memory_fused_over_naive": r["fused"]["peak_extra_bytes"]
            / r["naive"]["peak_extra_bytes"],
        }
        for mode, r in runs.items()
    }
    report = {
        "benchmark": "token_stats: fused vs naive per-token log-prob + entropy",
        "date": now(),
        "device": device_info(args.device),
        "versions": versions(),
        "env": {
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "loadavg_1_5_15_before": load_before,
            "loadavg_1_5_15_after": load_after,
        },
        "config": {
            "tokens": args.tokens,
            "vocab": args.vocab,
            "dtype": args.dtype,
            "repeats": args.repeats,
            "warmup": 1,
            "fused_chunk_rows": args.chunk_size
            or max(1, token_stats._DEFAULT_CHUNK_ELEMENTS // args.vocab),
            "logits_bytes": args.tokens * args.vocab * DTYPES[args.dtype].itemsize,
        },
        "memory_method": (
            "fresh subprocess per measurement; peak_extra = getrusage(RUSAGE_SELF).ru_maxrss "
            "after warm-up + timed runs minus /proc/self/statm RSS right after the inputs "
            "were made"
            if args.device == "cpu"
            else "torch.cuda.max_memory_allocated() minus memory_allocated() after the inputs"
        ),
        "notes": "shared machine: other jobs may run; see env.loadavg_*",
        "runs": runs,
        "ratios": ratios,
    }
    suffix = args.device if args.dtype == "fp32" else f"{args.device}_{args.dtype}"
    out = args.out or REPO_ROOT / "benchmarks" / "results" / f"token_stats_{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(ratios, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
