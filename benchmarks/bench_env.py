"""What every benchmark result records: the device, the software versions and the date."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
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
