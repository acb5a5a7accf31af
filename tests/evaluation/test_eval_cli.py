"""``nemo-red eval`` end to end with a tiny random Qwen2 and a locally trained tokenizer."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from nemo_red.cli import main
from tests.benchmark_data import DATA_DIR, MISSING_REASON
from tests.evaluation.conftest import SUMS_FIELDS


def test_eval_custom_set_then_resume(hf_model: Path, sums: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    args = [
        "eval", "--model", str(hf_model), "--benchmarks", f"sums={sums}",
        "--fields", SUMS_FIELDS, "--template", "plain", "--n", "2",
        "--max-new-tokens", "6", "--workers", "1", "--chunk-size", "2", "--out", str(out),
        "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| sums | 3 | 0 | 2 |" in printed
    results = json.loads((out / "results.json").read_text())
    sums = results["benchmarks"]["sums"]
    assert (sums["items"], sums["samples_per_item"]) == (3, 2)
    assert set(sums) >= {"accuracy", "avg@2", "pass@1", "pass@2", "maj@2", "length", "truncated"}
    assert [r["gold"] for r in results["records"]["sums"]] == ["1", "2", "3"]
    assert all(0 < s["tokens"] <= 6 for r in results["records"]["sums"] for s in r["samples"])
    # a second run finds every item recorded and only rewrites the results
    before = (out / "records.jsonl").read_text()
    assert main(args) == 0
    assert (out / "records.jsonl").read_text() == before
    again = json.loads((out / "results.json").read_text())
    assert again["records"] == results["records"]
    # other sampling settings in the same directory: a clear error
    assert main([*args, "--temperature", "1.0"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"nemo-red eval: error: {out / 'records.jsonl'} holds 3 recorded items of an evaluation "
        "with other settings (differing: sampling.temperature); pass --restart to discard them, "
        "or use another --out"
    )


@pytest.mark.skipif(not DATA_DIR.is_dir(), reason=MISSING_REASON)
def test_eval_named_benchmarks_from_a_megatron_checkpoint(hf_model: Path, tmp_path: Path) -> None:
    from nemo_red.models.checkpoint_io import hf_to_megatron_checkpoint

    megatron = tmp_path / "megatron"
    hf_to_megatron_checkpoint(hf_model, megatron, 1, 1)
    out = tmp_path / "out"
    code = main(
        [
            "eval", "--model", str(megatron), "--tokenizer", str(hf_model),
            "--benchmarks", "math500,minerva,gsm8k", "--data-dir", str(DATA_DIR),
            "--limit", "2", "--max-new-tokens", "4", "--template", "plain", "--workers", "1",
            "--out", str(out), "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    assert (out / "hf_model" / "config.json").is_file()
    results = json.loads((out / "results.json").read_text())
    assert list(results["benchmarks"]) == ["math500", "minerva_math", "gsm8k"]
    assert results["records"]["math500"][0]["uid"] == "test/precalculus/807.json"
    assert results["records"]["minerva_math"][0]["gold"] == "1.6"
    assert results["records"]["gsm8k"][1]["gold"] == "3"
    assert results["settings"]["benchmarks"]["math500"]["n"] == 1
    assert results["overall"]["benchmarks"] == 3.0


@pytest.mark.skipif(not DATA_DIR.is_dir(), reason=MISSING_REASON)
def test_gsm8k_with_prompts_over_the_limit_exits_1(hf_model: Path, tmp_path: Path, capsys) -> None:
    code = main(
        [
            "eval", "--model", str(hf_model), "--benchmarks", "gsm8k", "--data-dir",
            str(DATA_DIR), "--limit", "4", "--max-new-tokens", "4", "--max-prompt-tokens", "16",
            "--workers", "1", "--out", str(tmp_path / "out"), "--no-progress",
        ]
    )  # fmt: skip
    assert code == 1
    captured = capsys.readouterr()
    why = "4 of 4 items dropped: 4 prompts longer than --max-prompt-tokens (16 tokens)"
    assert "| gsm8k | 0 | 4 | - | - | - | - | - | - | - |" in captured.out
    assert captured.err.splitlines()[-2:] == [
        "nemo-red eval: error: no item was evaluated:",
        f"  gsm8k: {why}",
    ]


def test_unknown_benchmark_is_a_clear_error(hf_model: Path, capsys) -> None:
    code = main(["eval", "--model", str(hf_model), "--benchmarks", "nope", "--no-progress"])
    assert code == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


def _sums_args(model: Path, sums: Path, out: Path, *extra: str) -> list[str]:
    return [
        "eval", "--model", str(model), "--benchmarks", f"sums={sums}", "--fields", SUMS_FIELDS,
        "--template", "plain", "--n", "1", "--max-new-tokens", "4", "--workers", "1",
        "--out", str(out), "--no-progress", *extra,
    ]  # fmt: skip


def test_every_prompt_too_long_fails_then_a_corrected_rerun_continues(
    hf_model: Path, sums: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    assert main(_sums_args(hf_model, sums, out, "--max-prompt-tokens", "1")) == 1
    captured = capsys.readouterr()
    why = "3 of 3 items dropped: 3 prompts longer than --max-prompt-tokens (1 token)"
    assert "| sums | 0 | 3 | - | - | - | - | - | - | - |" in captured.out
    assert f"Dropped items (not in the metrics):\n- sums: {why}\n" in captured.out
    assert captured.err.splitlines()[-2:] == [
        "nemo-red eval: error: no item was evaluated:",
        f"  sums: {why}",
    ]
    results = json.loads((out / "results.json").read_text())
    assert results["benchmarks"]["sums"]["dropped"] == {
        "prompt_too_long": 3,
        "prompt_exceeds_context": 0,
        "invalid_gold": 0,
    }
    # the failed start recorded no item: other settings in the same --out just replace it
    assert main(_sums_args(hf_model, sums, out, "--max-prompt-tokens", "200")) == 0
    captured = capsys.readouterr()
    assert "| sums | 3 | 0 | 1 |" in captured.out
    assert "Dropped items" not in captured.out
    assert "error" not in captured.err
    header = json.loads((out / "records.jsonl").read_text().splitlines()[0])
    assert header["settings"]["sampling"]["max_prompt_tokens"] == 200


def test_prompts_beyond_the_models_context_are_counted_not_a_crash(
    short_context_model: Path, sums: Path, tmp_path: Path, capsys
) -> None:
    # no --max-prompt-tokens: the engine would refuse a prompt that fills its 8 positions
    assert main(_sums_args(short_context_model, sums, tmp_path / "out")) == 1
    captured = capsys.readouterr()
    why = (
        "3 of 3 items dropped: 3 prompts too long for the model's context (8 tokens, "
        "max_position_embeddings)"
    )
    assert f"- sums: {why}\n" in captured.out
    assert captured.err.splitlines()[-2:] == [
        "nemo-red eval: error: no item was evaluated:",
        f"  sums: {why}",
    ]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["benchmarks"]["sums"]["dropped"]["prompt_exceeds_context"] == 3
    assert results["prompt_limits"] == {"max_prompt_tokens": None, "max_context": 8}


def test_one_benchmark_dropped_whole_is_a_warning(
    hf_model: Path, sums: Path, tmp_path: Path, capsys
) -> None:
    long = tmp_path / "long.jsonl"
    question = "what is 1 + 1? " * 20
    long.write_text(
        "".join(json.dumps({"q": {"text": question}, "gold": [2]}) + "\n" for _ in range(2))
    )
    args = _sums_args(hf_model, sums, tmp_path / "out", "--max-prompt-tokens", "100")
    args[args.index("--benchmarks") + 1] = f"sums={sums},long={long}"
    assert main(args) == 0
    captured = capsys.readouterr()
    why = "2 of 2 items dropped: 2 prompts longer than --max-prompt-tokens (100 tokens)"
    assert "| long | 0 | 2 | - |" in captured.out
    assert f"- long: {why}\n" in captured.out
    assert captured.err.splitlines()[-1] == (
        f"nemo-red eval: warning: no item of long was evaluated: {why}"
    )


def test_out_is_claimed_before_anything_is_written(
    hf_model: Path, sums: Path, tmp_path: Path, capsys
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    # a folder of the user's: refused, even with --restart, and left as it was
    assert main(_sums_args(hf_model, sums, mine, "--restart")) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"nemo-red eval: error: {mine}: holds files that nemo-red did not write (notes.txt) "
        "and is not a nemo-red eval output directory; choose a new or empty directory"
    )
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert (mine / "notes.txt").read_text() == "keep"
    assert main(_sums_args(hf_model, sums, hf_model)) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"nemo-red eval: error: {hf_model}: is the source {hf_model}; name another directory"
    )
    out = tmp_path / "out"
    assert main(_sums_args(hf_model, sums, out)) == 0
    assert json.loads((out / "nemo_red_output.json").read_text())["kind"] == "eval"
    assert json.loads((out / "nemo_red.lock").read_text())["purpose"] == "evaluating"
    # --restart in an eval directory discards its records and evaluates again
    before = (out / "records.jsonl").read_text()
    assert main(_sums_args(hf_model, sums, out, "--restart", "--seed", "1")) == 0
    assert (out / "records.jsonl").read_text() != before


def test_an_evaluation_in_progress_locks_out(
    hf_model: Path, sums: Path, tmp_path: Path, capsys
) -> None:
    from nemo_red.outputs import DirectoryLock, claim_directory

    out = tmp_path / "out"
    claim_directory(out, "eval")  # as another nemo-red eval does, before it takes the lock
    with DirectoryLock(out, "evaluating"):
        assert main(_sums_args(hf_model, sums, out)) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(
        f"nemo-red eval: error: {out} is in use: PID {os.getpid()} on host "
        f"{socket.gethostname()} (evaluating since "
    )
    assert not (out / "records.jsonl").exists()


def test_model_or_run_is_required_and_exclusive(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--benchmarks", "math500"])
    assert exit_.value.code == 2
    assert "one of the arguments --model --run is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--model", "m", "--run", str(tmp_path), "--benchmarks", "math500"])
    assert "argument --run: not allowed with argument --model" in capsys.readouterr().err
