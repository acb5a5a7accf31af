"""What every benchmark result records: the device, the software versions and the date."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def device_info(device: str = "cpu") -> dict[str, object]:
    """The device a benchmark ran on: GPU model or CPU model, and the core count."""
    info: dict[str, object] = {"kind": device, "cpu": cpu_model(), "cpu_cores": os.cpu_count()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
    return info


def versions(*packages: str) -> dict[str, str]:
    """Python, torch and the named packages' versions (``"absent"`` if not installed)."""
    found = {"python": platform.python_version(), "torch": torch.__version__}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def tiny_run_overrides(steps: int) -> list[str]:
    """The overrides the step benchmarks read the tiny default with: no SFT stage, a
    constant learning rate, ``steps`` steps, no evaluation."""
    return [
        "algorithm.sft_warmup_steps=0",
        "trainer.optim.warmup_steps=0",
        f"trainer.total_steps={steps}",
        "trainer.eval_every=0",
        f"trainer.checkpoint_every={steps}",
        "trainer.progress=false",
    ]


TINY_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "conf" / "tiny_red.yaml"
STEP_PHASES = ("rollout", "grading", "logprobs", "train", "refit", "step")
"""The phases of a training step whose seconds ``metrics.jsonl`` records as ``time/<phase>``."""


def run_tiny_default(preset: str, steps: int, out: Path, *extra: str) -> list[dict]:
    """Trains the tiny default with ``preset`` for ``steps`` steps through the CLI (with
    :func:`tiny_run_overrides` and ``extra`` overrides) into ``out``; returns its metrics
    rows, one per step."""
    repo = TINY_CONFIG.parents[2]
    cmd = [sys.executable, "-m", "nemo_red.cli", "train", "--config", str(TINY_CONFIG)]
    cmd += [f"run.output_dir={out}", f"algorithm.preset={preset}", *tiny_run_overrides(steps)]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    subprocess.run([*cmd, *extra], check=True, env=env, capture_output=True)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def now() -> str:
    """The current UTC time, ISO 8601."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_result(result: dict[str, object], out: Path) -> Path:
    """Writes a benchmark's result as indented JSON to ``out`` (creating its folder) and says
    where."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return out
