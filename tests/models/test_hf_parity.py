"""Converted megatron models give the logits of transformers' Qwen2ForCausalLM (fp32, CPU).

Layouts TP = 1, 2 and PP = 1, 2 under torchrun (gloo), tied and untied embeddings, query/KV
head ratios 1, 2, 6 (Qwen2.5-1.5B: 12 / 2) and 7 (7B: 28 / 4). A negative control shows the
test catches a wrong QKV layout.
"""

import json
from pathlib import Path

import pytest

from tests.torchrun import run_torchrun

WORKER = Path(__file__).with_name("_parity_worker.py")
HEADS = [(4, 4), (4, 2), (12, 2), (14, 2)]  # ratios 1, 2, 6, 7
TOLERANCE = 1e-5


def _cases(tp: int, pp: int) -> list[dict]:
    return [
        {"tp": tp, "pp": pp, "heads": h, "kv_heads": kv, "tied": tied, "vocab": 61}
        for h, kv in HEADS
        for tied in (False, True)
    ]


def _run(tmp_path: Path, nproc: int, cases: list[dict]) -> list[dict]:
    out = tmp_path / "parity.json"
    run_torchrun(WORKER, nproc, ["--cases", json.dumps(cases), "--out", str(out)], timeout=300)
    return json.loads(out.read_text())


@pytest.mark.slow
def test_single_process_parity_and_negative_control(tmp_path):
    control = {**_cases(1, 1)[2], "naive_qkv": True}
    results = _run(tmp_path, 1, [*_cases(1, 1), control])
    for result in results[:-1]:
        assert result["max_abs_error"] < TOLERANCE, result
    assert results[-1]["max_abs_error"] > 0.1, "a naive [q; k; v] layout must be caught"


@pytest.mark.distributed
@pytest.mark.slow
def test_tensor_and_pipeline_parallel_parity(tmp_path):
    results = _run(tmp_path, 2, [*_cases(2, 1), *_cases(1, 2)])
    assert len(results) == 16
    for result in results:
        assert result["max_abs_error"] < TOLERANCE, result
