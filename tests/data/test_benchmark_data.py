"""The real benchmark test sets load through the built-in layouts.

The data is read from ``$NEMO_RED_BENCHMARK_DATA``, by default ``../shared/data/benchmarks``
next to the repository; the tests skip when it is absent.
"""

from __future__ import annotations

import pytest

from nemo_red.data import load_problems
from tests.benchmark_data import DATA_DIR, MISSING_REASON

# (folder, layout, field overrides, rows, whether every row has a teacher)
SETS = [
    ("math500", "math", {"uid": "unique_id"}, 500, True),
    ("gsm8k", "gsm8k", None, 1319, True),
    ("aime24", "auto", {"uid": "id"}, 30, True),
    ("amc23", "auto", {"uid": "id"}, 40, False),
    ("olympiadbench", "custom", {"question": "question", "answer": "final_answer"}, 675, False),
]


@pytest.mark.parametrize(("name", "layout", "fields", "rows", "teacher"), SETS)
def test_benchmark_loads(
    name: str, layout: str, fields: dict | None, rows: int, teacher: bool
) -> None:
    path = DATA_DIR / name / "test.jsonl"
    if not path.is_file():
        pytest.skip(f"benchmark data not found at {path} (set NEMO_RED_BENCHMARK_DATA)")
    result = load_problems(path, layout=layout, fields=fields, require_teacher=teacher)
    assert result.skipped == []
    assert len(result.problems) == rows
    assert len({p.uid for p in result.problems}) == rows
    assert all(p.gold and p.question.strip() for p in result.problems)


def test_benchmark_golds() -> None:
    if not DATA_DIR.is_dir():
        pytest.skip(MISSING_REASON)
    gsm8k = load_problems(DATA_DIR / "gsm8k" / "test.jsonl").problems
    assert gsm8k[0].gold == "18"
    assert gsm8k[0].teacher.endswith("every day at the farmer’s market.")
    assert all("####" not in p.teacher and "," not in p.gold for p in gsm8k)
    amc = load_problems(DATA_DIR / "amc23" / "test.jsonl")
    assert amc.layout == "math"
    assert amc.problems[0].gold == "27.0"
    olympiad = load_problems(
        DATA_DIR / "olympiadbench" / "test.jsonl",
        layout="custom",
        fields={"question": "question", "answer": "final_answer"},
    ).problems
    assert all(not p.gold.startswith("[") for p in olympiad)
