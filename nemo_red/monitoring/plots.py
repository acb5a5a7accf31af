"""PNG plots of a run's training dynamics from its metrics log, and comparisons of runs.

Drawn with matplotlib's object-oriented API on the Agg canvas (no display, no pyplot
state). A series is the values of one key over the steps of the rows that have the key: a
row without the key adds no point (evaluation every k steps draws one connected line), a
``null`` value breaks the line (a gap). A plot none of whose keys has a value is not
written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nemo_red.monitoring.metrics_log import read_metrics

__all__ = ["RUN_PLOTS", "plot_comparison", "plot_run", "series"]

# File name -> (title, y label, keys drawn).
RUN_PLOTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "entropy.png": ("Token entropy", "entropy (nats)", ("entropy/h_rl", "entropy/h_sft")),
    "weight.png": ("Offline weight", "w", ("entropy/w",)),
    "accuracy.png": (
        "Accuracy",
        "accuracy",
        ("reward/online_accuracy", "reward/offline_accuracy", "eval/accuracy"),
    ),
    "response_length.png": (
        "Response length",
        "tokens",
        ("length/online_mean", "length/offline_mean"),
    ),
    "clip_fraction.png": ("Clip fraction", "fraction", ("online/clip_frac", "offline/clip_frac")),
}
_MARKER_MAX_POINTS = 60  # fewer points than this: also draw markers (isolated points show)

Rows = Sequence[Mapping[str, Any]]


def _as_float(value: Any) -> float:
    if value is None or isinstance(value, str):
        return math.nan
    return float(value)


def series(rows: Rows, key: str) -> tuple[list[int], list[float]]:
    """The steps and values of one key (None, the ``null`` of the log, as NaN).

    Args:
        rows: Metrics rows, each with a ``step``.
        key: The metric.

    Returns:
        Steps and values of the rows holding ``key``, in row order.
    """
    steps, values = [], []
    for row in rows:
        if key in row:
            steps.append(int(row["step"]))
            values.append(_as_float(row[key]))
    return steps, values


def _has_data(values: Sequence[float]) -> bool:
    return any(not math.isnan(v) for v in values)


_LINE_STYLES = ("-", "--", ":")
# more lines than this get the legend beside the axes, where it hides no data
_LEGEND_INSIDE_MAX = 6


def _draw(
    lines: Mapping[str, tuple[list[int], list[float]]],
    title: str,
    ylabel: str,
    out_path: Path,
    faint: Mapping[str, tuple[list[int], list[float]]] | None = None,
) -> Path:
    from matplotlib.figure import Figure

    many = len(lines) > _LEGEND_INSIDE_MAX
    fig = Figure(figsize=(9.0, 4.5) if many else (7.0, 4.0), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for index, (label, (steps, values)) in enumerate(lines.items()):
        marker = "o" if len(steps) < _MARKER_MAX_POINTS else None
        # the colour cycle has 10 colours: later lines change style so no two look alike
        style = _LINE_STYLES[(index // 10) % len(_LINE_STYLES)]
        (line,) = ax.plot(
            steps, values, label=label, marker=marker, markersize=3, linewidth=1.5, linestyle=style
        )
        if faint and label in faint:
            ax.plot(*faint[label], color=line.get_color(), alpha=0.25, linewidth=1.0)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if many:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    else:
        ax.legend(loc="best", fontsize="small")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    return out_path


def plot_run(metrics_jsonl: str | Path | Rows, out_dir: str | Path) -> list[Path]:
    """Draw the training dynamics of one run (see :data:`RUN_PLOTS`).

    Args:
        metrics_jsonl: The run's metrics log (see :class:`~nemo_red.monitoring.MetricsLog`),
            or its rows already read.
        out_dir: Directory of the PNGs (created when needed).

    Returns:
        The PNGs written, in :data:`RUN_PLOTS` order; plots without any data are skipped.
    """
    if isinstance(metrics_jsonl, (str, Path)):
        rows: Rows = read_metrics(metrics_jsonl)
    else:
        rows = metrics_jsonl
    written = []
    for name, (title, ylabel, keys) in RUN_PLOTS.items():
        lines = {key: series(rows, key) for key in keys}
        lines = {key: line for key, line in lines.items() if _has_data(line[1])}
        if lines:
            written.append(_draw(lines, title, ylabel, Path(out_dir) / name))
    return written


def _ema(values: Sequence[float], weight: float) -> list[float]:
    """TensorBoard-style exponential moving average, debiased, skipping (keeping) NaNs."""
    out, last, norm = [], 0.0, 0.0
    for value in values:
        if math.isnan(value):
            out.append(math.nan)
            continue
        last = weight * last + (1.0 - weight) * value
        norm = weight * norm + (1.0 - weight)
        out.append(last / norm)
    return out


def plot_comparison(
    runs: Mapping[str, Rows],
    key: str,
    out_path: str | Path,
    smoothing: float = 0.0,
    title: str | None = None,
) -> Path | None:
    """Draw one metric of several runs, one line per run.

    Args:
        runs: Run names to their metrics rows (see :func:`read_metrics`).
        key: The metric.
        out_path: The PNG.
        smoothing: Weight of an exponential moving average in ``[0, 1)``, as TensorBoard's
            slider; above 0 the raw values are drawn faintly behind.
        title: The plot's title; default the key.

    Returns:
        The PNG, or None when no run has a value of ``key`` (nothing is written).

    Raises:
        ValueError: When ``smoothing`` is outside ``[0, 1)``.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    raw = {name: series(rows, key) for name, rows in runs.items()}
    raw = {name: line for name, line in raw.items() if _has_data(line[1])}
    if not raw:
        return None
    if smoothing > 0.0:
        lines = {name: (steps, _ema(values, smoothing)) for name, (steps, values) in raw.items()}
        return _draw(lines, title or key, key, Path(out_path), faint=raw)
    return _draw(raw, title or key, key, Path(out_path))
