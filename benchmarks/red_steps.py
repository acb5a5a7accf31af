"""Benchmark: a few real RED steps (``nemo-red train``) at a shape, memory features on and off.

Runs ``examples/conf/tiny_red.yaml`` from random weights with the transformer of
``--shape`` (tiny, or Qwen2.5-1.5B's layers, widths and heads; the vocabulary is the
tokenizer the run trains on its data) for ``--steps`` RED steps, once per variant:

* ``plain``: the config as it is;
* ``recompute_selective`` / ``recompute_full``: ``parallel.recompute=...`` overrides;
* ``sequence_parallel``: ``parallel.tp=2 parallel.sequence_parallel=true`` (two processes).

A variant whose overrides the config refuses (a build without that key) is skipped with the
config's own message, as is one that needs more GPUs than there are. Each run is limited
to ``--timeout`` seconds; the steps it logged count even if it was stopped later (e.g.
while writing its final checkpoint). Reported per variant: steps done, the mean seconds of
each phase and tokens per second over the steps after the first (all steps when only one
ran), and the last step's loss. Writes ``benchmarks/results/red_steps_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_env import RESULTS, device_info, now, versions, write_result  # noqa: E402

CONFIG = REPO_ROOT / "examples" / "conf" / "tiny_red.yaml"
VARIANTS: dict[str, list[str]] = {
    "plain": [],
    "recompute_selective": ["parallel.recompute=selective"],
    "recompute_full": [
        "parallel.recompute=full",
        "parallel.recompute_method=uniform",
        "parallel.recompute_num_layers=1",
    ],
    "sequence_parallel": ["parallel.tp=2", "parallel.sequence_parallel=true"],
}
SHAPE_OVERRIDES: dict[str, list[str]] = {
    "tiny": [],
    "qwen2.5-1.5b": [
        "model.tiny.num_layers=28",
        "model.tiny.hidden_size=1536",
        "model.tiny.num_heads=12",
        "model.tiny.num_kv_heads=2",
        "model.tiny.intermediate_size=8960",
        "model.tiny.max_position_embeddings=4096",
        "model.tiny.rope_theta=1000000.0",
    ],
}


def base_overrides(args: argparse.Namespace, out: Path) -> list[str]:
    """The short run every variant shares."""
    dtype = "bfloat16" if args.device == "cuda" else "float32"
    return [
        f"run.output_dir={out}",
        f"model.dtype={dtype}",
        "algorithm.sft_warmup_steps=0",
        f"trainer.total_steps={args.steps}",
        f"trainer.checkpoint_every={args.steps}",
        "trainer.eval_every=0",
        "trainer.progress=false",
        "trainer.loggers=[jsonl]",
        "trainer.optim.schedule=constant",
        "trainer.optim.warmup_steps=0",
        f"trainer.prompts_per_step={args.prompts}",
        f"trainer.token_budget={args.token_budget}",
        f"rollout.max_new_tokens={args.new_tokens}",
        *SHAPE_OVERRIDES[args.shape],
    ]


def refusal(overrides: list[str]) -> str | None:
    """The config's error for these overrides, or None when it accepts them."""
    from nemo_red.training.config import load_config

    try:
        load_config(CONFIG, overrides)
    except (ValueError, KeyError) as err:
        return str(err)
    return None


def processes(overrides: list[str]) -> int:
    """tp x pp of the overrides (1 unless they set them)."""
    sizes = {"parallel.tp": 1, "parallel.pp": 1}
    for item in overrides:
        key, _, value = item.partition("=")
        if key in sizes:
            sizes[key] = int(value)
    return sizes["parallel.tp"] * sizes["parallel.pp"]


def available_devices(device: str) -> int:
    if device == "cuda":
        import torch

        return torch.cuda.device_count()
    return 2  # gloo processes on CPU


def summarise(metrics: Path) -> dict[str, Any]:
    """Steps done and mean phase times of a run's ``metrics.jsonl``."""
    rows = []
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            if "time/step" in row:
                rows.append(row)
    if not rows:
        return {"steps_done": 0}
    timed = rows[1:] or rows
    means = {
        key: statistics.mean(r[key] for r in timed)
        for key in rows[0]
        if key.startswith(("time/", "throughput/")) and all(key in r for r in timed)
    }
    loss = {k: v for k, v in rows[-1].items() if k.startswith("loss")}
    return {"steps_done": len(rows), "averaged_over_steps": len(timed), **means, **loss}


def run_variant(name: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    extra = VARIANTS[name]
    overrides = [*base_overrides(args, root / name), *extra]
    reason = refusal(overrides)
    if reason is not None:
        return {"status": "skipped", "reason": f"the config refuses {extra}: {reason}"}
    nproc = processes(extra)
    if nproc > available_devices(args.device):
        return {"status": "skipped", "reason": f"needs {nproc} GPUs, {args.device} has fewer"}
    cmd = [sys.executable, "-m", "nemo_red.cli", "train", "--config", str(CONFIG), *overrides]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(nproc), "-m", "nemo_red.cli", "train",
               "--config", str(CONFIG), *overrides]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=args.timeout, check=False
        )
        status = "ok" if proc.returncode == 0 else "failed"
        tail = "" if proc.returncode == 0 else proc.stderr[-2000:]
    except subprocess.TimeoutExpired:
        status, tail = "timeout", f"stopped after {args.timeout} s"
    result = {"status": status, "overrides": extra, "seconds": time.perf_counter() - start}
    result.update(summarise(root / name / "metrics.jsonl"))
    if status == "timeout" and result["steps_done"] == args.steps:
        result["status"] = "ok"  # every step ran; the final checkpoint and export did not end
        tail = f"stopped {args.timeout} s in, after its last step (checkpoint / export cut)"
    if tail:
        result["message"] = tail
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--shape", choices=sorted(SHAPE_OVERRIDES), default="tiny")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--token-budget", type=int, default=1024)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per variant")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    unknown = sorted(set(args.variants.split(",")) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    variants = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants.split(","):
            variants[name] = run_variant(name, args, Path(tmp))
            print(name, json.dumps(variants[name]), flush=True)
    result = {
        "benchmark": "RED training steps with memory-saving variants on and off",
        "date": now(),
        "device": device_info(args.device),
        "versions": versions("megatron-core", "transformers"),
        "config": {
            "config": "examples/conf/tiny_red.yaml",
            "shape": args.shape,
            "steps": args.steps,
            "prompts_per_step": args.prompts,
            "new_tokens": args.new_tokens,
            "token_budget": args.token_budget,
        },
        "variants": variants,
    }
    write_result(result, args.out or RESULTS / f"red_steps_{args.device}.json")


if __name__ == "__main__":
    main()
