"""The fixes megatron's torch_dist checkpoints need in this project are each still needed
and, together, sufficient (``nemo_red.models.megatron_checkpointing``,
``nemo_red.models.megatron_cpu.SAVE_PATCHES``)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.torchrun import _env

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the save patches apply without CUDA only")
def test_each_checkpoint_fix_is_needed_and_all_are_sufficient(tmp_path):
    from nemo_red.models.megatron_checkpointing import OPTIMIZER_FIXES
    from nemo_red.models.megatron_cpu import SAVE_PATCHES

    out = tmp_path / "report.json"
    worker = Path(__file__).with_name("_checkpoint_fixes_worker.py")
    subprocess.run(
        [sys.executable, str(worker), "--out", str(out)],
        check=True,
        env=_env(),
        capture_output=True,
        timeout=600,
    )
    report = json.loads(out.read_text())
    assert report.pop("all_applied") == "ok"
    assert set(report) == {"psutil", *OPTIMIZER_FIXES, *(p.name for p in SAVE_PATCHES)}
    for name, outcome in report.items():
        assert outcome.startswith("needed:"), f"fix {name!r}: {outcome}: remove or repair it"
    assert "pip install psutil" in report["psutil"]
    assert "CUDA" in report["cuda_synchronize"]
