"""Benchmark: the megatron-core actor's forward+backward throughput, TP = 1 vs TP = 2.

A random-weight tiny Qwen2 (4 layers, hidden 256, 8/2 heads, vocab 4096) trains on a
step of 32 sequences of 256 tokens (half online rollouts, half teacher traces), packed into
micro-batches of 1,024 tokens. Measured per layout, in separate ``torchrun`` launches of the
same invocation (one thread per process):

* ``logprob_tokens_per_s``: ``compute_logprobs_and_entropy`` (forward only);
* ``train_tokens_per_s``: ``train_step`` with the ``red`` preset (forward, backward, AdamW);
* ``red_over_grpo_step_time``: the same step with the ``grpo`` preset on the same batch, as a
  ratio (the offline term should cost almost nothing);
* ``peak_rss_bytes``: the largest resident set of any rank.

Median of ``--repeats`` timed steps after one warm-up. Writes
``benchmarks/results/actor_<device>[_<shape>].json`` (device, versions, date,
configuration, numbers). On a GPU the same script runs with ``--device cuda`` (bf16) and
reports peak CUDA memory and, for GPUs in ``nemo_red.training.flops.PEAK_BF16_FLOPS`` (or
with ``--peak-tflops``), the model FLOPs utilisation of both training steps (``red_mfu``,
``grpo_mfu``; model FLOPs as counted in ``nemo_red.training.flops``). The issue's GPU
setting, a random-weight model of Qwen2.5-1.5B's shape at 4,096 tokens per sequence::

    python benchmarks/actor.py --device cuda --shape qwen2.5-1.5b --tp-sizes 1 \
        --sequences 8 --length 4096 --token-budget 4096
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

from bench_env import RESULTS, device_info, now, versions, write_result  # noqa: E402

TINY_SHAPE = {
    "family": "qwen2",
    "vocab_size": 4096,
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_layers": 4,
    "num_heads": 8,
    "num_kv_heads": 2,
    "head_dim": 32,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1e6,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
}
# Qwen2.5-1.5B (and -Math-1.5B, apart from rope_theta and the context length)
QWEN25_1_5B_SHAPE = {
    "family": "qwen2",
    "vocab_size": 151936,
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_layers": 28,
    "num_heads": 12,
    "num_kv_heads": 2,
    "head_dim": 128,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1e6,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": True,
}
SHAPES = {"tiny": TINY_SHAPE, "qwen2.5-1.5b": QWEN25_1_5B_SHAPE}


def _batch(n: int, length: int, vocab: int):
    from nemo_red.training.packing import SequenceBatch

    g = torch.Generator().manual_seed(0)
    return SequenceBatch(
        tokens=[torch.randint(0, vocab, (length,), generator=g) for _ in range(n)],
        prompt_lengths=torch.full((n,), length // 4),
        is_offline=torch.arange(n) % 2 == 1,
        advantages=torch.randn(n, generator=g),
        rewards=torch.randint(0, 2, (n,), generator=g).float(),
        group_accuracy=torch.rand(n, generator=g),
    )


def _timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def worker(args: argparse.Namespace) -> None:
    import torch.distributed as dist

    from nemo_red.algorithms import StepContext, get_preset
    from nemo_red.models.families import ModelShape
    from nemo_red.models.megatron_gpt import build_gpt_model
    from nemo_red.training.actor import MegatronActor
    from nemo_red.training.flops import peak_flops, training_flops
    from nemo_red.training.optim import OptimConfig
    from nemo_red.training.parallel import ParallelLayout, init_distributed, shutdown_distributed

    torch.set_num_threads(1)
    init_distributed(ParallelLayout(args.tp, 1), seed=0)
    shape = ModelShape(**SHAPES[args.shape])
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = build_gpt_model(shape, args.tp, 1, dtype=dtype)
    if args.device == "cuda":
        model.cuda()
    actor = MegatronActor(
        model, shape, OptimConfig(schedule="constant", lr=1e-5), token_budget=args.token_budget
    )
    batch = _batch(args.sequences, args.length, shape.vocab_size)
    tokens = args.sequences * args.length
    fwd_s, stats = _timed(lambda: actor.compute_logprobs_and_entropy(batch), args.repeats)
    batch = batch.with_fields(old_logprobs=stats.logprobs)
    ctx = StepContext(entropy_weight=2.0)
    red_s, _ = _timed(lambda: actor.train_step(batch, get_preset("red"), ctx), args.repeats)
    grpo_s, _ = _timed(lambda: actor.train_step(batch, get_preset("grpo"), ctx), args.repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak_device = None
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated()
        peak_device = args.peak_tflops * 1e12 if args.peak_tflops else None
        peak_device = peak_device or peak_flops(torch.cuda.get_device_name())
    # each rank holds 1/tp of the model: the step's FLOPs are shared by tp devices
    flops = training_flops(shape, [args.length] * args.sequences)
    per_device = flops / args.tp

    def mfu(seconds: float) -> float | None:
        return None if peak_device is None else per_device / seconds / peak_device

    peaks = [None] * dist.get_world_size()
    dist.all_gather_object(peaks, peak)
    if dist.get_rank() == 0:
        print(
            json.dumps(
                {
                    "tp": args.tp,
                    "processes": dist.get_world_size(),
                    "threads_per_process": 1,
                    "logprob_step_s": fwd_s,
                    "logprob_tokens_per_s": tokens / fwd_s,
                    "red_train_step_s": red_s,
                    "train_tokens_per_s": tokens / red_s,
                    "grpo_train_step_s": grpo_s,
                    "red_over_grpo_step_time": red_s / grpo_s,
                    "model_flops_per_train_step": flops,
                    "red_model_tflops_per_s_per_device": per_device / red_s / 1e12,
                    "device_peak_flops": peak_device,
                    "red_mfu": mfu(red_s),
                    "grpo_mfu": mfu(grpo_s),
                    "peak_memory_bytes": max(peaks),
                    "peak_memory_kind": "cuda_max_allocated"
                    if args.device == "cuda"
                    else "max_rss",
                }
            )
        )
    shutdown_distributed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device bf16 peak")
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--token-budget", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tp-sizes", default="1,2")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    runs = []
    for tp in (int(x) for x in args.tp_sizes.split(",")):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(tp),
            str(Path(__file__).resolve()),
            "--worker",
            "--tp",
            str(tp),
            "--device",
            args.device,
            "--shape",
            args.shape,
            *(["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else []),
            "--sequences",
            str(args.sequences),
            "--length",
            str(args.length),
            "--token-budget",
            str(args.token_budget),
            "--repeats",
            str(args.repeats),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode:
            raise RuntimeError(f"TP={tp} failed:\n{proc.stderr[-4000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), flush=True)
    result = {
        "benchmark": "actor forward+backward throughput and MFU by TP size",
        "date": now(),
        "device": device_info(args.device),
        "versions": versions("megatron-core"),
        "config": {
            "shape_name": args.shape,
            "shape": SHAPES[args.shape],
            "sequences": args.sequences,
            "length": args.length,
            "token_budget": args.token_budget,
            "repeats": args.repeats,
        },
        "runs": runs,
    }
    if len(runs) == 2:
        result["tp2_over_tp1_train_tokens_per_s"] = (
            runs[1]["train_tokens_per_s"] / runs[0]["train_tokens_per_s"]
        )
    suffix = "" if args.shape == "tiny" else f"_{args.shape}"
    write_result(result, args.out or RESULTS / f"actor_{args.device}{suffix}.json")


if __name__ == "__main__":
    main()
