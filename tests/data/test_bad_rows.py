"""Bad rows: exact messages (file, 1-based row, field), skip mode, and unparsable golds."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_red.data import DataError, Problem, check_golds, load_problems
from tests.data.helpers import write_jsonl, write_parquet

GOOD = {"problem": "What is 1 + 1?", "answer": "2", "distill": "1 + 1 = \\boxed{2}"}

# (the bad second row, the layout, require_teacher, the message after "<file>: row 2: ")
BAD_ROWS = [
    ('{"problem": "P", "answer": ', "red", False, "invalid JSON: Expecting value"),
    ({"problem": "P", "distill": "t"}, "red", False, "missing field 'answer'"),
    ({"answer": "1"}, "red", False, "missing field 'problem'"),
    (
        {"problem": 12, "answer": "1"},
        "red",
        False,
        "field 'problem': expected a string or a list of chat messages, got int",
    ),
    ({"problem": "  \n", "answer": "1"}, "red", False, "field 'problem': empty question"),
    ({"problem": None, "answer": "1"}, "red", False, "field 'problem': empty question"),
    ({"problem": "P", "answer": None}, "red", False, "field 'answer': gold answer is null"),
    ({"problem": "P", "answer": " "}, "red", False, "field 'answer': empty gold answer"),
    ({"problem": "P", "answer": []}, "red", False, "field 'answer': empty list, no gold answer"),
    (
        {"problem": "P", "answer": {"value": 1}},
        "red",
        False,
        "field 'answer': gold answer must be a string or a number, got dict",
    ),
    (
        {"problem": "P", "answer": True},
        "red",
        False,
        "field 'answer': gold answer must be a string or a number, got bool",
    ),
    ({"problem": "P", "answer": "1"}, "red", True, "missing teacher field 'distill'"),
    (
        {"problem": "P", "answer": "1", "distill": ""},
        "red",
        True,
        "missing teacher field 'distill'",
    ),
    (
        {"problem": "P", "answer": "1", "distill": 3},
        "red",
        False,
        "field 'distill': expected a string or a list of chat messages, got int",
    ),
    ([1, 2], "red", False, "expected an object, got list"),
    (
        {"question": "Q", "answer": "no marker here"},
        "gsm8k",
        False,
        "field 'answer': no line starting with '####' holds the gold",
    ),
    (
        {"prompt": [{"role": "user", "content": "Q"}], "reward_model": {"style": "rule"}},
        "luffy",
        False,
        "missing field 'reward_model.ground_truth'",
    ),
    (
        {"prompt": [{"role": "system", "content": "S"}], "reward_model": {"ground_truth": "1"}},
        "luffy",
        False,
        "field 'prompt': empty question",
    ),
    (
        {"prompt": ["Q"], "reward_model": {"ground_truth": "1"}},
        "luffy",
        False,
        "field 'prompt': expected a string or a list of chat messages, got a list holding str",
    ),
]


def _first_good(layout: str) -> dict:
    if layout == "gsm8k":
        return {"question": "Q", "answer": "1 + 1\n#### 2"}
    if layout == "luffy":
        return {"prompt": [{"role": "user", "content": "Q"}], "reward_model": {"ground_truth": "2"}}
    return GOOD


@pytest.mark.parametrize(("bad", "layout", "require_teacher", "detail"), BAD_ROWS)
def test_bad_row_message(
    tmp_path: Path, bad: object, layout: str, require_teacher: bool, detail: str
) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [_first_good(layout), bad])
    with pytest.raises(DataError) as caught:
        load_problems(path, layout=layout, require_teacher=require_teacher)
    assert str(caught.value).startswith(f"{path}: row 2: {detail}")
    assert (caught.value.file, caught.value.row) == (str(path), 2)


def test_row_numbers_are_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"problem": "P", "answer": "1"}\n\n\n{"problem": "P"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train.jsonl: row 4: missing field 'answer'$"):
        load_problems(path, layout="math")


def test_bad_row_in_parquet(tmp_path: Path) -> None:
    rows = [{"problem": "P", "answer": "1"}, {"problem": "", "answer": "2"}]
    path = write_parquet(tmp_path / "train.parquet", rows)
    with pytest.raises(DataError, match=r"train.parquet: row 2: field 'problem': empty question"):
        load_problems(path)


def test_duplicate_uid(tmp_path: Path) -> None:
    rows = [{"problem": "P", "answer": "1", "id": 7}, {"problem": "Q", "answer": "2", "id": 7}]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError, match=r"row 2: field 'id': duplicate uid '7', first at .*:1$"):
        load_problems(path, fields={"uid": "id"})
    for sub in ("a", "b"):  # same stem in two folders: default uids collide
        (tmp_path / sub).mkdir()
        write_jsonl(tmp_path / sub / "train.jsonl", rows)
    with pytest.raises(DataError, match=r"duplicate uid 'train:1'.*set an id field"):
        load_problems(str(tmp_path / "*" / "train.jsonl"))


def test_skip_mode_counts(tmp_path: Path) -> None:
    lines = [
        GOOD,
        "{not json",
        {"problem": "P"},
        {"problem": "", "answer": "1"},
        {"problem": "P", "answer": "1"},  # no teacher: required below
        {"problem": "P", "answer": None, "distill": "t"},
        {"problem": "P", "answer": "1"},
        GOOD,
    ]
    path = write_jsonl(tmp_path / "train.jsonl", lines)
    result = load_problems(path, layout="red", on_bad_row="skip", require_teacher=True)
    assert [p.uid for p in result.problems] == ["train:1", "train:8"]
    assert len(result.skipped) == 6
    assert result.skipped[1] == f"{path}: row 3: missing field 'answer'"
    assert result.skip_counts == {
        "invalid_json": 1,
        "missing_field": 1,
        "empty_question": 1,
        "missing_teacher": 2,
        "missing_gold": 1,
    }
    relaxed = load_problems(path, layout="red", on_bad_row="skip", limit=3)
    assert [p.uid for p in relaxed.problems] == ["train:1", "train:5", "train:7"]
    with pytest.raises(ValueError, match="on_bad_row"):
        load_problems(path, on_bad_row="ignore")  # type: ignore[arg-type]


def test_check_golds_reports_unparsable(tmp_path: Path) -> None:
    problems = [
        Problem("a", "Q", "\\frac{1}{2}", None, "train.jsonl:1"),
        Problem("b", "Q", "}{", None, "train.jsonl:2"),
        Problem("c", "Q", "27.0", None, "train.jsonl:3"),
    ]
    assert check_golds(problems, num_workers=1) == [
        "train.jsonl:2: uid 'b': gold '}{' cannot be parsed by math-verify"
    ]
    assert check_golds([]) == []
