"""PNG plots of a run's dynamics and comparisons of runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from nemo_red.monitoring import MetricsLog
from nemo_red.monitoring.plots import (
    RUN_PLOTS,
    comparison_figure,
    flagged_steps,
    handover_steps,
    plot_comparison,
    plot_run,
    run_figure,
    series,
    sft_spans,
    y_range,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _rows(steps: int = 30) -> list[dict]:
    rows = []
    for step in range(steps):
        row = {
            "step": step,
            "time": float(step),
            "entropy/h_rl": 1.0 - step / 60,
            "entropy/h_sft": 0.8,
            "entropy/w": min(1.0, step / 20),
            "reward/online_accuracy": step / 30,
            "reward/offline_accuracy": 0.9,
            "length/online_mean": 20.0 + step,
            "length/offline_mean": 25.0,
            "online/clip_frac": None if step % 7 == 3 else 0.01,
            "offline/clip_frac": 0.02,
            "loss/total": 1.0 / (step + 1),
            "grad_norm": None if step == 5 else 2.0,
            "lr": 1e-6,
            "skipped": float(step == 5),
        }
        if step % 10 == 0:
            row["eval/accuracy"] = step / 40
            row["eval/gsm8k/accuracy"] = step / 50
            row["eval/overall/accuracy"] = step / 50
        rows.append(row)
    return rows


def test_series_missing_versus_null() -> None:
    rows = [{"step": 0, "a": 1.0}, {"step": 1}, {"step": 2, "a": None}, {"step": 3, "a": 2}]
    steps, values = series(rows, "a")
    assert steps == [0, 2, 3]
    assert values[0] == 1.0
    assert math.isnan(values[1])
    assert values[2] == 2.0


def test_plot_run_from_log(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    with MetricsLog(path) as log:
        for row in _rows():
            log.log(row.pop("step"), {k: v for k, v in row.items() if k != "time"})
    written = plot_run(path, tmp_path / "plots")
    assert [p.name for p in written] == list(RUN_PLOTS)
    for png in written:
        assert png.read_bytes().startswith(PNG_SIGNATURE)


def test_missing_and_empty_keys_are_skipped(tmp_path: Path) -> None:
    rows = [
        {"step": s, "entropy/h_rl": 1.0, "entropy/w": None, "eval/accuracy": 0.5} for s in range(4)
    ]  # no benchmark: eval/accuracy is the held-out set, not a match of eval/*/accuracy
    written = plot_run(rows, tmp_path)
    assert [p.name for p in written] == ["entropy.png", "accuracy.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accuracy.png", "entropy.png"]
    assert plot_run([], tmp_path / "none") == []


def test_plot_comparison(tmp_path: Path) -> None:
    runs = {"red": _rows(), "grpo": [dict(r, **{"entropy/w": 0.0}) for r in _rows(20)]}
    out = plot_comparison(runs, "reward/online_accuracy", tmp_path / "cmp" / "acc.png")
    assert out is not None
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    smooth = plot_comparison(runs, "online/clip_frac", tmp_path / "clip.png", smoothing=0.6)
    assert smooth is not None
    assert smooth.exists()
    assert plot_comparison(runs, "absent/key", tmp_path / "absent.png") is None
    assert not (tmp_path / "absent.png").exists()
    with pytest.raises(ValueError, match="smoothing"):
        plot_comparison(runs, "entropy/w", tmp_path / "w.png", smoothing=1.0)


def _integer_ticks(ax) -> bool:
    from matplotlib.ticker import MaxNLocator

    locator = ax.xaxis.get_major_locator()
    return isinstance(locator, MaxNLocator) and locator._integer


def test_step_axis_has_integer_ticks() -> None:
    rows = _rows(4)  # few steps: a default locator would tick at 0.5, 1.5, ...
    for plot in RUN_PLOTS.values():
        fig = run_figure(rows, plot)
        assert fig is not None
        for ax in fig.axes:
            assert _integer_ticks(ax), plot.title
            fig.canvas.draw()
            assert all(t == int(t) for t in ax.get_xticks())
    fig = comparison_figure({"a": rows, "b": _rows(3)}, "entropy/w")
    assert fig is not None
    assert _integer_ticks(fig.axes[0])
    fig.canvas.draw()
    assert all(t == int(t) for t in fig.axes[0].get_xticks())


def _lines(ax) -> dict[str, list[float]]:
    """The axes' lines by legend label, their y values."""
    return {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}


def test_accuracy_in_percent_teacher_on_its_own_axes() -> None:
    rows = [
        {"step": 1, "reward/offline_accuracy": 1.0},
        {"step": 2, "reward/online_accuracy": 0.25, "reward/offline_accuracy": 1.0},
        {"step": 3, "reward/online_accuracy": 0.5, "reward/offline_accuracy": 0.75},
        {"step": 3, "eval/accuracy": 0.05},
    ]
    fig = run_figure(rows, RUN_PLOTS["accuracy.png"])
    assert fig is not None
    main, teacher = fig.axes
    assert _lines(main) == {"held-out": [5.0], "online rollouts": [25.0, 50.0]}
    assert _lines(teacher) == {"teacher trace": [100.0, 100.0, 75.0]}
    assert "%" in main.get_ylabel()
    assert "%" in teacher.get_ylabel()
    # the teacher's 100% does not stretch the accuracy axis
    low, high = main.get_ylim()
    assert -5.0 < low <= 0.0
    assert 50.0 <= high < 60.0
    widths = {line.get_label(): line.get_linewidth() for line in main.get_lines()}
    assert widths["held-out"] > widths["online rollouts"]  # the line to read first


def test_constant_teacher_accuracy_reads_flat() -> None:
    rows = [{"step": s, "reward/offline_accuracy": 1.0} for s in range(1, 6)]
    fig = run_figure(rows, RUN_PLOTS["accuracy.png"])
    assert fig is not None
    (teacher,) = fig.axes  # no online or held-out accuracy: their panel is left out
    low, high = teacher.get_ylim()
    assert low <= 80.0 < 100.0 < high


def test_benchmarks_plot_one_line_per_benchmark(tmp_path: Path) -> None:
    rows = [
        {"step": 5, "eval/accuracy": 0.1, "eval/math/accuracy": 0.2, "eval/aime/accuracy": 0.0},
        {"step": 10, "eval/math/accuracy": 0.3, "eval/overall/accuracy": 0.2},
    ]
    fig = run_figure(rows, RUN_PLOTS["benchmarks.png"])
    assert fig is not None
    assert _lines(fig.axes[0]) == {"overall": [20.0], "aime": [0.0], "math": [20.0, 30.0]}
    assert [p.name for p in plot_run(rows, tmp_path)] == ["accuracy.png", "benchmarks.png"]
    assert run_figure([{"step": 1, "eval/accuracy": 0.5}], RUN_PLOTS["benchmarks.png"]) is None


def test_single_step_gets_an_integer_tick() -> None:
    fig = run_figure([{"step": 3, "entropy/w": 0.5}], RUN_PLOTS["weight.png"])
    assert fig is not None
    fig.canvas.draw()
    low, high = fig.axes[0].get_xlim()
    assert [t for t in fig.axes[0].get_xticks() if low <= t <= high] == [3.0]


def test_optimization_plot_log_only_for_positive_values(tmp_path: Path) -> None:
    rows = [
        {"step": s, "loss/total": 1.0 - s / 10, "grad_norm": 0.5 + s, "lr": s * 1e-6}
        for s in range(1, 6)
    ]
    rows[2]["grad_norm"], rows[2]["skipped"] = None, 1.0
    fig = run_figure(rows, RUN_PLOTS["optimization.png"])
    assert fig is not None
    _loss, grad, lr = fig.axes
    assert [ax.get_yscale() for ax in fig.axes] == ["linear", "log", "log"]
    assert _lines(grad)["skipped (1)"] == [0.03]  # the skipped step is marked, x = step 3
    assert list(grad.get_lines()[1].get_xdata()) == [3]
    assert _lines(lr)["lr"] == pytest.approx([1e-6, 2e-6, 3e-6, 4e-6, 5e-6])
    rows[0]["lr"] = 0.0  # warm-up from 0: no log axis
    fig = run_figure(rows, RUN_PLOTS["optimization.png"])
    assert fig is not None
    assert fig.axes[2].get_yscale() == "linear"
    assert "optimization.png" in [p.name for p in plot_run(rows, tmp_path)]


def test_optimization_panels_only_for_logged_keys(tmp_path: Path) -> None:
    fig = run_figure([{"step": 1, "lr": 1e-5, "skipped": 0.0}], RUN_PLOTS["optimization.png"])
    assert fig is not None
    assert [ax.get_ylabel() for ax in fig.axes] == ["learning rate"]
    # a flag alone is not data: no grad-norm panel, no plot
    assert run_figure([{"step": 1, "skipped": 1.0}], RUN_PLOTS["optimization.png"]) is None
    assert plot_run([{"step": 1, "skipped": 1.0, "entropy/w": 0.5}], tmp_path) == [
        tmp_path / "weight.png"
    ]


def test_flagged_steps() -> None:
    rows = [{"step": 1, "skipped": 0.0}, {"step": 2}, {"step": 3, "skipped": 1.0}]
    assert flagged_steps(rows, "skipped") == [3]
    assert flagged_steps([{"step": 1, "skipped": None}], "skipped") == []


def _stage_rows(stages: list[float | None]) -> list[dict]:
    return [{"step": s, "stage/sft_only": v} for s, v in enumerate(stages, start=1)]


def test_handover_steps_from_stage_key() -> None:
    assert handover_steps(_stage_rows([1.0, 1.0, 0.0, 0.0])) == [3]
    assert handover_steps(_stage_rows([1.0, None, 0.0])) == [3]  # null: passed over
    assert handover_steps(_stage_rows([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])) == [4, 6]
    assert handover_steps(_stage_rows([1.0, 1.0])) == []  # SFT only
    assert handover_steps(_stage_rows([0.0, 0.0])) == []  # RL only
    assert handover_steps([{"step": 1}, {"step": 2, "stage/sft_only": 0.0}]) == []


def test_sft_spans() -> None:
    assert sft_spans(_stage_rows([1.0, 1.0, 0.0, 0.0])) == [(1, 3)]
    assert sft_spans(_stage_rows([0.0, 1.0, 0.0, 1.0, 1.0])) == [(2, 3), (4, 5)]
    assert sft_spans(_stage_rows([0.0, 0.0])) == []


def _vertical_lines(ax) -> list[tuple[str, float]]:
    """The axes' vertical lines (axvline: two equal x in data, y in axes coordinates)."""
    return [
        (line.get_label(), line.get_xdata()[0])
        for line in ax.get_lines()
        if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1]
    ]


def test_handover_marked_on_every_panel() -> None:
    rows = [
        {"step": s, "stage/sft_only": float(s <= 150), "reward/offline_accuracy": 1.0}
        for s in range(1, 201)
    ]
    for row in rows[150:]:
        row["reward/online_accuracy"] = 0.3
    fig = run_figure(rows, RUN_PLOTS["accuracy.png"])
    assert fig is not None
    main, teacher = fig.axes
    assert _vertical_lines(main) == [("SFT → RL", 151)]
    assert [x for _, x in _vertical_lines(teacher)] == [151]
    legend = [text.get_text() for text in main.get_legend().get_texts()]
    assert "SFT → RL" in legend
    assert "SFT stage" in legend
    assert [p.get_label() for p in main.patches] == ["SFT stage"]  # the shaded SFT steps
    assert all(s == int(s) for s in main.get_xticks())


def test_stage_marks_do_not_widen_the_step_axis() -> None:
    rows = _stage_rows([1.0] * 50 + [0.0] * 10)
    for row in rows[50:]:
        row["online/clip_frac"] = 0.01  # RL only
    fig = run_figure(rows, RUN_PLOTS["clip_fraction.png"])
    assert fig is not None
    low, high = fig.axes[0].get_xlim()
    assert 45 < low < 51 < 60 <= high


def test_comparison_accuracy_in_percent() -> None:
    runs = {"red": [{"step": 1, "eval/accuracy": 0.05}, {"step": 2, "eval/accuracy": 0.1}]}
    fig = comparison_figure(runs, "eval/accuracy")
    assert fig is not None
    assert _lines(fig.axes[0]) == {"red": [5.0, 10.0]}
    assert fig.axes[0].get_ylabel() == "eval/accuracy (%)"
    runs = {"red": [{"step": 1, "entropy/w": 0.5}]}
    fig = comparison_figure(runs, "entropy/w")
    assert fig is not None
    assert _lines(fig.axes[0]) == {"red": [0.5]}  # not a fraction: as logged
    fig = comparison_figure(runs, "entropy/w", percent=True)
    assert fig is not None
    assert _lines(fig.axes[0]) == {"red": [50.0]}


def test_y_range() -> None:
    accuracy, teacher = RUN_PLOTS["accuracy.png"].panels
    assert y_range(accuracy, 0.0, 0.0) == (0.0, 10.0)  # never-right model: a flat 0, not noise
    assert y_range(accuracy, 5.0, 7.0) == (0.0, 10.0)
    assert y_range(accuracy, 30.0, 45.0) == (0.0, 45.0)  # from 0: the gain reads at scale
    assert y_range(teacher, 100.0, 100.0) == (80.0, 100.0)
    assert y_range(teacher, 50.0, 100.0) == (50.0, 100.0)
    entropy = RUN_PLOTS["entropy.png"].panels[0]
    assert y_range(entropy, 0.2, 0.3) is None  # matplotlib's own
