"""Aggregation of a comparison's runs: per-arm statistics, a markdown table, plots.

Every run is an ordinary training run directory with a ``metrics.jsonl``. The accuracy of a
run is read from one metric per *part* (``parts``: label -> key, by default the held-out
``eval/accuracy`` alone; a comparison on a task in parts reports ``eval/test_<part>/accuracy``
per part); the run's accuracy curve is the mean over the parts at each evaluated step. Per
run:

* final accuracy: the last value of that curve, and per part the last value of its key;
* late accuracy: the mean of its last ``LATE_EVALS`` logged values (on a small model a
  single evaluation swings by several points from one step to the next; the late mean is
  the steadier number to compare arms by);
* steps to 90%: the first step whose accuracy reaches 0.9 x the final accuracy (None when
  the final accuracy is <= 0: nothing was learned to reach);
* mean response length: the mean over steps of ``length/online_mean`` (online rollouts;
  None for runs without rollouts, e.g. SFT), and the final ``eval/response_length``;
* training time: the sum of ``time/step``; wall time: as the runner measured it.

Per arm: the per-seed values, their mean and sample standard deviation (0 for one seed),
the 95% t interval of the mean (overall and per part), and, when a reference arm is named,
the paired comparison with it on the seeds both ran (``intervals.paired_verdict``: better,
worse, or no difference shown); and the mean curve over seeds of each plotted key (at each
step, the mean of the seeds that logged the key there).

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

from nemo_red.experiments.charts import plot_final_accuracy
from nemo_red.experiments.intervals import Interval, PairedVerdict, interval, paired_verdict
from nemo_red.monitoring import names
from nemo_red.monitoring.metrics_log import read_metrics
from nemo_red.monitoring.plots import plot_comparison, series

ACCURACY_KEY = names.HELD_OUT_ACCURACY
HELD_OUT = "held-out"  # the label of the one part of a comparison without a task in parts
CURVE_KEYS = (
    ACCURACY_KEY,
    names.ONLINE_ACCURACY,
    names.H_RL,
    names.H_SFT,
    names.W,
    names.ONLINE_LENGTH,
)
# PNG file -> (title, key) drawn with one line per arm (the mean over seeds); the accuracy
# plots, one per part, are added by ``plot_mean_curves``.
COMPARE_PLOTS = {
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
    part_accuracy: dict[str, float | None]
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
    accuracy_ci95: float | None
    parts: dict[str, dict[str, Any]]
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


def overall_curve(curves: Sequence[Curve]) -> Curve:
    """The mean of the parts' curves at the steps where every part has a finite value."""
    if not curves:
        return [], []
    by_step = [{s: v for s, v in zip(*c, strict=True) if math.isfinite(v)} for c in curves]
    steps = sorted(set.intersection(*(set(c) for c in by_step)))
    return steps, [statistics.fmean(c[s] for c in by_step) for s in steps]


def default_parts(accuracy_key: str = ACCURACY_KEY) -> dict[str, str]:
    """The parts of a comparison without a task in parts: the one accuracy key."""
    return {HELD_OUT: accuracy_key}


def summarize_run(
    arm: str,
    seed: int,
    rows: Sequence[Mapping[str, Any]],
    wall_s: float | None,
    accuracy_key: str = ACCURACY_KEY,
    parts: Mapping[str, str] | None = None,
) -> RunSummary:
    """A :class:`RunSummary` from one run's metrics rows (see the module docstring).

    ``parts`` (label -> metric key) default to ``{"held-out": accuracy_key}``."""
    parts = parts or default_parts(accuracy_key)
    part_curves = {label: series(rows, key) for label, key in parts.items()}
    accuracy = overall_curve(list(part_curves.values()))
    lengths = series(rows, names.ONLINE_LENGTH)[1]
    times = _finite(series(rows, names.STEP_TIME)[1])
    return RunSummary(
        arm=arm,
        seed=seed,
        final_accuracy=final_value(accuracy),
        part_accuracy={label: final_value(c) for label, c in part_curves.items()},
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
    overall = interval(_finite([r.final_accuracy for r in runs]))
    labels = list(runs[0].part_accuracy) if runs else []
    parts = {}
    for label in labels:
        values = [r.part_accuracy.get(label) for r in runs]
        part = interval(_finite(values))
        parts[label] = {"values": values, **_interval_dict(part)}
    late_mean, late_std = mean_std([r.late_accuracy for r in runs])
    return ArmSummary(
        arm=arm,
        seeds=[r.seed for r in runs],
        final_accuracy=[r.final_accuracy for r in runs],
        accuracy_mean=accuracy_mean,
        accuracy_std=accuracy_std,
        accuracy_ci95=None if overall is None else overall.half_width,
        parts=parts,
        late_accuracy=[r.late_accuracy for r in runs],
        late_mean=late_mean,
        late_std=late_std,
        steps_to_90=[r.steps_to_90 for r in runs],
        steps_to_90_mean=_mean([r.steps_to_90 for r in runs]),
        mean_response_length=_mean([r.mean_response_length for r in runs]),
        wall_s_mean=_mean([r.wall_s for r in runs]),
        train_time_s_mean=statistics.fmean([r.train_time_s for r in runs]) if runs else 0.0,
    )


def _interval_dict(value: Interval | None) -> dict[str, float | None]:
    if value is None:
        return {"mean": None, "ci95": None}
    return {"mean": value.mean, "ci95": value.half_width}


def versus_reference(
    runs: Sequence[RunSummary], reference: Sequence[RunSummary]
) -> dict[str, PairedVerdict]:
    """Paired verdicts against the reference arm's runs: ``overall`` and one per part."""

    def by_seed(items: Sequence[RunSummary], label: str | None) -> dict[int, float]:
        out = {}
        for r in items:
            value = r.final_accuracy if label is None else r.part_accuracy.get(label)
            if value is not None and math.isfinite(value):
                out[r.seed] = value
        return out

    labels = list(runs[0].part_accuracy) if runs else []
    verdicts = {"overall": paired_verdict(by_seed(runs, None), by_seed(reference, None))}
    for label in labels:
        verdicts[label] = paired_verdict(by_seed(runs, label), by_seed(reference, label))
    return verdicts


def _verdict_dict(verdict: PairedVerdict) -> dict[str, Any]:
    return {
        "seeds": verdict.seeds,
        "differences": verdict.differences,
        **_interval_dict(verdict.difference),
        "verdict": verdict.verdict,
    }


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


def _ci(mean: float | None, half: float | None) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.1f}" + ("" if half is None else f" ± {100 * half:.1f}")


def _diff(verdict: PairedVerdict | None) -> str:
    if verdict is None or verdict.difference is None:
        return "-"
    d = verdict.difference
    half = "" if d.half_width is None else f" ± {100 * d.half_width:.1f}"
    return f"{100 * d.mean:+.1f}{half}"


def markdown_table(
    arms: Sequence[ArmSummary],
    base: RunSummary | None = None,
    chosen: Mapping[str, str] | None = None,
    knob: str = "setting",
    verdicts: Mapping[str, Mapping[str, PairedVerdict]] | None = None,
    reference: str | None = None,
) -> str:
    """One row per arm: final accuracy (mean ± the 95% t half-width over seeds), each part's
    when there are several, the paired difference to the reference arm and its verdict, the
    per-seed values, response length and wall time.

    Accuracies are in percent here (the unit is in the headers), fractions in
    ``results.json``. ``base`` gives a first row (the accuracy every arm started from),
    ``chosen`` (arm -> value) a column ``knob`` with each arm's selected setting, and
    ``verdicts`` (arm -> ``overall`` / part -> verdict) the columns against ``reference``.
    """
    labels = list(arms[0].parts) if arms else []
    parts = labels if len(labels) > 1 else []
    head = ["arm"] + ([knob] if chosen else []) + ["accuracy (%, mean ± 95% CI)"]
    head += [f"{label} (%)" for label in parts]
    if verdicts is not None and reference is not None:
        head += [f"vs {reference} (points, 95% CI)", "verdict"]
    head += ["final, per seed (%)", "response length (tokens)", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if base is not None:
        cells = ["(base model: start)"] + ([""] if chosen else []) + [_pct(base.final_accuracy)]
        cells += [_pct(base.part_accuracy.get(label)) for label in parts]
        cells += [""] * (len(head) - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    for a in arms:
        cells = [a.arm] + ([chosen.get(a.arm, "-")] if chosen else [])
        cells.append(_ci(a.accuracy_mean, a.accuracy_ci95))
        cells += [_ci(a.parts[label]["mean"], a.parts[label]["ci95"]) for label in parts]
        if verdicts is not None and reference is not None:
            mine = verdicts.get(a.arm, {}).get("overall")
            cells += ["(reference)", ""] if a.arm == reference else [_diff(mine), _word(mine)]
        cells.append(", ".join(_pct(v) for v in a.final_accuracy))
        cells += [_fmt(a.mean_response_length, 1), _fmt(a.wall_s_mean, 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _word(verdict: PairedVerdict | None) -> str:
    return "-" if verdict is None else verdict.verdict


def parts_verdict_table(
    arms: Sequence[ArmSummary],
    verdicts: Mapping[str, Mapping[str, PairedVerdict]],
    reference: str,
) -> str:
    """Per part, each arm's paired difference to ``reference`` (points, 95% CI) and verdict."""
    labels = list(arms[0].parts) if arms else []
    head = ["arm"] + [f"{label}: vs {reference} (points)" for label in labels]
    head += [f"{label}: verdict" for label in labels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in arms:
        if a.arm == reference:
            continue
        mine = verdicts.get(a.arm, {})
        cells = [a.arm] + [_diff(mine.get(label)) for label in labels]
        cells += [_word(mine.get(label)) for label in labels]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
    parts: Mapping[str, str] | None = None,
    reference: str | None = None,
    selection: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Writes ``results.json``, ``results.md`` and ``plots/*.png`` under ``out_dir``.

    Args:
        runs: arm -> seed -> run directory (each with a ``metrics.jsonl``), in table order.
        wall_times: run directory -> wall seconds (None when unknown).
        out_dir: where the outputs go.
        accuracy_key: the metric of the accuracy columns when ``parts`` is None.
        base_run: the base-model run every arm started from (its final accuracy is the
            table's first row and ``base_model`` in the document), or None.
        info: recorded as ``info`` (e.g. date, versions, device, wall time).
        parts: part label -> metric key; the accuracy is the mean over the parts (default:
            ``accuracy_key`` alone).
        reference: the arm every other is compared with (paired, per seed), or None.
        selection: the per-arm setting selection (``sweep.select``'s document), recorded
            as ``selection`` and shown as a column.

    Returns:
        The document written to ``results.json``: ``info``, ``base_model``, ``parts``,
        ``reference``, ``selection``, ``arms`` (per arm its summary, ``versus_reference``
        and, under ``runs``, each seed's summary and raw curves) and ``mean_curves`` (arm ->
        key -> steps and values); plus ``table`` (the markdown) and ``plots`` (PNG paths).
    """
    parts = dict(parts or default_parts(accuracy_key))
    summaries, document_arms, curves, per_arm_runs = [], {}, {}, {}
    for arm, seeds in runs.items():
        rows = {seed: read_metrics(path / "metrics.jsonl") for seed, path in seeds.items()}
        per_run = [
            summarize_run(arm, seed, rows[seed], wall_times.get(path), accuracy_key, parts)
            for seed, path in seeds.items()
        ]
        per_arm_runs[arm] = per_run
        summary = summarize_arm(arm, per_run)
        summaries.append(summary)
        keys = dict.fromkeys((*parts.values(), *CURVE_KEYS))
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
    verdicts = None
    if reference is not None and reference in per_arm_runs:
        verdicts = {
            arm: versus_reference(per_run, per_arm_runs[reference])
            for arm, per_run in per_arm_runs.items()
        }
        for arm, per_part in verdicts.items():
            document_arms[arm]["versus_reference"] = {
                k: _verdict_dict(v) for k, v in per_part.items()
            }
    base: dict[str, Any] | None = None
    base_summary = None
    if base_run is not None:
        base_rows = read_metrics(base_run / "metrics.jsonl")
        base_summary = summarize_run("base_model", 0, base_rows, None, accuracy_key, parts)
        curve = overall_curve([series(base_rows, key) for key in parts.values()])
        base = {
            "final_accuracy": base_summary.final_accuracy,
            "part_accuracy": base_summary.part_accuracy,
            "curve": _json_curve(curve),
        }
    chosen = None if selection is None else selection.get("chosen_labels")
    knob = "setting" if selection is None else str(selection.get("name", "setting"))
    table = markdown_table(summaries, base_summary, chosen, knob, verdicts, reference)
    if verdicts is not None and reference is not None and len(parts) > 1:
        table += "\n" + parts_verdict_table(summaries, verdicts, reference)
    document: dict[str, Any] = {
        "info": dict(info or {}),
        "accuracy_key": accuracy_key,
        "parts": parts,
        "reference": reference,
        "selection": dict(selection) if selection is not None else None,
        "base_model": base,
        "arms": document_arms,
        "mean_curves": {
            arm: {k: _json_curve(c) for k, c in per_key.items()} for arm, per_key in curves.items()
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(document, indent=1, allow_nan=False))
    (out_dir / "results.md").write_text(table)
    plots = plot_mean_curves(curves, out_dir / "plots", parts)
    chart = plot_final_accuracy(
        _final_points(summaries),
        ["overall", *parts] if len(parts) > 1 else list(parts),
        out_dir / "plots" / "final_accuracy.png",
        None if base_summary is None else _base_points(base_summary),
        reference,
    )
    plots += [] if chart is None else [chart]
    return {**document, "table": table, "plots": [str(p) for p in plots]}


def _final_points(
    arms: Sequence[ArmSummary],
) -> dict[str, dict[str, tuple[float | None, float | None]]]:
    """Per arm, per panel (``overall`` and each part) the mean and 95% half-width."""
    points = {}
    for a in arms:
        panel = {"overall": (a.accuracy_mean, a.accuracy_ci95)}
        panel.update({label: (part["mean"], part["ci95"]) for label, part in a.parts.items()})
        points[a.arm] = panel
    return points


def _base_points(base: RunSummary) -> dict[str, float | None]:
    return {"overall": base.final_accuracy, **base.part_accuracy}


def plot_mean_curves(
    curves: Mapping[str, Mapping[str, Curve]], out_dir: Path, parts: Mapping[str, str]
) -> list[Path]:
    """One PNG per :data:`COMPARE_PLOTS` entry, one line per arm (the accuracy plot once
    per part: ``accuracy.png`` for a single part, ``accuracy_<label>.png`` for several);
    plots without data are skipped."""
    plots = dict(COMPARE_PLOTS)
    for label, key in parts.items():
        name = "accuracy.png" if len(parts) == 1 else f"accuracy_{label}.png"
        plots[name] = (f"Accuracy, {label} (mean over seeds)", key)
    written = []
    for name, (title, key) in plots.items():
        runs = {
            arm: [{"step": s, key: v} for s, v in zip(*per_key[key], strict=True)]
            for arm, per_key in curves.items()
            if key in per_key
        }
        path = plot_comparison(runs, key, out_dir / name, title=title)
        if path is not None:
            written.append(path)
    return written
