"""Multiple-choice items (ARC, MMLU-Pro, GPQA layouts, generated) and letter extraction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_red.data.records import DataError
from nemo_red.evaluation.choice import (
    extract_choice,
    format_choice_question,
    grade_choice,
    load_choice_items,
)
from nemo_red.rewards import GradeReason

OPTIONS = ("12", "42", "7", "0.5")


@pytest.mark.parametrize(
    ("response", "letter"),
    [
        ("so \\boxed{B}", "B"),
        ("\\boxed{(C)}", "C"),
        ("\\boxed{\\text{D}}", "D"),
        ("\\boxed{\\textbf{(A)}}", "A"),
        ("\\boxed{B. 42}", "B"),
        ("\\boxed{42}", "B"),  # an option's text
        ("The answer is (A).", "A"),
        ("the answer is: **C**", "C"),
        ("Answer: D", "D"),
        ("The correct option is B because ...", "B"),
        ("Thinking.\n\n(C)", "C"),
        ("Thinking.\nB", "B"),
        ("First the answer is (A), no wait, the answer is (D).", "D"),  # the last phrase
        ("\\boxed{C} but the answer is (A)", "C"),  # a box wins over phrases
        ("\\boxed{E}", None),  # no option E
        ("I do not know.", None),
        ("A careful look at the problem.", None),  # a capital A in prose is not an answer
        ("", None),
    ],
)
def test_extract_choice(response: str, letter: str | None) -> None:
    assert extract_choice(response, OPTIONS) == letter


def test_extract_choice_think_split() -> None:
    response = "<think>maybe \\boxed{A}</think> The answer is \\boxed{C}."
    assert extract_choice(response, OPTIONS, think_split=True) == "C"
    assert extract_choice("<think>\\boxed{A}", OPTIONS, think_split=True) is None


def test_grade_choice_reasons() -> None:
    assert grade_choice("\\boxed{B}", "B", OPTIONS).reason is GradeReason.CORRECT
    wrong = grade_choice("\\boxed{C}", "B", OPTIONS)
    assert (wrong.reason, wrong.reward, wrong.extracted) == (GradeReason.WRONG, 0.0, "C")
    assert grade_choice("no idea", "B", OPTIONS).reason is GradeReason.NO_ANSWER


def test_question_lists_lettered_options() -> None:
    text = format_choice_question("What is 6 * 7?", OPTIONS)
    assert "(A) 12\n(B) 42\n(C) 7\n(D) 0.5" in text
    assert text.startswith("What is 6 * 7?\n\n")


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_arc_layout_with_numeric_labels(tmp_path: Path) -> None:
    rows = [
        {
            "id": "q1",
            "question": "Which is a metal?",
            "choices": {"text": ["wood", "iron", "glass"], "label": ["A", "B", "C"]},
            "answerKey": "B",
        },
        {
            "id": "q2",
            "question": "Pick three.",
            "choices": {"text": ["one", "two", "three", "four"], "label": ["1", "2", "3", "4"]},
            "answerKey": "3",
        },
    ]
    items = load_choice_items(_write(tmp_path / "arc.jsonl", rows), "arc")
    assert [(i.uid, i.answer, i.options) for i in items] == [
        ("q1", "B", ("wood", "iron", "glass")),
        ("q2", "C", ("one", "two", "three", "four")),
    ]


def test_mmlu_pro_layout_ten_options(tmp_path: Path) -> None:
    options = [f"option {i}" for i in range(10)]
    row = {"question_id": 7, "question": "Which?", "options": options, "answer": "J"}
    (item,) = load_choice_items(_write(tmp_path / "mmlu.jsonl", [row]), "mmlu_pro")
    assert (item.uid, item.answer, len(item.options)) == ("7", "J", 10)
    assert extract_choice("The answer is (J).", item.options) == "J"


def test_gpqa_layout_shuffles_deterministically(tmp_path: Path) -> None:
    rows = [
        {
            "Record ID": f"r{i}",
            "Question": f"Question number {i}?",
            "Correct Answer": "right",
            "Incorrect Answer 1": "wrong 1",
            "Incorrect Answer 2": "wrong 2",
            "Incorrect Answer 3": "wrong 3",
        }
        for i in range(12)
    ]
    path = _write(tmp_path / "gpqa.jsonl", rows)
    items = load_choice_items(path, "gpqa")
    assert items == load_choice_items(path, "gpqa")  # same order every time
    for item in items:
        assert item.options["ABCD".index(item.answer)] == "right"
        assert sorted(item.options) == ["right", "wrong 1", "wrong 2", "wrong 3"]
    assert len({item.answer for item in items}) > 1  # the gold is not always "A"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"question": "Q?", "options": ["a", "b"]}, "row 1: missing field 'answer'"),
        ({"question": "Q?", "options": ["a", "b"], "answer": "C"}, "'C' is not a letter"),
        ({"question": "Q?", "options": "ab", "answer": "A"}, "field 'options': expected a list"),
        ({"options": ["a", "b"], "answer": "A"}, "missing field 'question'"),
    ],
)
def test_bad_rows_name_file_row_and_field(tmp_path: Path, row: dict, message: str) -> None:
    path = _write(tmp_path / "bad.jsonl", [{"question_id": 1, **row}])
    with pytest.raises(DataError, match=message) as info:
        load_choice_items(path, "mmlu_pro")
    assert str(path) in str(info.value)


def test_unknown_layout_lists_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid: arc, mmlu_pro, gpqa"):
        load_choice_items(_write(tmp_path / "x.jsonl", [{}]), "nope")
