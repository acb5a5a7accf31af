"""A generated task in parts: disjoint validation and test files, base and full train files."""

import json

import pytest

from nemo_red.data.task_parts import PartSpec, TaskParts, write_task_parts


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _task(**changes) -> TaskParts:
    fields = {
        "parts": {"recall": PartSpec("+", 2, 3, 9), "extend": PartSpec("+", 4, 4, 9)},
        "base_parts": ["recall"],
        "train_size": 50,
        "validation_size": 20,
        "test_size": 30,
        "seed": 3,
    }
    return TaskParts(**{**fields, **changes})


def test_files_hold_each_part_apart_with_disjoint_held_out_splits(tmp_path):
    files = write_task_parts(_task(), tmp_path)
    assert set(files) == {
        "base_train",
        "train",
        "validation_recall",
        "validation_extend",
        "test_recall",
        "test_extend",
    }
    base = _read(files["base_train"])
    train = _read(files["train"])
    assert len(base) == 50
    assert len(train) == 100
    assert all(r["problem"].count("+") in (1, 2) for r in base)  # the base never sees 4 numbers
    assert sum(r["problem"].count("+") == 3 for r in train) == 50  # half of train is extend
    assert [r["uid"].split("-")[0] for r in train[:4]] == ["recall", "extend"] * 2
    train_problems = {r["problem"] for r in train}
    for part, operands in (("recall", (2, 3)), ("extend", (4,))):
        validation = _read(files[f"validation_{part}"])
        test = _read(files[f"test_{part}"])
        assert (len(validation), len(test)) == (20, 30)
        held = [r["problem"] for r in validation + test]
        assert len(set(held)) == 50  # distinct, and validation and test disjoint
        assert not set(held) & train_problems
        assert all(p.count("+") + 1 in operands for p in held)
    # the same config writes the same files
    again = write_task_parts(_task(), tmp_path / "again")
    for name, path in files.items():
        assert path.read_text() == again[name].read_text()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"parts": {}}, "task.parts is empty"),
        ({"base_parts": ["nope"]}, "base_parts must name parts"),
        ({"test_size": 0}, "task.test_size must be >= 1"),
        ({"parts": {"a b": PartSpec()}}, "name 'a b'"),
        ({"parts": {"x": PartSpec(operators="/")}, "base_parts": ["x"]}, "task.parts.x"),
        ({"validation_size": 5000}, "distinct held-out problems"),
    ],
)
def test_bad_task_configs_name_the_field(tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        write_task_parts(_task(**changes), tmp_path)
