"""Converted megatron models give the logits of transformers' own model class of each family
(Qwen2ForCausalLM, Qwen3ForCausalLM, LlamaForCausalLM; fp32, CPU).

Layouts TP = 1, 2 and PP = 1, 2 under torchrun (gloo), tied and untied embeddings. Qwen2:
query/KV head ratios 1, 2, 6 (Qwen2.5-1.5B: 12 / 2) and 7 (7B: 28 / 4). Qwen3: q/k RMSNorm
and a head_dim other than hidden / heads. Llama: Llama 3.1's rope scaling (``llama3``) on
sequences long enough for it to matter, and plain rope. Negative controls show the test
catches a wrong QKV layout, swapped q/k norms and a missing rope scaling.
"""

import json
from pathlib import Path

import pytest

from tests.tiny_models import LLAMA3_ROPE_SCALING
from tests.torchrun import run_torchrun

WORKER = Path(__file__).with_name("_parity_worker.py")
QWEN2_HEADS = [(4, 4), (4, 2), (12, 2), (14, 2)]  # ratios 1, 2, 6, 7
HEADS = [(4, 2), (12, 2)]
TOLERANCE = 1e-5
FAMILY_CASES = {
    "qwen2": {},
    "qwen3": {"extra": {"head_dim": 12}},  # hidden is heads * 8
    "llama": {
        "extra": {"head_dim": 16, "rope_theta": 5e5, "rope_scaling": LLAMA3_ROPE_SCALING},
        "max_positions": 16384,
        "seq": 48,
    },
}


def _case(family: str, tp: int, pp: int, heads: tuple[int, int], tied: bool, **more) -> dict:
    h, kv = heads
    base = {"family": family, "tp": tp, "pp": pp, "heads": h, "kv_heads": kv, "tied": tied}
    return base | {"vocab": 61} | FAMILY_CASES[family] | more


def _cases(family: str, tp: int, pp: int, heads: list[tuple[int, int]]) -> list[dict]:
    return [_case(family, tp, pp, h, tied) for h in heads for tied in (False, True)]


CONTROLS = [
    _case("qwen2", 1, 1, (12, 2), False, control="naive_qkv"),
    _case("qwen3", 1, 1, (12, 2), False, control="naive_qkv"),
    _case("qwen3", 1, 1, (4, 2), True, control="swap_qk_norm"),
    _case("llama", 1, 1, (12, 2), False, control="naive_qkv"),
    _case("llama", 1, 1, (4, 2), True, control="no_rope_scaling"),
]


def _run(tmp_path: Path, nproc: int, cases: list[dict]) -> list[dict]:
    out = tmp_path / "parity.json"
    run_torchrun(WORKER, nproc, ["--cases", json.dumps(cases), "--out", str(out)], timeout=600)
    return json.loads(out.read_text())


@pytest.mark.slow
def test_single_process_parity_and_negative_controls(tmp_path):
    plain_llama = _case("llama", 1, 1, (4, 4), False, extra={"head_dim": 8}, seq=11)
    cases = [
        *_cases("qwen2", 1, 1, QWEN2_HEADS),
        *_cases("qwen3", 1, 1, HEADS),
        *_cases("llama", 1, 1, HEADS),
        plain_llama,
    ]
    results = _run(tmp_path, 1, [*cases, *CONTROLS])
    for result in results[: len(cases)]:
        assert result["max_abs_error"] < TOLERANCE, result
    for result in results[len(cases) :]:
        assert result["max_abs_error"] > 100 * TOLERANCE, result


@pytest.mark.distributed
@pytest.mark.slow
def test_tensor_and_pipeline_parallel_parity(tmp_path):
    cases = [
        *_cases("qwen2", 2, 1, QWEN2_HEADS),
        *_cases("qwen2", 1, 2, QWEN2_HEADS),
        *(
            c
            for f in ("qwen3", "llama")
            for c in _cases(f, 2, 1, HEADS[:1]) + _cases(f, 1, 2, HEADS[:1])
        ),
    ]
    results = _run(tmp_path, 2, cases)
    assert len(results) == 24
    for result in results:
        assert result["max_abs_error"] < TOLERANCE, result
