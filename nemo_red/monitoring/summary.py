"""The one line a run prints at its end: held-out accuracy at the start and after each
stage (``start -> after sft -> after red``), read from the metrics log."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from nemo_red.monitoring import names


def accuracy_summary(
    rows: Sequence[Mapping[str, Any]],
    stages: Sequence[tuple[str, int]],
    problems: int,
    sampling: str,
) -> str | None:
    """``held-out accuracy (200 problems, greedy): 1.0% at the start -> 62.5% after sft
    (step 280) -> 85.0% after red (step 330)``.

    Args:
        rows: the run's metrics log (``read_metrics``).
        stages: ``(preset, last step)`` of each stage, in order.
        problems: how many held-out problems an evaluation grades.
        sampling: how they are sampled, in words ("greedy").

    Returns:
        The line, or None when the log has no held-out evaluation. A stage is reported by
        its last evaluation (normally at its last step); one without any is left out.
    """
    evals = [
        (int(row["step"]), float(row[names.HELD_OUT_ACCURACY]))
        for row in rows
        if isinstance(row.get(names.HELD_OUT_ACCURACY), int | float)
        and math.isfinite(row[names.HELD_OUT_ACCURACY])
    ]
    if not evals:
        return None
    parts = []
    if evals[0][0] == 0:
        parts.append(f"{100 * evals[0][1]:.1f}% at the start")
    begin = 0
    for preset, end in stages:
        within = [(step, acc) for step, acc in evals if begin < step <= end]
        if within:
            step, acc = within[-1]
            parts.append(f"{100 * acc:.1f}% after {preset} (step {step})")
        begin = end
    return f"held-out accuracy ({problems} problems, {sampling}): " + " -> ".join(parts)
