"""The megatron-core CPU patches are each still needed and, together, sufficient."""

import json
from pathlib import Path

import pytest
import torch

from tests.torchrun import run_torchrun


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU patches apply without CUDA only")
@pytest.mark.distributed
@pytest.mark.slow
def test_each_patch_is_needed_and_all_are_sufficient(tmp_path):
    from nemo_red.models.megatron_cpu import PATCHES

    out = tmp_path / "report.json"
    run_torchrun(Path(__file__).with_name("_cpu_patch_worker.py"), 2, ["--out", str(out)])
    report = json.loads(out.read_text())
    assert report.pop("all_applied") == "ok"
    assert set(report) == {p.name for p in PATCHES}
    for name, outcome in report.items():
        assert outcome.startswith("needed"), f"patch {name!r} is no longer needed: remove it"


def test_patches_are_a_no_op_with_cuda(monkeypatch):
    from nemo_red.models import megatron_cpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(megatron_cpu, "_APPLIED", {})
    assert megatron_cpu.apply_cpu_patches() == []
