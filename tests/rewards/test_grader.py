"""Grading quality and the reasons reported, through one shared pool of workers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nemo_red.rewards import (
    GradeReason,
    GradeResult,
    MathGrader,
    find_unparsable_golds,
    grade_one,
)
from nemo_red.rewards.verification import MAX_ANSWER_CHARS


@pytest.fixture(scope="module")
def grader() -> Iterator[MathGrader]:
    with MathGrader(num_workers=2) as shared:
        yield shared


EQUIVALENT = [
    ("0.5", "\\frac{1}{2}"),
    ("1/2", "\\dfrac12"),
    ("\\left(3, \\frac{\\pi}{2}\\right)", "(3,\\frac{\\pi}{2})"),
    ("27", 27.0),
    ("27.0", "27"),
    ("1+x^2", "x^2+1"),
    ("\\frac{\\sqrt2}{2}", "\\sqrt{2}/2"),
    ("[1,3)", "[1, 3)"),
    ("(-\\infty, 2] \\cup (3,\\infty)", "(-\\infty,2]\\cup(3,\\infty)"),
    ("\\{2,1\\}", "\\{1,2\\}"),
    ("\\frac{3}{4}", "0.75"),
    ("2\\sqrt{3}", "\\sqrt{12}"),
    ("10\\%", "10"),
    ("\\text{(B)}", "B"),
    ("x=3", "3"),
    ("-\\frac{1}{3}", "-1/3"),
    ("1,000", "1000"),
    ("\\pi/2", "\\frac{\\pi}{2}"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
]

NOT_EQUIVALENT = [
    ("0.51", "1/2"),
    ("(2,1)", "(1,2)"),
    ("x^3", "x^2"),
    ("28", 27.0),
    ("-5", "5"),
    ("\\frac{\\pi}{3}", "\\frac{\\pi}{2}"),
    ("[1,3]", "[1,3)"),
    ("\\text{(C)}", "B"),
]


def _response(answer: str) -> str:
    return f"Some reasoning... so the answer is \\boxed{{{answer}}}."


@pytest.mark.parametrize(("answer", "gold"), EQUIVALENT)
def test_equivalent_answers_are_correct(grader: MathGrader, answer: str, gold: object) -> None:
    [result] = grader.grade([_response(answer)], [gold])
    assert result == GradeResult(1.0, GradeReason.CORRECT, answer)
    assert result.valid


@pytest.mark.parametrize(("answer", "gold"), NOT_EQUIVALENT)
def test_different_answers_are_wrong(grader: MathGrader, answer: str, gold: object) -> None:
    [result] = grader.grade([_response(answer)], [gold])
    assert result == GradeResult(0.0, GradeReason.WRONG, answer)


def test_reasons(grader: MathGrader) -> None:
    long_answer = "1+" * MAX_ANSWER_CHARS + "1"
    cases = [
        ("I do not know.", "5", GradeReason.NO_ANSWER, None),
        ("\\boxed{   }", "5", GradeReason.NO_ANSWER, "   "),
        ("\\boxed{5", "5", GradeReason.NO_ANSWER, None),
        (None, "5", GradeReason.NO_ANSWER, None),
        ("\\boxed{5}", "", GradeReason.UNPARSABLE_GOLD, "5"),
        ("\\boxed{5}", "\\text{}", GradeReason.UNPARSABLE_GOLD, "5"),
        ("\\boxed{\\text{}}", "5", GradeReason.UNPARSABLE_ANSWER, "\\text{}"),
        (f"\\boxed{{{long_answer}}}", "5", GradeReason.UNPARSABLE_ANSWER, long_answer),
    ]
    results = grader.grade([c[0] for c in cases], [c[1] for c in cases])  # type: ignore[misc]
    assert [(r.reason, r.extracted) for r in results] == [(c[2], c[3]) for c in cases]
    assert all(r.reward == 0.0 for r in results)
    assert [r.valid for r in results] == [c[2] is not GradeReason.UNPARSABLE_GOLD for c in cases]


def test_unparsable_gold_is_reported_whatever_the_response() -> None:
    for response in ["no answer at all", "\\boxed{\\text{(A)}}", "\\boxed{\\text{}}", ""]:
        result = grade_one(response, "", timeout_s=5.0)
        assert result.reason is GradeReason.UNPARSABLE_GOLD
        assert not result.valid


def test_results_keep_input_order_and_stats_count(grader: MathGrader) -> None:
    before = grader.stats
    responses = [_response(str(i if i % 3 else i + 1)) for i in range(60)]
    golds = [str(i) for i in range(60)]
    results = grader.grade(responses, golds)
    assert [r.reason for r in results] == [
        GradeReason.CORRECT if i % 3 else GradeReason.WRONG for i in range(60)
    ]
    assert [r.extracted for r in results] == [str(i if i % 3 else i + 1) for i in range(60)]
    after = grader.stats
    assert after[GradeReason.CORRECT] - before[GradeReason.CORRECT] == 40
    assert after[GradeReason.WRONG] - before[GradeReason.WRONG] == 20


def test_input_validation(grader: MathGrader) -> None:
    with pytest.raises(ValueError, match="differ in length"):
        grader.grade(["\\boxed{1}"], ["1", "2"])
    assert grader.grade([], []) == []


def test_think_split_grading(grader: MathGrader) -> None:
    response = "<think>perhaps \\boxed{4}</think> The answer is \\boxed{5}."
    unfinished = "<think>perhaps \\boxed{5} and then"
    assert grade_one(response, "5", think_split=True).reason is GradeReason.CORRECT
    assert grade_one(unfinished, "5", think_split=True).reason is GradeReason.NO_ANSWER
    assert grade_one(unfinished, "5", think_split=False).reason is GradeReason.CORRECT
    assert [r.reason for r in grader.grade([unfinished], ["5"])] == [GradeReason.CORRECT]
    with MathGrader(num_workers=1, think_split=True) as thinking:
        results = thinking.grade([response, unfinished, "<think>x</think>"], ["5", "5", "5"])
    assert [r.reason for r in results] == [
        GradeReason.CORRECT,
        GradeReason.NO_ANSWER,
        GradeReason.NO_ANSWER,
    ]


def test_find_unparsable_golds(grader: MathGrader) -> None:
    golds = ["1", "", "\\text{}", 27.0, "x^2+1", "-1./3", "\\frac{1}{2}"]
    assert grader.find_unparsable_golds(golds) == [1, 2]
    # "-1./3" only survives as raw text: an answer "-1/3" would be graded wrong.
    assert grader.find_unparsable_golds(golds, strict=True) == [1, 2, 5]
    assert find_unparsable_golds(golds, grader=grader) == [1, 2]
    assert find_unparsable_golds(golds, num_workers=1) == [1, 2]


def test_closed_grader_refuses_work() -> None:
    grader = MathGrader(num_workers=1)
    grader.close()
    grader.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        grader.grade(["\\boxed{1}"], ["1"])
