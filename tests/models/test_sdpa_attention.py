"""SDPA core attention equals megatron's DotProductAttention (outputs and gradients)."""

import json
from pathlib import Path

import pytest

from tests.torchrun import run_torchrun

pytestmark = pytest.mark.distributed


def test_sdpa_matches_megatron_attention_and_the_control_fails(tmp_path):
    out = tmp_path / "report.json"
    run_torchrun(Path(__file__).with_name("_sdpa_worker.py"), 1, ["--out", str(out)])
    report = json.loads(out.read_text())
    controls = {k: v for k, v in report.items() if "control" in k}
    cases = {k: v for k, v in report.items() if k not in controls}
    assert len(cases) == 2 * 3 * 2  # head ratios x masks x (prefill, decode)
    for case, diff in cases.items():
        assert diff < 1e-5, case
    for case, diff in controls.items():
        assert diff > 0.1, case  # a wrong mask is caught
