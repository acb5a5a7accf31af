"""Loading problems: every layout, auto-detection, field maps, inputs and bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_red.data import (
    DataError,
    FieldMap,
    Problem,
    detect_layout,
    find_data_files,
    load_problems,
)
from nemo_red.data import loading as loading_module
from tests.data.helpers import write_jsonl, write_parquet

SYSTEM = {"role": "system", "content": "Think first."}


def _luffy_row(question: str, gold: str, trace: str, index: int) -> dict:
    return {
        "data_source": "openr1",
        "prompt": [SYSTEM, {"role": "user", "content": question}],
        "target": [{"role": "assistant", "content": trace}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": gold},
        "extra_info": {"split": "train", "index": index},
    }


def test_luffy_parquet_nested_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading_module, "_PARQUET_BATCH_ROWS", 2)  # rows span batches
    rows = [
        _luffy_row(f"What is {i} + 1?", str(i + 1), f"<think>\n{i}+1</think> {i + 1}", i)
        for i in range(5)
    ]
    rows[1]["prompt"] = [
        {"role": "user", "content": "an earlier turn"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "What is 1 + 1?"},
    ]
    path = write_parquet(tmp_path / "openr1.parquet", rows)
    result = load_problems(path)
    assert result.layout == "luffy"
    assert result.skipped == []
    assert [p.question for p in result.problems] == [f"What is {i} + 1?" for i in range(5)]
    assert [p.gold for p in result.problems] == ["1", "2", "3", "4", "5"]
    assert result.problems[3] == Problem(
        uid="openr1:4",
        question="What is 3 + 1?",
        gold="4",
        teacher="<think>\n3+1</think> 4",
        source=f"{path}:4",
    )


def test_luffy_target_as_plain_string_and_missing(tmp_path: Path) -> None:
    rows = [_luffy_row("Q1", "1", "", 0), _luffy_row("Q2", "2", "", 1)]
    rows[0]["target"] = "a plain trace \\boxed{1}"
    rows[1]["target"] = None
    result = load_problems(write_jsonl(tmp_path / "t.jsonl", rows), layout="luffy")
    assert [p.teacher for p in result.problems] == ["a plain trace \\boxed{1}", None]


def test_red_layout(tmp_path: Path) -> None:
    rows = [{"problem": "P", "answer": "\\frac{1}{2}", "distill": "trace \\boxed{\\frac12}"}]
    result = load_problems(write_jsonl(tmp_path / "red.jsonl", rows), require_teacher=True)
    assert result.layout == "red"
    assert result.problems[0].gold == "\\frac{1}{2}"
    assert result.problems[0].teacher == "trace \\boxed{\\frac12}"


def test_math_layout_numbers_lists_and_optional_solution(tmp_path: Path) -> None:
    rows = [
        {"problem": "A", "answer": 27.0, "solution": "so \\boxed{27}"},
        {"problem": "B", "answer": 5},
        {"problem": "C", "answer": ["$3$", "$4$"]},
        {"problem": "D", "answer": "  x^2+1 \n", "solution": ""},
    ]
    result = load_problems(write_json(tmp_path / "m.json", rows))
    assert result.layout == "math"
    assert [p.gold for p in result.problems] == ["27.0", "5", "$3$", "x^2+1"]
    assert [p.teacher for p in result.problems] == ["so \\boxed{27}", None, None, None]
    assert [p.uid for p in result.problems] == ["m:1", "m:2", "m:3", "m:4"]


def write_json(path: Path, rows: list) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def test_gsm8k_layout(tmp_path: Path) -> None:
    rows = [{"question": "How many?", "answer": "3 * 411 = <<3*411=1233>>1,233\n#### 1,233"}]
    result = load_problems(write_jsonl(tmp_path / "g.jsonl", rows))
    assert result.layout == "gsm8k"
    problem = result.problems[0]
    assert problem.gold == "1233"
    assert problem.teacher == "3 * 411 = <<3*411=1233>>1,233"


def test_custom_field_map_and_overrides(tmp_path: Path) -> None:
    rows = [{"input": {"text": "Q?"}, "meta": {"gold": ["7"], "id": 11}}]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    fields = {"question": "input.text", "answer": "meta.gold.0", "uid": "meta.id"}
    for layout in ("custom", "auto"):  # auto: no built-in matches, fields used as custom
        result = load_problems(path, layout=layout, fields=fields)
        assert result.layout == "custom"
        assert result.problems[0] == Problem("11", "Q?", "7", None, f"{path}:1")
    as_map = load_problems(path, layout="custom", fields=FieldMap("input.text", "meta.gold"))
    assert as_map.problems[0].gold == "7"
    math_rows = [{"problem": "P", "answer": "1", "unique_id": "test/algebra/1.json"}]
    overridden = load_problems(
        write_jsonl(tmp_path / "u.jsonl", math_rows), layout="math", fields={"uid": "unique_id"}
    )
    assert overridden.problems[0].uid == "test/algebra/1.json"


def test_layout_and_field_map_errors(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [{"foo": 1}])
    with pytest.raises(
        ValueError, match="unknown data layout 'openr1'; valid layouts: auto, luffy"
    ):
        load_problems(path, layout="openr1")
    with pytest.raises(ValueError, match=r"cannot detect the data layout .*\['foo'\]"):
        load_problems(path)
    with pytest.raises(ValueError, match="needs fields with at least 'question' and 'answer'"):
        load_problems(path, layout="custom", fields={"question": "foo"})
    with pytest.raises(ValueError, match=r"unknown field map keys \['gold'\]"):
        load_problems(path, layout="custom", fields={"question": "foo", "gold": "foo"})
    with pytest.raises(ValueError, match="must be a dotted path"):
        FieldMap(question="a..b", answer="c")


@pytest.mark.parametrize(
    ("row", "layout"),
    [
        ({"prompt": [], "reward_model": {}, "target": []}, "luffy"),
        ({"problem": "", "answer": "", "distill": ""}, "red"),
        ({"problem": "", "answer": "", "solution": ""}, "math"),
        ({"question": "", "answer": "x\n#### 4", "idx": 0}, "gsm8k"),
        ({"question": "", "answer": "4"}, None),
        ({"problem": "", "question": "", "answer": 27.0}, "math"),  # amc23
    ],
)
def test_detect_layout(row: dict, layout: str | None) -> None:
    assert detect_layout(row) == layout


def test_directory_glob_and_list_inputs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(
        data / "b.jsonl", [{"problem": "B1", "answer": "1"}, {"problem": "B2", "answer": "2"}]
    )
    write_parquet(data / "a.parquet", [{"problem": "A1", "answer": "3"}])
    write_json(data / "c.json", [{"problem": "C1", "answer": "4"}])
    (data / "notes.txt").write_text("not data")
    result = load_problems(data)
    assert [p.question for p in result.problems] == ["A1", "B1", "B2", "C1"]
    assert [p.uid for p in result.problems] == ["a:1", "b:1", "b:2", "c:1"]
    assert [p.question for p in load_problems(str(data / "*.jsonl")).problems] == ["B1", "B2"]
    assert len(load_problems(str(tmp_path / "**" / "*.json*")).problems) == 3
    listed = load_problems([data / "c.json", data / "a.parquet"], limit=1)
    assert [p.question for p in listed.problems] == ["C1"]
    assert find_data_files(data) == [data / "a.parquet", data / "b.jsonl", data / "c.json"]


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or directory"):
        load_problems(tmp_path / "missing.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type"):
        load_problems(tmp_path / "x.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="directory holds no"):
        load_problems(tmp_path / "empty")
    with pytest.raises(DataError, match=r"no .* file matches"):
        load_problems(str(tmp_path / "*.parquet"))
    bad = tmp_path / "d.json"
    bad.write_text('{"problem": "P"}')
    with pytest.raises(DataError, match=r"d.json: expected a JSON list of rows, got dict"):
        load_problems(bad, layout="math")
