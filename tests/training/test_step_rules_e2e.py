"""HPT and ReLIFT schedules end to end on the tiny default, and ReLIFT's resume equality."""

import json
import subprocess
from pathlib import Path

import pytest

from tests.training.runs import env as _env
from tests.training.runs import kill_at_checkpoint
from tests.training.runs import metrics as _metrics
from tests.training.runs import train_cmd as _train_cmd

pytestmark = pytest.mark.slow

# A random tiny model fails (nearly) every rollout after its one SFT warm-up step: each RL
# step adds ~8 questions to the ReLIFT buffer, so with 12 the checkpoint of step 2 holds a
# partly filled buffer and step 3 runs the SFT update on it.
RELIFT = [
    "algorithm.preset=grpo",
    "algorithm.step_rule=relift",
    "algorithm.relift.buffer_size=12",
    "trainer.total_steps=4",
    "trainer.checkpoint_every=2",
    "trainer.eval_every=0",
    "trainer.loggers=[jsonl]",
]


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def relift_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("relift") / "run"
    _run(_train_cmd(out, *RELIFT))
    return out


def test_hpt_run_routes_prompts_and_trains(tmp_path):
    out = tmp_path / "run"
    _run(
        _train_cmd(
            out,
            "algorithm.preset=grpo",
            "algorithm.step_rule=hpt",
            "algorithm.hpt.gate=0",
            "trainer.total_steps=3",
            "trainer.checkpoint_every=3",
            "trainer.eval_every=0",
            "trainer.loggers=[jsonl]",
        )
    )
    metrics = _metrics(out)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert "hpt/sft_fraction" not in metrics[0]  # the SFT warm-up step is not routed
    for m in metrics[1:]:
        fraction = m["hpt/sft_fraction"]
        assert 0.0 <= fraction <= 1.0
        assert ("loss/nll" in m) == (fraction > 0)
        assert "loss/clipped_pg" in m
        assert m["skipped"] == 0
        if fraction > 0:
            assert "entropy/h_sft" in m
            assert "reward/offline_accuracy" in m


def test_relift_run_buffers_failures_and_runs_an_sft_update(relift_run):
    metrics = _metrics(relift_run)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert "relift/buffer" not in metrics[0]  # the SFT warm-up step has no rollouts
    steps = metrics[1:]
    assert all(m["relift/added"] >= 0 and m["skipped"] == 0 for m in steps)
    sft_steps = [m for m in steps if m["relift/sft_step"] == 1.0]
    assert sft_steps, [m["relift/buffer"] for m in steps]
    for m in sft_steps:
        assert m["relift/questions"] >= 12
        assert m["relift/buffer"] == 0
        assert "relift/loss/nll" in m
        assert "entropy/h_sft" in m
    meta = json.loads((relift_run / "checkpoints" / "step_000002" / "meta.json").read_text())
    assert meta["extra"]["relift_buffer"]["items"]
    assert len(meta["extra"]["relift_buffer"]["items"]) == metrics[1]["relift/buffer"]


def test_relift_sigkill_then_resume_equals_uninterrupted(relift_run, tmp_path):
    out = tmp_path / "run"
    cmd = _train_cmd(out, *RELIFT)
    kill_at_checkpoint(cmd, out, "step_000002")
    _run(cmd)
    assert _metrics(out) == _metrics(relift_run)
