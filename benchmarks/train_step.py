"""Benchmark: where the time of one tiny RED training step goes, and RED vs GRPO.

Runs the tiny default (``examples/conf/tiny_red.yaml``) for ``--steps`` steps with the
``red`` preset and then with ``grpo`` (same seed, same prompts), one after the other in this
invocation, and reports the mean wall time per phase (rollout, grading, log-probs, train,
refit) over the steps after the first (which pays one-off start-up costs), plus the
RED / GRPO ratio of the train phase and of the whole step. Writes
``benchmarks/results/train_step_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_env import (  # noqa: E402
    RESULTS,
    STEP_PHASES,
    device_info,
    now,
    run_tiny_default,
    versions,
    write_result,
)


def _run(preset: str, steps: int, out: Path) -> dict[str, float]:
    rows = run_tiny_default(preset, steps, out)[1:]
    means = {p: statistics.mean(r[f"time/{p}"] for r in rows) for p in STEP_PHASES}
    means["tokens_per_s"] = statistics.mean(r["throughput/tokens_per_s"] for r in rows)
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {p: _run(p, args.steps, Path(tmp) / p) for p in ("red", "grpo")}
    for preset, means in runs.items():
        print(preset, json.dumps({k: round(v, 4) for k, v in means.items()}))
    result = {
        "benchmark": "tiny training step: time per phase, RED vs GRPO",
        "date": now(),
        "device": device_info("cpu"),
        "versions": versions("megatron-core", "transformers", "math-verify"),
        "config": {
            "config": "examples/conf/tiny_red.yaml",
            "steps": args.steps,
            "averaged_over": "steps 2..N",
        },
        "mean_seconds": runs,
        "red_over_grpo": {
            "train": runs["red"]["train"] / runs["grpo"]["train"],
            "step": runs["red"]["step"] / runs["grpo"]["step"],
        },
    }
    write_result(result, args.out or RESULTS / "train_step_cpu.json")


if __name__ == "__main__":
    main()
