"""The comparison's final-accuracy chart: one row per arm, one panel per part.

Each point is an arm's mean test accuracy over its seeds, the bar its 95% t interval
(``intervals.interval``), and the dashed line the base model every arm started from; the
first panel is the overall accuracy (the mean over parts). Accuracies are drawn in percent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

# arm -> panel label -> (mean, 95% half-width or None); fractions in [0, 1]
ArmPoints = Mapping[str, Mapping[str, tuple[float | None, float | None]]]


def plot_final_accuracy(
    points: ArmPoints,
    panels: Sequence[str],
    out_path: Path,
    base: Mapping[str, float | None] | None = None,
    reference: str | None = None,
) -> Path | None:
    """Writes the chart to ``out_path``; None (nothing written) when no arm has a value.

    Args:
        points: per arm (in table order), per panel, the mean and the 95% half-width.
        panels: the panels, left to right (e.g. ``overall``, then each part).
        out_path: the PNG.
        base: per panel, the base model's accuracy (a dashed line), or None.
        reference: the reference arm, drawn in bold on the axis.
    """
    from matplotlib.figure import Figure

    arms = [a for a in points if any(points[a].get(p, (None, None))[0] is not None for p in panels)]
    if not arms:
        return None
    fig = Figure(
        figsize=(2.0 + 2.6 * len(panels), 1.0 + 0.28 * len(arms)), dpi=100, layout="constrained"
    )
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    rows = list(range(len(arms)))[::-1]  # the first arm on top
    for ax, panel in zip(axes, panels, strict=True):
        for row, arm in zip(rows, arms, strict=True):
            mean, half = points[arm].get(panel, (None, None))
            if mean is None:
                continue
            err = None if half is None else [[100 * half], [100 * half]]
            colour = "black" if arm == reference else "tab:blue"
            ax.errorbar([100 * mean], [row], xerr=err, fmt="o", color=colour, capsize=3)
        if base is not None and base.get(panel) is not None:
            value = base[panel]
            assert value is not None
            ax.axvline(100 * value, color="grey", linestyle="--")
        ax.set_title(panel)
        ax.set_xlabel("test accuracy (%)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(rows, arms)
    for label in axes[0].get_yticklabels():
        if label.get_text() == reference:
            label.set_fontweight("bold")
    title = "Final accuracy: mean over seeds, 95% t interval"
    fig.suptitle(title if base is None else f"{title}; dashed: the base model")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    return out_path
