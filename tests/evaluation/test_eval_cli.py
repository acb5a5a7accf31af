"""``nemo-red eval`` end to end with a tiny random Qwen2 and a locally trained tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_red.cli import main
from nemo_red.data.tokenizer import train_tokenizer
from tests.benchmark_data import DATA_DIR, MISSING_REASON
from tests.tiny_models import random_qwen2


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    texts = [
        f"Question: what is {a} + {b}? Answer: \\boxed{{{a + b}}}"
        for a in range(30)
        for b in range(9)
    ]
    tokenizer = train_tokenizer(texts, vocab_size=300, path=folder)
    random_qwen2(vocab=len(tokenizer), hidden=32, max_positions=512, noise=0.02).save_pretrained(
        folder
    )
    return folder


def _custom_data(tmp_path: Path) -> Path:
    path = tmp_path / "sums.jsonl"
    rows = [{"q": {"text": f"what is {a} + 1?"}, "gold": [a + 1]} for a in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_custom_set_then_resume(hf_model: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    args = [
        "eval", "--model", str(hf_model), "--benchmarks", f"sums={_custom_data(tmp_path)}",
        "--fields", "question=q.text,answer=gold", "--template", "plain", "--n", "2",
        "--max-new-tokens", "6", "--workers", "1", "--chunk-size", "2", "--out", str(out),
        "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| sums | 3 | 2 |" in printed
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


def test_unknown_benchmark_is_a_clear_error(hf_model: Path, capsys) -> None:
    code = main(["eval", "--model", str(hf_model), "--benchmarks", "nope", "--no-progress"])
    assert code == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
