"""What an SFT step does not spend: no log-prob pass before the update, one grading call.

A step without rollouts whose loss reads no pi_old (the ``sft`` preset) takes H_sft from its
update's own forward pass instead of a separate pass; forcing the pass (a loss that claims
to read pi_old) must give the same weights and losses, and H_sft within float rounding.
Teacher traces are graded once per problem, a step's new ones in one call to the graders.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nemo_red.algorithms.presets import LossSpec
from nemo_red.cli import main
from nemo_red.monitoring import names
from tests.torchrun import REPO_ROOT

TINY = REPO_ROOT / "examples" / "conf" / "tiny_red.yaml"
SFT = [
    "algorithm.preset=sft",
    "algorithm.sft_warmup_steps=0",
    "trainer.total_steps=3",
    "trainer.optim.warmup_steps=0",
    "trainer.prompts_per_step=8",
    "trainer.checkpoint_every=3",
    "trainer.eval_every=0",
    "trainer.progress=false",
    "trainer.loggers=[jsonl]",
    "trainer.grader_workers=1",
    "data.arithmetic.train_size=64",
    "data.arithmetic.test_size=8",
]


def _train(out: Path) -> list[dict]:
    assert main(["train", "--config", str(TINY), f"run.output_dir={out}", *SFT]) == 0
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_sft_without_the_pass_trains_exactly_as_with_it(tmp_path, monkeypatch):
    skipped = _train(tmp_path / "skipped")
    with monkeypatch.context() as patch:
        needs = LossSpec.needs.fget
        assert needs is not None
        patch.setattr(LossSpec, "needs", property(lambda self: needs(self) | {"old_logprobs"}))
        measured = _train(tmp_path / "measured")
    assert [r["step"] for r in skipped] == [1, 2, 3]
    for fast, slow in zip(skipped, measured, strict=True):
        assert "time/logprobs" not in fast
        assert "time/logprobs" in slow
        assert fast["loss/total"] == slow["loss/total"]
        assert fast[names.H_SFT] == pytest.approx(slow[names.H_SFT], rel=1e-5)
        assert names.H_RL not in fast
    a = load_file(str(tmp_path / "skipped" / "hf" / "model.safetensors"))
    b = load_file(str(tmp_path / "measured" / "hf" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_loss_that_reads_pi_old_refuses_a_batch_without_it():
    from nemo_red.algorithms.loss_inputs import LossBatch
    from nemo_red.algorithms.loss_terms import LOSS_TERMS, ClippedPGParams

    batch = LossBatch(
        logprobs=torch.zeros(1, 2),
        old_logprobs=None,
        mask=torch.ones(1, 2, dtype=torch.bool),
        is_offline=torch.zeros(1, dtype=torch.bool),
        advantages=torch.ones(1),
        rewards=torch.ones(1),
        group_accuracy=torch.ones(1),
    )
    assert "old_logprobs" in LOSS_TERMS.get("clipped_pg").needs
    assert "old_logprobs" not in LOSS_TERMS.get("nll").needs
    with pytest.raises(ValueError, match=r"'clipped_pg' needs LossBatch\.old_logprobs"):
        LOSS_TERMS.get("clipped_pg").fn(batch, ClippedPGParams())


def test_teacher_traces_are_graded_once_each_in_one_call_per_step(tmp_path, monkeypatch):
    from nemo_red.rewards.token_rewards import TokenRewards

    calls: list[int] = []
    real = TokenRewards.grade

    def grade(self, token_ids, golds):
        calls.append(len(token_ids))
        return real(self, token_ids, golds)

    monkeypatch.setattr(TokenRewards, "grade", grade)
    # 3 steps of 8 of 64 problems: every step's 8 traces are new, graded in one call
    rows = _train(tmp_path / "run")
    assert calls == [8, 8, 8]
    assert [r["reward/offline_accuracy"] for r in rows] == [1.0, 1.0, 1.0]
    assert all(r["time/grading"] > 0 for r in rows)
