"""The evaluation harness with a scripted engine: metrics, outputs, resume, settings checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_red.data.templates import get_template
from nemo_red.evaluation import (
    EvalSettings,
    ResponseGrader,
    SettingsMismatchError,
    evaluate_benchmarks,
    resolve_benchmarks,
)
from tests.evaluation.fakes import CharTokenizer, ExactGrader, ScriptedEngine

TEMPLATE = get_template("plain")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    (folder / "toy").mkdir(parents=True)
    rows = [{"problem": f"q{k}", "answer": str(k)} for k in range(1, 8)]
    rows[6]["answer"] = "unparsable"  # q7: a gold the grader cannot parse
    (folder / "toy" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    choice = [
        {
            "id": f"c{i}",
            "question": f"choice {i}",
            "choices": {"text": ["x", "y", "z"], "label": ["A", "B", "C"]},
            "answerKey": "B" if i < 2 else "C",
        }
        for i in range(3)
    ]
    (folder / "arc_c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in choice))
    return folder


def _run(data: Path, out: Path, engine: ScriptedEngine, grader: ExactGrader, **kw):
    settings = EvalSettings(n=kw.pop("n", 3), temperature=kw.pop("temperature", 0.6), chunk_size=2)
    benchmarks = resolve_benchmarks([f"toy={data / 'toy'}", "arc_c"], data_dir=data)
    return evaluate_benchmarks(
        engine,
        CharTokenizer(),
        TEMPLATE,
        ResponseGrader(grader),
        benchmarks,
        settings,
        out,
        stop_token_ids=[3],
        describe={"model": "scripted"},
        progress=False,
        **kw,
    )


def test_metrics_records_and_table(data: Path, tmp_path: Path) -> None:
    results = _run(data, tmp_path / "out", ScriptedEngine(), ExactGrader())
    toy = results["benchmarks"]["toy"]
    # q1..q6 with n = 3: k % 4 correct samples -> 1, 2, 3, 0, 1, 2; q7's gold is unparsable
    correct = [1, 2, 3, 0, 1, 2]
    assert (toy["items"], toy["invalid_items"], toy["samples_per_item"]) == (6, 1, 3)
    assert toy["accuracy"] == pytest.approx(sum(correct) / 18)
    assert toy["pass@3"] == pytest.approx(5 / 6)
    # pass@2 = 1 - C(3 - c, 2) / C(3, 2): c = 1 -> 2/3, c = 2 or 3 -> 1, c = 0 -> 0
    assert toy["pass@2"] == pytest.approx((2 / 3 + 1 + 1 + 0 + 2 / 3 + 1) / 6)
    assert toy["maj@3"] == pytest.approx(3 / 6)  # c >= 2 gives the majority (q2, q3, q6)
    # sample 0 is cut by the token limit whenever it is wrong: q4 only
    assert toy["truncated"] == pytest.approx(1 / 18)
    arc = results["benchmarks"]["arc_c"]
    assert (arc["items"], arc["accuracy"], arc["title"]) == (
        3,
        pytest.approx(2 / 3),
        "ARC-Challenge",
    )
    assert results["overall"]["accuracy"] == pytest.approx((toy["accuracy"] + arc["accuracy"]) / 2)
    assert set(results["versions"]) >= {"python", "torch", "nemo-red"}
    assert results["settings"]["sampling"]["temperature"] == 0.6
    first = results["records"]["toy"][0]
    assert (first["uid"], first["gold"], len(first["samples"])) == ("test:1", "1", 3)
    assert first["samples"][0] | {"text": None} == {
        "text": None,
        "extracted": "1",
        "reason": "correct",
        "correct": True,
        "tokens": len(first["samples"][0]["text"]) + 1,
        "finish_reason": "stop",
    }
    out = tmp_path / "out"
    assert json.loads((out / "results.json").read_text())["overall"] == results["overall"]
    assert toy["dropped"] == {"prompt_too_long": 0, "prompt_exceeds_context": 0, "invalid_gold": 1}
    assert (toy["dropped_items"], arc["dropped_items"]) == (1, 0)
    assert results["prompt_limits"] == {"max_prompt_tokens": None, "max_context": None}
    table = (out / "results.md").read_text().splitlines()
    assert table[0] == (
        "| benchmark | items | dropped | n | accuracy (%, avg@n) | pass@k (%) | maj@n (%) | "
        "mean length (tokens) | truncated (%) | no answer (%) |"
    )
    assert table[2] == "| toy | 6 | 1 | 3 | 50.0 | 83.3 (pass@3) | 50.0 | 29 | 5.6 | 0.0 |"
    assert table[3] == "| arc_c | 3 | 0 | 3 | 66.7 | 66.7 (pass@3) | 66.7 | 24 | 0.0 | 0.0 |"
    assert table[4] == "| **Overall** | | | | **58.3** | | | 26 | 2.8 | |"
    assert table[5:] == [
        "",
        "Dropped items (not in the metrics):",
        "- toy: 1 of 7 items dropped: 1 invalid gold answer (cannot be parsed)",
    ]


def test_resume_after_a_crash_regrades_nothing_and_equals_a_straight_run(
    data: Path, tmp_path: Path
) -> None:
    straight = _run(data, tmp_path / "straight", ScriptedEngine(), ExactGrader())
    with pytest.raises(RuntimeError, match="engine crashed"):
        _run(data, tmp_path / "resumed", ScriptedEngine(fail_after=2), ExactGrader())
    engine, grader = ScriptedEngine(), ExactGrader()
    resumed = _run(data, tmp_path / "resumed", engine, grader)
    # 7 toy items in chunks of 2 and 3 arc items: 4 + 2 calls, of which 2 were done before
    assert engine.calls == [2, 1, 2, 1]
    assert grader.graded == 3 * 3  # the 3 remaining math items x n, never the finished ones
    for key in ("benchmarks", "overall", "records"):
        assert resumed[key] == straight[key]


def test_torn_last_record_is_dropped(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    straight = _run(data, out, ScriptedEngine(), ExactGrader())
    records = out / "records.jsonl"
    lines = records.read_text().splitlines(keepends=True)
    records.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    engine = ScriptedEngine()
    again = _run(data, out, engine, ExactGrader())
    assert engine.calls == [1]  # only the item whose line was torn
    assert again["records"] == straight["records"]


def test_other_settings_are_refused_unless_restarted(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(data, out, ScriptedEngine(), ExactGrader())
    with pytest.raises(
        SettingsMismatchError, match=r"holds 10 recorded items .*differing: sampling\.temperature\)"
    ):
        _run(data, out, ScriptedEngine(), ExactGrader(), temperature=1.0)
    engine = ScriptedEngine()
    results = _run(data, out, engine, ExactGrader(), temperature=1.0, restart=True)
    assert sum(engine.calls) == 10
    assert results["settings"]["sampling"]["temperature"] == 1.0


def test_limit_and_prompt_length_filter(data: Path, tmp_path: Path) -> None:
    benchmarks = resolve_benchmarks([f"toy={data / 'toy' / 'test.jsonl'}"])
    engine = ScriptedEngine()
    results = evaluate_benchmarks(
        engine,
        CharTokenizer(),
        TEMPLATE,
        ResponseGrader(ExactGrader()),
        benchmarks,
        EvalSettings(n=1, max_prompt_tokens=len("Question: q1\nAnswer:") - 1),
        tmp_path / "out",
        limit=3,
        progress=False,
    )
    toy = results["benchmarks"]["toy"]
    assert toy["prompt_too_long"] == 3
    assert toy["dropped"] == {"prompt_too_long": 3, "prompt_exceeds_context": 0, "invalid_gold": 0}
    assert toy["items"] == 0
    assert "accuracy" not in toy
    assert results["overall"] == {}
    assert engine.calls == []
    table = (tmp_path / "out" / "results.md").read_text().splitlines()
    assert table[2] == "| toy | 0 | 3 | - | - | - | - | - | - | - |"
    assert table[-1] == (
        "- toy: 3 of 3 items dropped: 3 prompts longer than --max-prompt-tokens (19 tokens)"
    )


def test_prompts_beyond_the_context_are_dropped_and_counted_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "toy.jsonl"
    rows = [{"problem": f"q{k}", "answer": str(k)} for k in (1, 10, 100, 1000)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    benchmarks = resolve_benchmarks([f"toy={path}"])
    assert len("Question: q1\nAnswer:") == 20  # the prompts have 20, 21, 22 and 23 tokens

    def run(out: str, max_prompt_tokens: int | None, engine: ScriptedEngine) -> dict:
        return evaluate_benchmarks(
            engine,
            CharTokenizer(),
            TEMPLATE,
            ResponseGrader(ExactGrader()),
            benchmarks,
            EvalSettings(n=1, max_prompt_tokens=max_prompt_tokens),
            tmp_path / out,
            progress=False,
            max_context=21,
        )

    engine = ScriptedEngine()
    results = run("no_limit", None, engine)  # only the model's context limits the prompts
    toy = results["benchmarks"]["toy"]
    assert toy["dropped"] == {"prompt_too_long": 0, "prompt_exceeds_context": 3, "invalid_gold": 0}
    assert (toy["items"], toy["accuracy"], engine.calls) == (1, 1.0, [1])
    assert [r["uid"] for r in results["records"]["toy"]] == ["toy:1"]
    assert results["prompt_limits"] == {"max_prompt_tokens": None, "max_context": 21}
    results = run("limit", 22, ScriptedEngine())  # the prompt limit is counted first
    toy = results["benchmarks"]["toy"]
    assert toy["dropped"] == {"prompt_too_long": 1, "prompt_exceeds_context": 2, "invalid_gold": 0}
    assert (tmp_path / "limit" / "results.md").read_text().splitlines()[-1] == (
        "- toy: 3 of 4 items dropped: 1 prompt longer than --max-prompt-tokens (22 tokens); "
        "2 prompts too long for the model's context (21 tokens, max_position_embeddings)"
    )


def test_paper_samples_per_benchmark_by_default(tmp_path: Path) -> None:
    for name, n in (("aime24", 32), ("amc23", 32), ("math500", 1), ("minerva", 1)):
        (tmp_path / f"{name}.jsonl").write_text('{"problem": "q1", "answer": "1"}\n')
        (resolved,) = resolve_benchmarks([name], data_dir=tmp_path)
        assert EvalSettings().samples(resolved) == n
        assert EvalSettings(n=4).samples(resolved) == 4


def test_unknown_benchmark_and_missing_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown benchmark 'mathh'.*built-in: math500"):
        resolve_benchmarks(["mathh"], data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="benchmark 'aime24': no file in"):
        resolve_benchmarks(["aime24"], data_dir=tmp_path)
    (tmp_path / "math500.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="listed twice"):
        resolve_benchmarks(["math500", "math"], data_dir=tmp_path)
