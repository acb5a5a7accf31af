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
    table = markdown_table([arm])
    assert table.splitlines()[0] == (
        "| arm | final accuracy (%, mean ± std) | last 3 evals (%, mean ± std) "
        "| final, per seed (%) | response length (tokens) | steps to 90% | wall s |"
    )
    assert (
        table.splitlines()[2]
        == "| red | 40.0 ± 14.1 | 32.5 ± 3.5 | 50.0, 30.0 | 15.0 | 3.0 | 12.0 |"
    )
    with_base = markdown_table([arm], base_accuracy=0.25).splitlines()
    assert with_base[2] == "| (base model: start) | 25.0 | | | | | |"
    assert with_base[3] == table.splitlines()[2]


def test_runs_without_rollouts_or_accuracy_give_dashes():
    run = summarize_run("sft", 1, [{"step": 1, "time/step": 1.0}], wall_s=None)
    assert run.final_accuracy is None
    assert run.mean_response_length is None
    assert "| sft | - | - | - | - | - | - |" in markdown_table([summarize_arm("sft", [run])])


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
    assert lines[2].startswith("| grpo | 30.0 ± 14.1 | 22.5 ± 10.6 | 20.0, 40.0 |")
    assert document["table"] == "\n".join(lines) + "\n"
    names = {p.rsplit("/", 1)[-1] for p in document["plots"]}
    assert names == {"accuracy.png", "entropy_h_rl.png", "entropy_h_sft.png", "weight_w.png"}
