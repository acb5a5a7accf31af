"""Benchmark: the tiny RED / GRPO step of nemo_red against Hugging Face TRL's GRPO step,
side by side on the same work.

One invocation runs, ``--repeats`` times, nemo_red's tiny default (``examples/conf/
tiny_red.yaml``, from its random initialisation: no SFT stage) for ``--steps`` steps with the
``red`` and the ``grpo`` presets through its CLI, and TRL's ``GRPOTrainer`` (in its own
environment, ``--trl-python``; ``make bench-trl`` builds it) for as many steps on the HF
export of nemo_red's first GRPO run: the same ~1M-parameter Qwen2 shape and tokenizer, the
same generated problems and prompt template, the same batch (``trainer.prompts_per_step``
prompts x ``rollout.n`` completions of at most ``rollout.max_new_tokens`` tokens at
temperature 1), AdamW with the same learning rate and clipping, and nemo_red's own grader as
the reward (``benchmarks/trl_grpo.py``). The order alternates between repeats (red, grpo,
trl, then trl, grpo, red, ...) so that a change of machine load hits every side alike.

Reports the mean seconds per step over the steps after the first of each run (the first
pays one-off start-up costs), averaged over the repeats, per phase where both report one,
and nemo_red / TRL for red and for grpo, over the means and over each side's fastest repeat
(on a shared machine load only adds time). nemo_red's times are its ``time/*`` metrics (the
sum of its phases); TRL's are the wall time between the ends of consecutive optimizer
steps, with the time spent in its generation and reward calls. Writes
``benchmarks/results/trl_step_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_env import (  # noqa: E402
    RESULTS,
    STEP_PHASES,
    TINY_CONFIG,
    device_info,
    now,
    run_tiny_default,
    tiny_run_overrides,
    versions,
    write_result,
)

CONFIG = TINY_CONFIG
TRL_PYTHON = REPO_ROOT / ".venv-trl" / "bin" / "python"
# sampling at temperature 1 on both sides, whatever the tiny default samples its RED stage at
SAMPLING = ["rollout.temperature=1.0"]
TRL_PHASES = ("rollout", "grading", "train", "step")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def _mean_after_first(rows: list[dict[str, float]], keys: tuple[str, ...]) -> dict[str, float]:
    return {k: statistics.mean(r[k] for r in rows[1:]) for k in keys}


def run_nemo_red(preset: str, steps: int, out: Path) -> dict[str, float]:
    """Mean seconds per phase of a nemo_red run of ``preset`` (steps 2..N)."""
    rows = run_tiny_default(preset, steps, out, *SAMPLING)
    phases = [{p: r[f"time/{p}"] for p in STEP_PHASES} for r in rows]
    means = _mean_after_first(phases, STEP_PHASES)
    means["completion_length"] = statistics.mean(r["length/online_mean"] for r in rows)
    means["reward"] = statistics.mean(r["reward/online_accuracy"] for r in rows)
    return means


def run_trl(python: Path, model: Path, train: Path, steps: int, out: Path) -> dict[str, float]:
    """Mean seconds per phase of a TRL GRPO run on ``model`` (steps 2..N)."""
    out.mkdir(parents=True)
    cmd = [str(python), str(REPO_ROOT / "benchmarks" / "trl_grpo.py"), "--config", str(CONFIG)]
    cmd += ["--model", str(model), "--train", str(train), "--steps", str(steps)]
    cmd += ["--out", str(out / "steps.json"), *tiny_run_overrides(steps), *SAMPLING]
    subprocess.run(cmd, check=True, env=_env(), capture_output=True)
    result = json.loads((out / "steps.json").read_text())
    means = _mean_after_first(result["steps"], TRL_PHASES)
    means["completion_length"] = statistics.mean(result["completion_length"])
    means["reward"] = statistics.mean(result["reward"])
    return means


def _average(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.mean(r[k] for r in runs) for k in runs[0]}


def _fastest(runs: list[dict[str, float]]) -> float:
    return min(r["step"] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--trl-python", type=Path, default=TRL_PYTHON)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not args.trl_python.is_file():
        sys.exit(f"no TRL environment at {args.trl_python}: `make bench-trl` builds it")
    runs: dict[str, list[dict[str, float]]] = {"red": [], "grpo": [], "trl_grpo": []}
    order: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        model = train = None
        for r in range(args.repeats):
            sides = ["red", "grpo", "trl_grpo"]
            if r % 2:
                sides.reverse()
            if model is None:  # TRL trains the export of a nemo_red run: do one first
                sides.remove("grpo")
                sides.insert(0, "grpo")
            order.append(sides)
            for side in sides:
                out = Path(tmp) / f"{side}_{r}"
                if side == "trl_grpo":
                    assert model is not None
                    assert train is not None
                    means = run_trl(args.trl_python, model, train, args.steps, out)
                else:
                    means = run_nemo_red(side, args.steps, out)
                    if side == "grpo" and model is None:
                        model, train = out / "hf", out / "data" / "train.jsonl"
                runs[side].append(means)
                print(side, r, json.dumps({k: round(v, 4) for k, v in means.items()}), flush=True)
    trl_versions = subprocess.run(
        [str(args.trl_python), "-c", _VERSIONS], check=True, capture_output=True, text=True
    ).stdout
    mean = {side: _average(per_repeat) for side, per_repeat in runs.items()}
    result = {
        "benchmark": "tiny step: nemo_red (red, grpo) vs TRL GRPOTrainer, same work",
        "date": now(),
        "device": device_info("cpu"),
        "versions": {
            "nemo_red": versions("megatron-core", "transformers", "math-verify"),
            "trl_env": json.loads(trl_versions),
        },
        "config": {
            "config": "examples/conf/tiny_red.yaml",
            "overrides": [*tiny_run_overrides(args.steps), *SAMPLING],
            "steps": args.steps,
            "repeats": args.repeats,
            "order": order,
            "averaged_over": "steps 2..N of each run, then the repeats",
            "interleaving": "the sides alternate order between repeats so machine load "
            "affects each alike",
            "trl_model": "the HF export (weights and tokenizer) of nemo_red's first grpo run",
            "trl_reward": "nemo_red's MathGrader (math-verify) on TRL's decoded completions",
            "rewards": "from the random initialisation the online rollouts earn ~0 reward, so "
            "GRPO's advantages are ~0 on both sides; both still run the full forward and "
            "backward pass (RED also trains the teacher traces)",
            "trl_times": "wall time between optimizer-step ends; rollout = _generate, "
            "grading = _calculate_rewards, train = the rest (TRL skips the separate "
            "old-log-prob pass when on-policy with one update per batch)",
        },
        "mean_seconds": mean,
        "per_repeat": runs,
        "nemo_red_over_trl": {
            "red_step": mean["red"]["step"] / mean["trl_grpo"]["step"],
            "grpo_step": mean["grpo"]["step"] / mean["trl_grpo"]["step"],
            "grpo_rollout": mean["grpo"]["rollout"] / mean["trl_grpo"]["rollout"],
        },
        # the least disturbed repeat of each side: load only ever adds time
        "nemo_red_over_trl_fastest_repeat": {
            f"{side}_step": _fastest(runs[side]) / _fastest(runs["trl_grpo"])
            for side in ("red", "grpo")
        },
    }
    write_result(result, args.out or RESULTS / "trl_step_cpu.json")


_VERSIONS = (
    "import json, platform; from importlib import metadata as m; "
    "print(json.dumps({'python': platform.python_version(), "
    "**{p: m.version(p) for p in ('torch', 'transformers', 'trl', 'accelerate')}}))"
)


if __name__ == "__main__":
    main()
