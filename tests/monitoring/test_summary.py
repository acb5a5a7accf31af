"""The end-of-run line: held-out accuracy at the start and after each stage."""

from nemo_red.monitoring.summary import accuracy_summary


def _rows(evals):
    rows = [{"step": s, "loss": 0.1} for s in range(1, 7)]
    rows += [{"step": s, "eval/accuracy": a} for s, a in evals]
    return sorted(rows, key=lambda r: r["step"])


def test_start_then_the_last_evaluation_of_each_stage():
    rows = _rows([(0, 0.0), (2, 0.25), (3, 0.5), (5, 0.7), (6, 0.875)])
    line = accuracy_summary(rows, [("sft", 3), ("red", 6)], 200, "greedy")
    assert line == (
        "held-out accuracy (200 problems, greedy): 0.0% at the start -> "
        "50.0% after sft (step 3) -> 87.5% after red (step 6)"
    )


def test_a_stage_without_evaluation_and_a_run_without_a_start_evaluation():
    rows = _rows([(2, 0.25), (6, float("nan"))])
    line = accuracy_summary(rows, [("sft", 3), ("red", 6)], 10, "greedy")
    assert line == "held-out accuracy (10 problems, greedy): 25.0% after sft (step 2)"


def test_no_held_out_evaluation_no_line():
    assert accuracy_summary(_rows([]), [("red", 6)], 10, "greedy") is None
