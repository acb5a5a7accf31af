"""The `nemo-red` command line: help, presets, grade (conversion: tests/models)."""

import json
import subprocess
import sys

import pytest

from nemo_red.cli import main


def test_help_lists_the_subcommands():
    result = subprocess.run(
        [sys.executable, "-m", "nemo_red.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for command in ("presets", "grade", "convert"):
        assert command in result.stdout


def test_presets_describe_the_resolved_parameters(capsys):
    assert main(["presets", "red"]) == 0
    out = capsys.readouterr().out
    assert "offline_pg(ratio=accuracy_shift" in out
    assert "entropy_regulated" in out


def test_unknown_preset_is_a_clear_error(capsys):
    assert main(["presets", "ppo"]) == 2
    assert "unknown loss preset 'ppo'; valid names:" in capsys.readouterr().err


def test_grade_a_jsonl_file(tmp_path, capsys):
    rows = [
        {"response": "so \\boxed{\\frac{1}{2}}", "answer": "0.5"},
        {"response": "I think \\boxed{3}", "answer": 4},
        {"response": "no idea", "answer": "7"},
    ]
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "graded.jsonl"
    assert main(["grade", str(path), "--workers", "1", "--out", str(out)]) == 0
    graded = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["reason"] for g in graded] == ["correct", "wrong", "no_answer"]
    assert [g["reward"] for g in graded] == [1.0, 0.0, 0.0]
    assert "accuracy 33.33%" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "row 2: not valid JSON"),
        ('{"response": "x"}', "row 2: missing field 'answer'"),
        ('{"response": "x", "answer": [1]}', "row 2: field 'answer' must be a string or a number"),
    ],
)
def test_grade_bad_rows_name_file_row_and_field(tmp_path, capsys, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"response": "\\\\boxed{1}", "answer": "1"}\n' + line + "\n")
    assert main(["grade", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert message in err
