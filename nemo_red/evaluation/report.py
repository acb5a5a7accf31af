"""What an evaluation's results record about the run, and the markdown table of its metrics."""

from __future__ import annotations

import datetime as dt
import platform
from collections.abc import Mapping
from importlib import metadata
from typing import Any

__all__ = ["markdown_table", "run_info"]

_PACKAGES = ("nemo-red", "torch", "transformers", "math-verify", "megatron-core", "vllm")


def run_info() -> dict[str, Any]:
    """The date (UTC), the Python and package versions, and the device."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    device = "cpu"
    try:
        import torch

        if torch.cuda.is_available():
            device = torch.cuda.get_device_name()
    except ImportError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "versions": versions,
        "device": device,
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _best_pass(summary: Mapping[str, Any]) -> tuple[str, float | None]:
    ks = sorted(int(key.split("@")[1]) for key in summary if key.startswith("pass@"))
    if len(ks) < 2:
        return "", None
    return f"pass@{ks[-1]}", summary[f"pass@{ks[-1]}"]


def markdown_table(summaries: Mapping[str, Mapping[str, Any]], overall: Mapping[str, float]) -> str:
    """One row per benchmark and an Overall row (mean over benchmarks), in percent.

    Columns: items, samples per item, accuracy (avg@n), the largest pass@k and maj@n when
    n > 1, mean response length in tokens, truncated and no-answer rates, and items whose
    gold answer could not be parsed (left out of the metrics).
    """
    header = (
        "| benchmark | items | n | accuracy (avg@n) | pass@k | maj@n | mean length | "
        "truncated | no answer | invalid golds |"
    )
    lines = [header, "|" + "---|" * 10]
    for name, s in summaries.items():
        n = s.get("samples_per_item")
        label, best = _best_pass(s)
        majority = s.get(f"maj@{n}") if n else None
        length = s.get("length", {}).get("mean")
        lines.append(
            f"| {name} | {s['items']} | {n or '-'} | {_pct(s.get('accuracy'))} | "
            f"{f'{_pct(best)} ({label})' if label else '-'} | {_pct(majority)} | "
            f"{'-' if length is None else f'{length:.0f}'} | {_pct(s.get('truncated'))} | "
            f"{_pct(s.get('no_answer'))} | {s['invalid_items']} |"
        )
    if overall:
        lines.append(
            f"| **Overall** | | | **{_pct(overall['accuracy'])}** | | | "
            f"{overall['length_mean']:.0f} | {_pct(overall['truncated'])} | | |"
        )
    return "\n".join(lines)
