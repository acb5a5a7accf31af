"""GRPO-family advantages and group accuracy, by hand."""

import math

import pytest
import torch

from nemo_red.algorithms.advantages import ADVANTAGE_ESTIMATORS, group_accuracy
from nemo_red.algorithms.registry import UnknownNameError

# Two prompts (ids 7 and 3), each with 3 online rollouts and 1 teacher trace (last).
REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
GROUPS = torch.tensor([7, 7, 7, 7, 3, 3, 3, 3])
OFFLINE = torch.tensor([False, False, False, True, False, False, False, True])


def _adv(name: str) -> list[float]:
    return ADVANTAGE_ESTIMATORS.get(name)(REWARDS, GROUPS, OFFLINE, 1e-6).tolist()


def test_grpo_over_the_whole_group():
    # Group 7: rewards 1,0,0,1 -> mean 0.5, unbiased std sqrt(1/3).
    s = math.sqrt(1 / 3) + 1e-6
    expected = [0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0.0, 0.0, 0.0, 0.0]
    assert _adv("grpo") == pytest.approx(expected, rel=1e-6)


def test_grpo_online_statistics_only():
    # Group 7 online: 1,0,0 -> mean 1/3, std sqrt(1/3); the teacher is scored against them.
    s = math.sqrt(1 / 3) + 1e-6
    expected = [(2 / 3) / s, (-1 / 3) / s, (-1 / 3) / s, (2 / 3) / s, 0, 0, 0, 0]
    assert _adv("grpo_online_stats") == pytest.approx(expected, rel=1e-6)


def test_dr_grpo_only_centres():
    assert _adv("dr_grpo") == pytest.approx([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])
    assert _adv("dr_grpo_online_stats") == pytest.approx(
        [2 / 3, -1 / 3, -1 / 3, 2 / 3, 0, 0, 0, 0], rel=1e-6
    )


def test_group_accuracy_counts_online_rollouts_only():
    beta = group_accuracy(REWARDS, GROUPS, OFFLINE).tolist()
    assert beta == pytest.approx([1 / 3] * 4 + [1.0] * 4)


def test_order_does_not_matter():
    perm = torch.tensor([5, 0, 7, 2, 1, 6, 3, 4])
    out = ADVANTAGE_ESTIMATORS.get("grpo")(REWARDS[perm], GROUPS[perm], OFFLINE[perm], 1e-6)
    torch.testing.assert_close(out, torch.tensor(_adv("grpo"))[perm])


def test_single_member_group_has_zero_advantage():
    out = ADVANTAGE_ESTIMATORS.get("grpo")(
        torch.tensor([1.0]), torch.tensor([0]), torch.tensor([False]), 1e-6
    )
    assert out.tolist() == [0.0]


def test_unknown_estimator_lists_valid_names():
    with pytest.raises(UnknownNameError, match="grpo_online_stats"):
        ADVANTAGE_ESTIMATORS.get("ppo")
