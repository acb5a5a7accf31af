"""What an evaluation's results record about the run, and the markdown table of its metrics.

The table is for a person: rates are in percent, with the unit in the column header
(``accuracy (%, avg@n)``); ``results.json`` keeps the fractions in [0, 1].
"""

from __future__ import annotations

import datetime as dt
import platform
from collections.abc import Mapping
from importlib import metadata
from typing import Any

__all__ = ["drop_notes", "markdown_table", "run_info"]

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


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def drop_notes(
    summaries: Mapping[str, Mapping[str, Any]], limits: Mapping[str, int | None] | None = None
) -> dict[str, str]:
    """For each benchmark that dropped items: how many of how many, and why.

    Args:
        summaries: Benchmark -> summary, with ``items`` and ``dropped`` (reason -> count;
            see :data:`nemo_red.evaluation.harness.DROP_REASONS`).
        limits: ``max_prompt_tokens`` and ``max_context``, named in the reasons.

    Returns:
        Benchmark -> e.g. ``"5 of 5 items dropped: 5 prompts longer than
        --max-prompt-tokens (64 tokens)"``.
    """
    limits = limits or {}
    notes = {}
    for name, s in summaries.items():
        dropped = s.get("dropped") or {}
        total = sum(dropped.values())
        if not total:
            continue
        reasons = []
        if dropped.get("prompt_too_long"):
            limit = limits.get("max_prompt_tokens")
            reasons.append(
                f"{_plural(dropped['prompt_too_long'], 'prompt')} longer than "
                f"--max-prompt-tokens ({'?' if limit is None else _plural(limit, 'token')})"
            )
        if dropped.get("prompt_exceeds_context"):
            context = limits.get("max_context")
            reasons.append(
                f"{_plural(dropped['prompt_exceeds_context'], 'prompt')} too long for the "
                f"model's context ({'?' if context is None else _plural(context, 'token')}, "
                "max_position_embeddings)"
            )
        if dropped.get("invalid_gold"):
            reasons.append(
                f"{_plural(dropped['invalid_gold'], 'invalid gold answer')} (cannot be parsed)"
            )
        notes[name] = f"{total} of {_plural(s['items'] + total, 'item')} dropped: " + "; ".join(
            reasons
        )
    return notes


def markdown_table(
    summaries: Mapping[str, Mapping[str, Any]],
    overall: Mapping[str, float],
    limits: Mapping[str, int | None] | None = None,
) -> str:
    """One row per benchmark and an Overall row (mean over benchmarks), rates in percent.

    Columns: items scored, items dropped (not in the metrics), samples per item, accuracy
    (avg@n), the largest pass@k and maj@n when n > 1, mean response length in tokens,
    truncated and no-answer rates. Under the table, one line per benchmark that dropped
    items says why (see :func:`drop_notes`; ``limits`` gives the limits it names).
    """
    header = (
        "| benchmark | items | dropped | n | accuracy (%, avg@n) | pass@k (%) | maj@n (%) | "
        "mean length (tokens) | truncated (%) | no answer (%) |"
    )
    lines = [header, "|" + "---|" * 10]
    for name, s in summaries.items():
        n = s.get("samples_per_item")
        label, best = _best_pass(s)
        majority = s.get(f"maj@{n}") if n else None
        length = s.get("length", {}).get("mean")
        dropped = sum((s.get("dropped") or {}).values())
        lines.append(
            f"| {name} | {s['items']} | {dropped} | {n or '-'} | {_pct(s.get('accuracy'))} | "
            f"{f'{_pct(best)} ({label})' if label else '-'} | {_pct(majority)} | "
            f"{'-' if length is None else f'{length:.0f}'} | {_pct(s.get('truncated'))} | "
            f"{_pct(s.get('no_answer'))} |"
        )
    if overall:
        lines.append(
            f"| **Overall** | | | | **{_pct(overall['accuracy'])}** | | | "
            f"{overall['length_mean']:.0f} | {_pct(overall['truncated'])} | |"
        )
    notes = drop_notes(summaries, limits)
    if notes:
        lines += ["", "Dropped items (not in the metrics):"]
        lines += [f"- {name}: {note}" for name, note in notes.items()]
    return "\n".join(lines)
