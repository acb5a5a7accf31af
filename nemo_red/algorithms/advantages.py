"""Sequence-level advantage estimators (GRPO family), registered by name.

Every estimator has one signature::

    estimator(rewards [N], group_ids [N], is_offline [N], eps) -> advantages [N]

``group_ids`` says which prompt each response belongs to (any integers); ``is_offline`` marks
the teacher trace of the group. The advantage of a response is broadcast to its tokens by the
loss (docs/design.md, Algorithm step 2).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from nemo_red.algorithms.registry import Registry

AdvantageEstimator = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]

ADVANTAGE_ESTIMATORS: Registry[AdvantageEstimator] = Registry("advantage estimator")


def _group_index(group_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    _, index = torch.unique(group_ids, return_inverse=True)
    return index, int(index.max().item()) + 1 if index.numel() else 0


def group_mean_std(
    values: torch.Tensor, group_ids: torch.Tensor, member: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-item mean, unbiased std and member count of its group, over ``member`` items only.

    Args:
        values: ``[N]`` float values (rewards).
        group_ids: ``[N]`` group of each item.
        member: ``[N]`` bool, which items enter the statistics.

    Returns:
        ``(mean [N], std [N], count [N])`` of each item's group. A group with fewer than two
        members has std 0; a group with no members has mean 0.
    """
    index, num_groups = _group_index(group_ids)
    values = values.to(torch.float64)
    weight = member.to(torch.float64)
    count = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, index, weight)
    total = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, index, values * weight)
    mean = total / count.clamp(min=1)
    sq_dev = (values - mean[index]) ** 2 * weight
    var = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, index, sq_dev)
    std = (var / (count - 1).clamp(min=1)).sqrt()
    return mean[index], std[index], count[index]


def group_normalized_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    is_offline: torch.Tensor,
    eps: float = 1e-6,
    *,
    include_offline_in_stats: bool,
    scale_by_std: bool,
) -> torch.Tensor:
    """GRPO advantage A_i = (r_i - mean) / (std + eps) over each group (paper Eq. 6).

    Args:
        rewards: ``[N]`` rewards of online rollouts and offline traces.
        group_ids: ``[N]`` prompt of each response.
        is_offline: ``[N]`` bool, True for teacher traces.
        eps: added to the std.
        include_offline_in_stats: the statistics use all G+1 responses (paper, LUFFY) or the
            G online ones only. Every response, offline included, gets an advantage.
        scale_by_std: divide by std + eps (GRPO) or only centre (Dr.GRPO, LUFFY).

    Returns:
        ``[N]`` float32 advantages.
    """
    member = torch.ones_like(is_offline) if include_offline_in_stats else ~is_offline
    mean, std, _ = group_mean_std(rewards, group_ids, member)
    advantages = rewards.to(torch.float64) - mean
    if scale_by_std:
        advantages = advantages / (std + eps)
    return advantages.to(torch.float32)


def group_accuracy(
    rewards: torch.Tensor, group_ids: torch.Tensor, is_offline: torch.Tensor
) -> torch.Tensor:
    """beta = mean reward of the group's online rollouts (docs/design.md, Algorithm step 3).

    Returns:
        ``[N]`` float32: each item's group accuracy (0 for a group without online rollouts).
    """
    mean, _, _ = group_mean_std(rewards, group_ids, ~is_offline)
    return mean.to(torch.float32)


for _name, _offline, _std in (
    ("grpo", True, True),
    ("grpo_online_stats", False, True),
    ("dr_grpo", True, False),
    ("dr_grpo_online_stats", False, False),
):
    ADVANTAGE_ESTIMATORS.add(
        _name,
        partial(group_normalized_advantages, include_offline_in_stats=_offline, scale_by_std=_std),
    )
