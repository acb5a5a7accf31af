"""PNG plots of a run's dynamics and comparisons of runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from nemo_red.monitoring import MetricsLog
from nemo_red.monitoring.plots import (
    RUN_PLOTS,
    comparison_figure,
    plot_comparison,
    plot_run,
    run_figure,
    series,
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
        }
        if step % 10 == 0:
            row["eval/accuracy"] = step / 40
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
    ]
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


def test_single_step_gets_an_integer_tick() -> None:
    fig = run_figure([{"step": 3, "entropy/w": 0.5}], RUN_PLOTS["weight.png"])
    assert fig is not None
    fig.canvas.draw()
    low, high = fig.axes[0].get_xlim()
    assert [t for t in fig.axes[0].get_xticks() if low <= t <= high] == [3.0]
