"""Aggregation of a comparison's runs: per-arm statistics, a markdown table, plots.

Every run is an ordinary training run directory with a ``metrics.jsonl``. Per run:

* final accuracy: the last logged value of the accuracy key (``eval/accuracy``);
* late accuracy: the mean of its last ``LATE_EVALS`` logged values (on a small model a
  single evaluation swings by several points from one step to the next; the late mean is
  the steadier number to compare arms by);
* steps to 90%: the first step whose accuracy reaches 0.9 x the final accuracy (None when
  the final accuracy is <= 0: nothing was learned to reach);
* mean response length: the mean over steps of ``length/online_mean`` (online rollouts;
  None for runs without rollouts, e.g. SFT), and the final ``eval/response_length``;
* training time: the sum of ``time/step``; wall time: as the runner measured it.

Per arm: the per-seed values, their mean and sample standard deviation (0 for one seed),
and the mean curve over seeds of each plotted key (at each step, the mean of the seeds that
logged the key there).

Accuracies are fractions in [0, 1] in ``results.json`` and percent in the markdown table
and the plots (what a person reads), with the unit in the column headers.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nemo_red.monitoring import names
from nemo_red.monitoring.metrics_log import read_metrics
from nemo_red.monitoring.plots import plot_comparison, series

ACCURACY_KEY = names.HELD_OUT_ACCURACY
CURVE_KEYS = (
    ACCURACY_KEY,
    names.ONLINE_ACCURACY,
    names.H_RL,
    names.H_SFT,
    names.W,
    names.ONLINE_LENGTH,
)
# PNG file -> (title, key) drawn with one line per arm (the mean over seeds).
COMPARE_PLOTS = {
    "accuracy.png": ("Held-out accuracy (mean over seeds)", ACCURACY_KEY),
    "entropy_h_rl.png": ("H_rl: entropy of online tokens", names.H_RL),
    "entropy_h_sft.png": ("H_sft: entropy of teacher tokens", names.H_SFT),
    "weight_w.png": ("w: offline weight", names.W),
}

LATE_EVALS = 3

Curve = tuple[list[int], list[float]]


@dataclass(frozen=True)
class RunSummary:
    """What one (arm, seed) run gives the comparison."""

    arm: str
    seed: int
    final_accuracy: float | None
    late_accuracy: float | None
    steps_to_90: int | None
    mean_response_length: float | None
    final_eval_response_length: float | None
    train_time_s: float
    wall_s: float | None
    steps: int


@dataclass(frozen=True)
class ArmSummary:
    """One arm over its seeds."""

    arm: str
    seeds: list[int]
    final_accuracy: list[float | None]
    accuracy_mean: float | None
    accuracy_std: float | None
    late_accuracy: list[float | None]
    late_mean: float | None
    late_std: float | None
    steps_to_90: list[int | None]
    steps_to_90_mean: float | None
    mean_response_length: float | None
    wall_s_mean: float | None
    train_time_s_mean: float


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the finite values (std 0 for one value)."""
    finite = _finite(values)
    if not finite:
        return None, None
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return statistics.fmean(finite), std


def _mean(values: Sequence[float | None]) -> float | None:
    return mean_std(values)[0]


def final_value(curve: Curve) -> float | None:
    """The last finite value of a curve (None when there is none)."""
    finite = [v for v in curve[1] if math.isfinite(v)]
    return finite[-1] if finite else None


def late_value(curve: Curve, count: int = LATE_EVALS) -> float | None:
    """The mean of the last ``count`` finite values of a curve (None when there is none)."""
    finite = [v for v in curve[1] if math.isfinite(v)][-count:]
    return statistics.fmean(finite) if finite else None


def steps_to_fraction(curve: Curve, fraction: float = 0.9) -> int | None:
    """The first step whose value reaches ``fraction`` x the final value.

    Returns None when the final value is missing or <= 0.
    """
    final = final_value(curve)
    if final is None or final <= 0:
        return None
    target = fraction * final
    return next(s for s, v in zip(*curve, strict=True) if math.isfinite(v) and v >= target)


def summarize_run(
    arm: str,
    seed: int,
    rows: Sequence[Mapping[str, Any]],
    wall_s: float | None,
    accuracy_key: str = ACCURACY_KEY,
) -> RunSummary:
    """A :class:`RunSummary` from one run's metrics rows (see the module docstring)."""
    accuracy = series(rows, accuracy_key)
    lengths = series(rows, names.ONLINE_LENGTH)[1]
    times = _finite(series(rows, names.STEP_TIME)[1])
    return RunSummary(
        arm=arm,
        seed=seed,
        final_accuracy=final_value(accuracy),
        late_accuracy=late_value(accuracy),
        steps_to_90=steps_to_fraction(accuracy),
        mean_response_length=_mean(lengths),
        final_eval_response_length=final_value(series(rows, names.EVAL_RESPONSE_LENGTH)),
        train_time_s=sum(times),
        wall_s=wall_s,
        steps=max((int(r["step"]) for r in rows), default=0),
    )


def summarize_arm(arm: str, runs: Sequence[RunSummary]) -> ArmSummary:
    """An :class:`ArmSummary` over the arm's runs (one per seed)."""
    accuracy_mean, accuracy_std = mean_std([r.final_accuracy for r in runs])
    late_mean, late_std = mean_std([r.late_accuracy for r in runs])
    return ArmSummary(
        arm=arm,
        seeds=[r.seed for r in runs],
        final_accuracy=[r.final_accuracy for r in runs],
        accuracy_mean=accuracy_mean,
        accuracy_std=accuracy_std,
        late_accuracy=[r.late_accuracy for r in runs],
        late_mean=late_mean,
        late_std=late_std,
        steps_to_90=[r.steps_to_90 for r in runs],
        steps_to_90_mean=_mean([r.steps_to_90 for r in runs]),
        mean_response_length=_mean([r.mean_response_length for r in runs]),
        wall_s_mean=_mean([r.wall_s for r in runs]),
        train_time_s_mean=statistics.fmean([r.train_time_s for r in runs]) if runs else 0.0,
    )


def mean_curve(curves: Sequence[Curve]) -> Curve:
    """At each step any curve has, the mean of the finite values logged there."""
    by_step: dict[int, list[float]] = {}
    for steps, values in curves:
        for step, value in zip(steps, values, strict=True):
            if math.isfinite(value):
                by_step.setdefault(step, []).append(value)
    ordered = sorted(by_step)
    return ordered, [statistics.fmean(by_step[s]) for s in ordered]


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def markdown_table(arms: Sequence[ArmSummary], base_accuracy: float | None = None) -> str:
    """One row per arm: final and late accuracy (mean ± std), per-seed final values,
    response length, steps to 90%, wall time.

    Accuracies are in percent here (the unit is in the headers), fractions in
    ``results.json``. With ``base_accuracy`` a first row gives the accuracy every arm
    started from.
    """
    lines = [
        f"| arm | final accuracy (%, mean ± std) | last {LATE_EVALS} evals (%, mean ± std) "
        "| final, per seed (%) | response length (tokens) | steps to 90% | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    if base_accuracy is not None:
        lines.append(f"| (base model: start) | {_pct(base_accuracy)} | | | | | |")
    for a in arms:
        per_seed = ", ".join(_pct(v) for v in a.final_accuracy)
        lines.append(
            f"| {a.arm} | {_pm(a.accuracy_mean, a.accuracy_std)} | {_pm(a.late_mean, a.late_std)} "
            f"| {per_seed} | {_fmt(a.mean_response_length, 1)} "
            f"| {_fmt(a.steps_to_90_mean, 1)} | {_fmt(a.wall_s_mean, 1)} |"
        )
    return "\n".join(lines) + "\n"


def _pm(mean: float | None, std: float | None) -> str:
    return "-" if mean is None or std is None else f"{100 * mean:.1f} ± {100 * std:.1f}"


def _json_curve(curve: Curve) -> dict[str, list[Any]]:
    steps, values = curve
    return {"steps": steps, "values": [v if math.isfinite(v) else None for v in values]}


def aggregate(
    runs: Mapping[str, Mapping[int, Path]],
    wall_times: Mapping[Path, float | None],
    out_dir: Path,
    accuracy_key: str = ACCURACY_KEY,
    base_run: Path | None = None,
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Writes ``results.json``, ``results.md`` and ``plots/*.png`` under ``out_dir``.

    Args:
        runs: arm -> seed -> run directory (each with a ``metrics.jsonl``), in table order.
        wall_times: run directory -> wall seconds (None when unknown).
        out_dir: where the outputs go.
        accuracy_key: the metric of the accuracy columns.
        base_run: the base-model run every arm started from (its final accuracy is the
            table's first row and ``base_model`` in the document), or None.
        info: recorded as ``info`` (e.g. date, versions, device, wall time).

    Returns:
        The document written to ``results.json``: ``info``, ``base_model``, ``arms`` (per
        arm its summary and, under ``runs``, each seed's summary and raw curves) and
        ``mean_curves`` (arm -> key -> steps and values); plus ``table`` (the markdown) and
        ``plots`` (the PNG paths).
    """
    summaries, document_arms, curves = [], {}, {}
    for arm, seeds in runs.items():
        rows = {seed: read_metrics(path / "metrics.jsonl") for seed, path in seeds.items()}
        per_run = [
            summarize_run(arm, seed, rows[seed], wall_times.get(path), accuracy_key)
            for seed, path in seeds.items()
        ]
        summary = summarize_arm(arm, per_run)
        summaries.append(summary)
        keys = dict.fromkeys((accuracy_key, *CURVE_KEYS))
        document_arms[arm] = {
            **asdict(summary),
            "runs": {
                str(run.seed): {
                    **asdict(run),
                    "curves": {k: _json_curve(series(rows[run.seed], k)) for k in keys},
                }
                for run in per_run
            },
        }
        curves[arm] = {k: mean_curve([series(r, k) for r in rows.values()]) for k in keys}
    base: dict[str, Any] | None = None
    base_accuracy = None
    if base_run is not None:
        curve = series(read_metrics(base_run / "metrics.jsonl"), accuracy_key)
        base_accuracy = final_value(curve)
        base = {"final_accuracy": base_accuracy, "curve": _json_curve(curve)}
    table = markdown_table(summaries, base_accuracy)
    document: dict[str, Any] = {
        "info": dict(info or {}),
        "accuracy_key": accuracy_key,
        "base_model": base,
        "arms": document_arms,
        "mean_curves": {
            arm: {k: _json_curve(c) for k, c in per_key.items()} for arm, per_key in curves.items()
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(document, indent=1, allow_nan=False))
    (out_dir / "results.md").write_text(table)
    plots = plot_mean_curves(curves, out_dir / "plots", accuracy_key)
    return {**document, "table": table, "plots": [str(p) for p in plots]}


def plot_mean_curves(
    curves: Mapping[str, Mapping[str, Curve]], out_dir: Path, accuracy_key: str = ACCURACY_KEY
) -> list[Path]:
    """One PNG per :data:`COMPARE_PLOTS` entry, one line per arm; empty plots are skipped."""
    written = []
    for name, (title, key) in COMPARE_PLOTS.items():
        key = accuracy_key if key == ACCURACY_KEY else key
        runs = {
            arm: [{"step": s, key: v} for s, v in zip(*per_key[key], strict=True)]
            for arm, per_key in curves.items()
        }
        path = plot_comparison(runs, key, out_dir / name, title=title)
        if path is not None:
            written.append(path)
    return written
