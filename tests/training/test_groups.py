"""Groups of G online + 1 teacher: rewards, advantages, beta, DAPO options (by hand)."""

import math

import pytest
import torch

from nemo_red.rollout.base import Completion
from nemo_red.training.groups import GroupInput, build_groups, overlong_penalty


def _completion(n: int, reason: str = "stop") -> Completion:
    return Completion(torch.arange(n), torch.full((n,), -0.5), reason)


def _group(rewards, teacher=True, lengths=None):
    lengths = lengths or [2] * len(rewards)
    return GroupInput(
        prompt_ids=[7, 8],
        completions=[_completion(n) for n in lengths],
        online_rewards=rewards,
        teacher_ids=[1, 2, 3] if teacher else None,
        teacher_reward=1.0,
    )


def test_group_of_two_online_and_a_teacher():
    out = build_groups([_group([1.0, 0.0])], "grpo")
    batch = out.batch
    assert batch.is_offline.tolist() == [False, False, True]
    assert batch.tokens[2].tolist() == [7, 8, 1, 2, 3]
    assert batch.prompt_lengths.tolist() == [2, 2, 2]
    # rewards 1, 0, 1: mean 2/3, unbiased std sqrt(1/3)
    s = math.sqrt(1 / 3) + 1e-6
    assert batch.advantages.tolist() == pytest.approx([(1 / 3) / s, (-2 / 3) / s, (1 / 3) / s])
    assert batch.group_accuracy.tolist() == pytest.approx([0.5, 0.5, 0.5])
    assert out.engine_logprobs[0, :2].tolist() == [-0.5, -0.5]
    assert out.engine_logprobs[2].tolist() == [0.0, 0.0, 0.0]


def test_dynamic_sampling_drops_groups_without_signal():
    out = build_groups([_group([1.0, 1.0]), _group([0.0, 1.0])], "grpo", dynamic_sampling=True)
    assert out.dropped_groups == 1
    assert len(out.batch) == 3
    with pytest.raises(ValueError, match="every group was dropped"):
        build_groups([_group([0.0, 0.0])], "grpo", dynamic_sampling=True)


def test_overlong_penalty_by_hand():
    assert overlong_penalty(10, max_new_tokens=16, buffer=4) == 0.0
    assert overlong_penalty(12, 16, 4) == 0.0
    assert overlong_penalty(14, 16, 4) == pytest.approx(-0.5)
    assert overlong_penalty(16, 16, 4) == pytest.approx(-1.0)
    assert overlong_penalty(16, 16, 0) == 0.0


def test_overlong_penalty_shapes_advantages_but_not_beta():
    out = build_groups(
        [_group([1.0, 1.0], lengths=[2, 16])], "dr_grpo", overlong_buffer=4, max_new_tokens=16
    )
    batch = out.batch
    assert batch.rewards.tolist() == [1.0, 1.0, 1.0]
    assert batch.group_accuracy[0].item() == 1.0
    # shaped rewards 1, 0, 1: centred 1/3, -2/3, 1/3
    assert batch.advantages.tolist() == pytest.approx([1 / 3, -2 / 3, 1 / 3])


def test_grpo_without_teacher():
    out = build_groups([_group([1.0, 0.0], teacher=False)], "grpo")
    assert out.batch.is_offline.tolist() == [False, False]
