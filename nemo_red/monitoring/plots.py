"""PNG plots of a run's training dynamics from its metrics log, and comparisons of runs.

Drawn with matplotlib's object-oriented API on the Agg canvas (no display, no pyplot
state). A series is the values of one key over the steps of the rows that have the key: a
row without the key adds no point (evaluation every k steps draws one connected line), a
``null`` value breaks the line (a gap). A run plot (see :data:`RUN_PLOTS`) is one or more
panels stacked over a shared step axis; a panel none of whose keys has a value is left
out, and a plot none of whose panels is left is not written.

What a person reads: fractions of the log (accuracies, clip fractions) are drawn in
percent; the teacher trace's accuracy, right nearly always, has its own small panel so
that it does not set the scale of the online and held-out accuracy; held-out accuracy is
the prominent line. On every run plot the steps of an SFT-only stage
(``stage/sft_only`` = 1) are shaded and each handover to RL (1 then 0, see
:func:`handover_steps`) is a dashed line. The step axis of every plot, comparisons
included, has integer ticks.

The figures are built by :func:`run_figure` and :func:`comparison_figure` (which tests
inspect) and written by :func:`plot_run` and :func:`plot_comparison`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nemo_red.monitoring import names
from nemo_red.monitoring.metrics_log import read_metrics

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "RUN_PLOTS",
    "Panel",
    "RunPlot",
    "comparison_figure",
    "flagged_steps",
    "handover_steps",
    "plot_comparison",
    "plot_run",
    "run_figure",
    "series",
    "set_step_axis",
    "sft_spans",
    "y_range",
]

Rows = Sequence[Mapping[str, Any]]
Line = tuple[list[int], list[float]]


@dataclass(frozen=True)
class Panel:
    """One axes of a run plot.

    Attributes:
        ylabel: The y-axis label.
        keys: The metrics drawn, one line each.
        pattern: A :mod:`fnmatch` pattern: the keys of the rows matching it are drawn too
            (after ``keys``, sorted), e.g. one line per benchmark.
        percent: The values are fractions, drawn x100 (the axis then reads %).
        prominent: The key drawn as the thick line on top (the one to read first).
        height: The panel's height relative to a full one.
        min_span: The least y range (drawn units), down from the highest value: a nearly
            constant series then reads as flat, not as noise magnified to fill the panel.
        floor: Where the y axis starts (0 for a percentage) unless a value is below it.
        log: A log y axis, when every value drawn is positive (else linear).
        flag: A key whose steps with a value above 0 are marked along the panel's bottom
            (e.g. ``skipped``, where the gradient norm has a gap); not data of its own.
    """

    ylabel: str
    keys: tuple[str, ...] = ()
    pattern: str | None = None
    percent: bool = False
    prominent: str | None = None
    height: float = 1.0
    min_span: float = 0.0
    floor: float | None = None
    log: bool = False
    flag: str | None = None

    def keys_in(self, rows: Rows) -> list[str]:
        """The keys this panel draws from ``rows`` (with or without values)."""
        keys = list(self.keys)
        if self.pattern is not None:
            found = {k for row in rows for k in row if fnmatchcase(k, self.pattern)}
            keys += sorted(found - set(keys))
        return keys


@dataclass(frozen=True)
class RunPlot:
    """One PNG of a run: a title and its panels, top to bottom."""

    title: str
    panels: tuple[Panel, ...]


# File name -> what it draws.
RUN_PLOTS: dict[str, RunPlot] = {
    "entropy.png": RunPlot("Token entropy", (Panel("entropy (nats)", (names.H_RL, names.H_SFT)),)),
    "weight.png": RunPlot("Offline weight", (Panel("w", (names.W,)),)),
    # the teacher trace is right nearly always: its own small panel, so that its 100% does
    # not squash the online and held-out accuracy against the bottom
    "accuracy.png": RunPlot(
        "Accuracy",
        (
            Panel(
                "accuracy (%)",
                (names.HELD_OUT_ACCURACY, names.ONLINE_ACCURACY),
                percent=True,
                prominent=names.HELD_OUT_ACCURACY,
                min_span=10.0,
                floor=0.0,
            ),
            Panel(
                "teacher (%)",
                (names.OFFLINE_ACCURACY,),
                percent=True,
                height=0.35,
                min_span=20.0,
            ),
        ),
    ),
    "benchmarks.png": RunPlot(
        "Benchmark accuracy",
        (
            Panel(
                "accuracy (%)",
                (names.OVERALL_ACCURACY,),
                pattern=names.BENCHMARK_ACCURACY_PATTERN,
                percent=True,
                prominent=names.OVERALL_ACCURACY,
                min_span=10.0,
                floor=0.0,
            ),
        ),
    ),
    "response_length.png": RunPlot(
        "Response length", (Panel("tokens", (names.ONLINE_LENGTH, names.OFFLINE_LENGTH)),)
    ),
    "clip_fraction.png": RunPlot(
        "Clip fraction",
        (
            Panel(
                "clipped tokens (%)",
                (names.ONLINE_CLIP_FRACTION, names.OFFLINE_CLIP_FRACTION),
                percent=True,
                min_span=1.0,
                floor=0.0,
            ),
        ),
    ),
    "optimization.png": RunPlot(
        "Optimization",
        (
            Panel("loss", (names.LOSS,), height=0.7),
            Panel("grad norm", (names.GRAD_NORM,), height=0.7, log=True, flag=names.SKIPPED),
            Panel("learning rate", (names.LR,), height=0.7, log=True),
        ),
    ),
}
_MARKER_MAX_POINTS = 60  # fewer points than this: also draw markers (isolated points show)


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


def set_step_axis(ax: Axes) -> None:
    """Integer ticks on the step axis (steps are whole: no tick at 2.5).

    Integers even when the axis spans only one step (a single evaluation): matplotlib
    falls back to fractional ticks when fewer than ``min_n_ticks`` integers are in view.
    """
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


# what a person reads in a legend, for the keys whose name says less
_LABELS = {
    names.HELD_OUT_ACCURACY: "held-out",
    names.OVERALL_ACCURACY: "overall",
    names.ONLINE_ACCURACY: "online rollouts",
    names.OFFLINE_ACCURACY: "teacher trace",
}


def _label(key: str) -> str:
    if key in _LABELS:
        return _LABELS[key]
    return names.benchmark_of(key) or key  # a benchmark's name


def _draw_lines(
    ax: Axes,
    lines: Mapping[str, Line],
    faint: Mapping[str, Line] | None = None,
    prominent: str | None = None,
    first_colour: int = 0,
) -> None:
    """One line per entry; colours continue from ``first_colour`` (the panels above)."""
    for index, (label, (steps, values)) in enumerate(lines.items(), start=first_colour):
        marker = "o" if len(steps) < _MARKER_MAX_POINTS else None
        # the colour cycle has 10 colours: later lines change style so no two look alike
        style = _LINE_STYLES[(index // 10) % len(_LINE_STYLES)]
        width, size, alpha = 1.5, 3.0, 1.0
        if prominent is not None:  # the prominent line thick on top, the others faded
            width, size, alpha = (2.5, 4.0, 1.0) if label == prominent else (1.0, 2.0, 0.6)
        (line,) = ax.plot(
            steps,
            values,
            label=label,
            color=f"C{index % 10}",
            marker=marker,
            markersize=size,
            linewidth=width,
            linestyle=style,
            alpha=alpha,
            zorder=3 if label == prominent else 2,
        )
        if faint and label in faint:
            ax.plot(*faint[label], color=line.get_color(), alpha=0.25, linewidth=1.0)


def _finish_axes(ax: Axes, ylabel: str, legend_beside: bool) -> None:
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    set_step_axis(ax)
    if legend_beside:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    else:
        ax.legend(loc="best", fontsize="small")


def _percent(line: Line) -> Line:
    steps, values = line
    return steps, [100.0 * v for v in values]


def _panel_lines(rows: Rows, panel: Panel) -> dict[str, Line]:
    """The panel's lines with data, by key, in drawn units (percent when the panel says)."""
    lines = {key: series(rows, key) for key in panel.keys_in(rows)}
    lines = {key: line for key, line in lines.items() if _has_data(line[1])}
    return {key: _percent(line) for key, line in lines.items()} if panel.percent else lines


def _log_y(ax: Axes, decades: float) -> None:
    """A log y axis labelled 0.2, 0.5, 1, 2 (not 2x10^-1), at 1-2-5 within two decades."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if decades < 2.0 else (1.0,)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def y_range(panel: Panel, low: float, high: float) -> tuple[float, float] | None:
    """The y range of a linear panel whose values span ``[low, high]``, before padding.

    At least ``min_span`` wide, down from ``high``; from ``floor`` when set and no value is
    below it. None: matplotlib's own (neither is set).
    """
    if panel.floor is None and panel.min_span <= 0.0:
        return None
    bottom, top = min(low, high - panel.min_span), high
    if panel.floor is not None and low >= panel.floor:
        bottom, top = panel.floor, max(high, panel.floor + panel.min_span)
    return bottom, top


def _scale_y(ax: Axes, panel: Panel, lines: Mapping[str, Line]) -> None:
    """A log axis (``log`` and all values positive), else linear over :func:`y_range`."""
    finite = [v for _, values in lines.values() for v in values if not math.isnan(v)]
    low, high = min(finite), max(finite)
    if panel.log and low > 0.0:
        _log_y(ax, math.log10(high / low))
        return
    limits = y_range(panel, low, high)
    if limits is not None:
        pad = 0.05 * (limits[1] - limits[0])
        ax.set_ylim(limits[0] - pad, limits[1] + pad)
    ax.ticklabel_format(axis="y", useOffset=False)


def flagged_steps(rows: Rows, key: str) -> list[int]:
    """The steps whose ``key`` is above 0 (e.g. the skipped ones)."""
    steps, values = series(rows, key)
    return [step for step, value in zip(steps, values, strict=True) if value > 0.0]


def _draw_flags(ax: Axes, rows: Rows, key: str) -> None:
    steps = flagged_steps(rows, key)
    if steps:  # along the bottom, in axes coordinates: the y scale is not touched
        ax.plot(
            steps,
            [0.03] * len(steps),
            "x",
            color="tab:red",
            transform=ax.get_xaxis_transform(),
            label=f"{key} ({len(steps)})",
            clip_on=False,
        )


STAGE_KEY = names.SFT_ONLY  # 1.0 on the steps of an SFT-only stage, 0.0 on RL steps


def _stages(rows: Rows) -> list[tuple[int, bool]]:
    steps, values = series(rows, STAGE_KEY)
    return [(s, v > 0.5) for s, v in zip(steps, values, strict=True) if not math.isnan(v)]


def handover_steps(rows: Rows) -> list[int]:
    """The steps where SFT hands over to RL: ``stage/sft_only`` goes from 1 to 0.

    Args:
        rows: Metrics rows; those without the key (or with ``null``) are passed over.

    Returns:
        The first RL step after each SFT-only stretch, in row order.
    """
    stages = _stages(rows)
    return [step for (_, was_sft), (step, sft) in pairwise(stages) if was_sft and not sft]


def sft_spans(rows: Rows) -> list[tuple[int, int]]:
    """The SFT-only stretches, as (first SFT step, first RL step after it); a run that
    ends in SFT ends its last stretch at its last SFT step."""
    spans: list[tuple[int, int]] = []
    start = last = None
    for step, sft in _stages(rows):
        if sft:
            start, last = (step if start is None else start), step
        elif start is not None:
            spans.append((start, step))
            start = None
    if start is not None and last is not None:
        spans.append((start, last))
    return spans


def _draw_stages(ax: Axes, rows: Rows, labelled: bool) -> None:
    """SFT-only steps shaded, a dashed line at each handover to RL; x limits kept."""
    limits = ax.get_xlim()
    for index, (start, end) in enumerate(sft_spans(rows)):
        label = "SFT stage" if labelled and index == 0 else None
        ax.axvspan(start, end, color="0.5", alpha=0.12, linewidth=0, zorder=0, label=label)
    for index, step in enumerate(handover_steps(rows)):
        label = "SFT → RL" if labelled and index == 0 else None
        ax.axvline(step, color="0.25", linestyle="--", linewidth=1.2, zorder=1, label=label)
    ax.set_xlim(limits)  # a stage without data of this plot does not widen it


def _draw_panel(ax: Axes, rows: Rows, panel: Panel, lines: dict[str, Line], colour: int) -> None:
    labelled = {_label(key): line for key, line in lines.items()}
    prominent = _label(panel.prominent) if panel.prominent in lines else None
    _draw_lines(ax, labelled, prominent=prominent, first_colour=colour)
    _scale_y(ax, panel, lines)
    if panel.flag is not None:
        _draw_flags(ax, rows, panel.flag)


def run_figure(rows: Rows, plot: RunPlot) -> Figure | None:
    """The figure of one run plot, or None when none of its keys has a value.

    Args:
        rows: The run's metrics rows.
        plot: What to draw (an entry of :data:`RUN_PLOTS`).

    Returns:
        The figure, its panels (the ones with data) top to bottom sharing the step axis,
        with the SFT-only steps shaded and each handover to RL a dashed line.
    """
    from matplotlib.figure import Figure

    drawn = [(panel, lines) for panel in plot.panels if (lines := _panel_lines(rows, panel))]
    if not drawn:
        return None
    beside = any(len(lines) > _LEGEND_INSIDE_MAX for _, lines in drawn)
    heights = [panel.height for panel, _ in drawn]
    size = (9.0 if beside else 7.0, 0.9 + 3.1 * sum(heights))
    fig = Figure(figsize=size, dpi=100, layout="constrained")
    axes = fig.subplots(len(drawn), 1, sharex=True, squeeze=False, height_ratios=heights)[:, 0]
    colour = 0  # each line of the figure its own colour, over all its panels
    for ax, (panel, lines) in zip(axes, drawn, strict=True):
        _draw_panel(ax, rows, panel, lines, colour)
        colour += len(lines)
    for index, (ax, (panel, _)) in enumerate(zip(axes, drawn, strict=True)):
        _draw_stages(ax, rows, labelled=index == 0)  # in the top panel's legend
        _finish_axes(ax, panel.ylabel, beside)
    axes[0].set_title(plot.title)
    axes[-1].set_xlabel("step")
    return fig


def _save(fig: Figure, out_path: Path) -> Path:
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
    for name, plot in RUN_PLOTS.items():
        fig = run_figure(rows, plot)
        if fig is not None:
            written.append(_save(fig, Path(out_dir) / name))
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


def _is_fraction(key: str) -> bool:
    """Accuracies and clip fractions are fractions in the log, percent on a plot."""
    return key.endswith("accuracy") or key.endswith("clip_frac")


def comparison_figure(
    runs: Mapping[str, Rows],
    key: str,
    smoothing: float = 0.0,
    title: str | None = None,
    percent: bool | None = None,
) -> Figure | None:
    """The figure of :func:`plot_comparison`, or None when no run has a value of ``key``.

    Raises:
        ValueError: When ``smoothing`` is outside ``[0, 1)``.
    """
    from matplotlib.figure import Figure

    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    raw = {name: series(rows, key) for name, rows in runs.items()}
    raw = {name: line for name, line in raw.items() if _has_data(line[1])}
    if not raw:
        return None
    percent = _is_fraction(key) if percent is None else percent
    if percent:
        raw = {name: _percent(line) for name, line in raw.items()}
    beside = len(raw) > _LEGEND_INSIDE_MAX
    fig = Figure(figsize=(9.0, 4.5) if beside else (7.0, 4.0), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    if smoothing > 0.0:
        smooth = {name: (steps, _ema(values, smoothing)) for name, (steps, values) in raw.items()}
        _draw_lines(ax, smooth, faint=raw)
    else:
        _draw_lines(ax, raw)
    ax.set_title(title or key)
    ax.set_xlabel("step")
    _finish_axes(ax, f"{key} (%)" if percent else key, beside)
    return fig


def plot_comparison(
    runs: Mapping[str, Rows],
    key: str,
    out_path: str | Path,
    smoothing: float = 0.0,
    title: str | None = None,
    percent: bool | None = None,
) -> Path | None:
    """Draw one metric of several runs, one line per run.

    Args:
        runs: Run names to their metrics rows (see :func:`read_metrics`).
        key: The metric.
        out_path: The PNG.
        smoothing: Weight of an exponential moving average in ``[0, 1)``, as TensorBoard's
            slider; above 0 the raw values are drawn faintly behind.
        title: The plot's title; default the key.
        percent: Draw the values x100 on an axis labelled %; default for the keys that are
            fractions (``...accuracy``, ``...clip_frac``).

    Returns:
        The PNG, or None when no run has a value of ``key`` (nothing is written).

    Raises:
        ValueError: When ``smoothing`` is outside ``[0, 1)``.
    """
    fig = comparison_figure(runs, key, smoothing, title, percent)
    return None if fig is None else _save(fig, Path(out_path))
