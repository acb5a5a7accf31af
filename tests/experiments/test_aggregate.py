"""Aggregation math of a comparison on hand-made metrics: means, stds, steps to 90%."""

import json
import math

import pytest

from nemo_red.experiments.aggregate import (
    aggregate,
    late_value,
    markdown_table,
    mean_curve,
    mean_std,
    steps_to_fraction,
    summarize_arm,
    summarize_run,
)


def _rows(accuracy: dict[int, float], lengths=(10.0, 20.0), step_time=0.5):
    rows = []
    for step in range(1, max(accuracy) + 1):
        row = {"step": step, "time/step": step_time, "length/online_mean": lengths[step % 2]}
        if step in accuracy:
            row["eval/accuracy"] = accuracy[step]
        rows.append(row)
    return rows


def test_mean_and_sample_std_by_hand():
    mean, std = mean_std([0.2, 0.4, 0.6])
    assert mean == pytest.approx(0.4)
    assert std == pytest.approx(0.2)  # sqrt(((-.2)^2 + 0 + .2^2) / 2)
    assert mean_std([0.5]) == (0.5, 0.0)
    assert mean_std([None, float("nan")]) == (None, None)
    assert mean_std([None, 0.3]) == (0.3, 0.0)


def test_steps_to_ninety_percent_of_the_final_value():
    # final 0.5 -> target 0.45: first reached at step 30 (0.46), not 20 (0.44)
    assert steps_to_fraction(([10, 20, 30, 40], [0.1, 0.44, 0.46, 0.5])) == 30
    # a peak before the end counts when it reaches 90% of the final value
    assert steps_to_fraction(([10, 20, 30], [0.6, 0.2, 0.6])) == 10
    assert steps_to_fraction(([10, 20], [0.0, 0.0])) is None  # nothing learned
    assert steps_to_fraction(([], [])) is None
    assert steps_to_fraction(([10, 20, 30], [0.5, 1.0, math.nan])) == 20  # last finite = 1.0


def test_late_value_is_the_mean_of_the_last_three_finite_values():
    assert late_value(([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.7])) == pytest.approx(0.4)
    assert late_value(([1, 2, 3, 4], [0.2, 0.3, 0.7, math.nan])) == pytest.approx(0.4)
    assert late_value(([1, 2], [0.2, 0.4]), count=1) == pytest.approx(0.4)
    assert late_value(([], [])) is None


def test_run_and_arm_summaries_by_hand():
    run1 = summarize_run("red", 1, _rows({2: 0.2, 4: 0.5}), wall_s=12.0)
    assert run1.final_accuracy == 0.5
    assert run1.late_accuracy == pytest.approx(0.35)  # both evaluations: (0.2 + 0.5) / 2
    assert run1.steps_to_90 == 4
    assert run1.mean_response_length == pytest.approx(15.0)  # 20, 10, 20, 10
    assert run1.train_time_s == pytest.approx(2.0)
    assert run1.steps == 4
    run2 = summarize_run("red", 2, _rows({2: 0.3, 4: 0.3}), wall_s=None)
    assert run2.steps_to_90 == 2
    arm = summarize_arm("red", [run1, run2])
    assert arm.final_accuracy == [0.5, 0.3]
    assert arm.accuracy_mean == pytest.approx(0.4)
    assert arm.accuracy_std == pytest.approx(math.sqrt(0.02))  # ((.1)^2 + (.1)^2) / 1
    assert arm.late_accuracy == [pytest.approx(0.35), pytest.approx(0.3)]
    assert arm.late_mean == pytest.approx(0.325)
    assert arm.late_std == pytest.approx(math.sqrt(2 * 0.025**2))
    assert arm.steps_to_90_mean == 3.0
    assert arm.wall_s_mean == 12.0  # unknown wall times are left out
    assert arm.accuracy_ci95 == pytest.approx(12.706 * math.sqrt(0.02) / math.sqrt(2))
    assert arm.parts == {
        "held-out": {"values": [0.5, 0.3], "mean": pytest.approx(0.4), "ci95": arm.accuracy_ci95}
    }
    table = markdown_table([arm])
    assert table.splitlines()[0] == (
        "| arm | accuracy (%, mean ± 95% CI) | final, per seed (%) "
        "| response length (tokens) | wall s |"
    )
    assert table.splitlines()[2] == "| red | 40.0 ± 127.1 | 50.0, 30.0 | 15.0 | 12.0 |"
    with_base = markdown_table([arm], base=run2).splitlines()
    assert with_base[2] == "| (base model: start) | 30.0 |  |  |  |"
    assert with_base[3] == table.splitlines()[2]


def test_runs_without_rollouts_or_accuracy_give_dashes():
    run = summarize_run("sft", 1, [{"step": 1, "time/step": 1.0}], wall_s=None)
    assert run.final_accuracy is None
    assert run.mean_response_length is None
    assert "| sft | - | - | - | - |" in markdown_table([summarize_arm("sft", [run])])


def test_mean_curve_averages_the_seeds_logged_at_each_step():
    curve = mean_curve([([1, 2, 3], [0.0, 1.0, math.nan]), ([2, 3], [0.5, 0.4])])
    assert curve == ([1, 2, 3], [0.0, 0.75, 0.4])


def test_aggregate_writes_json_table_and_plots(tmp_path):
    runs = {}
    for arm, finals in (("grpo", [0.2, 0.4]), ("red", [0.5, 0.7])):
        runs[arm] = {}
        for seed, final in zip((1, 2), finals, strict=True):
            run_dir = tmp_path / arm / str(seed)
            run_dir.mkdir(parents=True)
            rows = _rows({2: final / 2, 4: final})
            for row in rows:
                row.update({"entropy/h_rl": 1.0, "entropy/h_sft": 2.0, "entropy/w": 1.5})
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            runs[arm][seed] = run_dir
    document = aggregate(runs, {}, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["arms"]["red"]["accuracy_mean"] == pytest.approx(0.6)
    assert saved["arms"]["grpo"]["final_accuracy"] == [0.2, 0.4]
    assert saved["arms"]["red"]["runs"]["2"]["curves"]["eval/accuracy"] == {
        "steps": [2, 4],
        "values": [0.35, 0.7],
    }
    assert saved["mean_curves"]["grpo"]["eval/accuracy"]["values"] == pytest.approx([0.15, 0.3])
    lines = (tmp_path / "out" / "results.md").read_text().splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["grpo", "red"]
    # fractions in the file, percent in the table a person reads
    assert lines[2].startswith("| grpo | 30.0 ± 127.1 | 20.0, 40.0 |")  # t(1) = 12.706
    assert document["table"] == "\n".join(lines) + "\n"
    names = {p.rsplit("/", 1)[-1] for p in document["plots"]}
    assert names == {
        "accuracy.png",
        "entropy_h_rl.png",
        "entropy_h_sft.png",
        "weight_w.png",
        "final_accuracy.png",
    }


def _write_run(run_dir, rows):
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def test_parts_selection_and_paired_verdicts_against_the_reference(tmp_path):
    """Two parts: the run's accuracy is their mean; verdicts are paired per seed."""
    parts = {"recall": "eval/test_recall/accuracy", "extend": "eval/test_extend/accuracy"}
    finals = {  # arm -> seed -> (recall, extend)
        "red": {1: (0.8, 0.2), 2: (0.7, 0.3), 3: (0.9, 0.1)},
        "sft": {1: (0.6, 0.3), 2: (0.5, 0.4), 3: (0.7, 0.2)},  # recall -20, extend +10 each
    }
    runs = {}
    for arm, per_seed in finals.items():
        runs[arm] = {}
        for seed, (recall, extend) in per_seed.items():
            rows = [
                {"step": 1, parts["recall"]: recall / 2, parts["extend"]: 0.0},
                {"step": 2, parts["recall"]: recall, parts["extend"]: extend},
            ]
            runs[arm][seed] = _write_run(tmp_path / arm / str(seed), rows)
    base = _write_run(
        tmp_path / "base", [{"step": 5, parts["recall"]: 0.75, parts["extend"]: 0.05}]
    )
    selection = {"name": "lr", "chosen_labels": {"red": "3e-05", "sft": "1e-05"}}
    document = aggregate(
        runs, {}, tmp_path / "out", base_run=base, parts=parts, reference="red",
        selection=selection,
    )  # fmt: skip
    red, sft = document["arms"]["red"], document["arms"]["sft"]
    assert red["final_accuracy"] == pytest.approx([0.5, 0.5, 0.5])  # (recall + extend) / 2
    assert red["runs"]["1"]["part_accuracy"] == {"recall": 0.8, "extend": 0.2}
    assert sft["parts"]["recall"]["mean"] == pytest.approx(0.6)
    assert sft["parts"]["extend"]["mean"] == pytest.approx(0.3)
    versus = sft["versus_reference"]
    assert versus["recall"]["differences"] == pytest.approx([-0.2] * 3)
    assert versus["recall"]["verdict"] == "worse"
    assert versus["extend"]["verdict"] == "better"
    assert versus["overall"]["differences"] == pytest.approx([-0.05] * 3)
    assert versus["overall"]["verdict"] == "worse"
    assert red["versus_reference"]["overall"]["differences"] == [0.0, 0.0, 0.0]
    assert document["base_model"]["part_accuracy"] == {"recall": 0.75, "extend": 0.05}
    assert document["base_model"]["final_accuracy"] == pytest.approx(0.4)
    lines = document["table"].splitlines()
    assert lines[0] == (
        "| arm | lr | accuracy (%, mean ± 95% CI) | recall (%) | extend (%) "
        "| vs red (points, 95% CI) | verdict | final, per seed (%) "
        "| response length (tokens) | wall s |"
    )
    assert lines[2] == "| (base model: start) |  | 40.0 | 75.0 | 5.0 |  |  |  |  |  |"
    assert lines[3].startswith("| red | 3e-05 | 50.0 ± 0.0 | 80.0 ± 24.8 | 20.0 ± 24.8 ")
    assert "| (reference) |  |" in lines[3]
    assert lines[4].startswith("| sft | 1e-05 | 45.0 ± 0.0 | 60.0 ± 24.8 | 30.0 ± 24.8 ")
    assert "| -5.0 ± 0.0 | worse |" in lines[4]
    per_part = document["table"].split("\n\n")[1].splitlines()
    assert per_part[0] == (
        "| arm | recall: vs red (points) | extend: vs red (points) "
        "| recall: verdict | extend: verdict |"
    )
    assert per_part[2] == "| sft | -20.0 ± 0.0 | +10.0 ± 0.0 | worse | better |"
    names = {p.rsplit("/", 1)[-1] for p in document["plots"]}
    assert {"accuracy_recall.png", "accuracy_extend.png", "final_accuracy.png"} <= names
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["selection"] == selection
    assert saved["parts"] == parts


def test_final_accuracy_chart_needs_a_value(tmp_path):
    from nemo_red.experiments.charts import plot_final_accuracy

    out = tmp_path / "chart.png"
    assert plot_final_accuracy({"red": {"overall": (None, None)}}, ["overall"], out) is None
    assert not out.exists()
    points = {"red": {"overall": (0.5, 0.1)}, "sft": {"overall": (0.3, None)}}
    assert plot_final_accuracy(points, ["overall"], out, {"overall": 0.4}, "red") == out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
