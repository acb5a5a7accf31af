"""From rollouts and teacher traces to the step's groups: rewards, advantages, beta.

For each prompt the group holds G online completions and, when the loss uses teacher
traces, the prompt's teacher trace (docs/design.md, Algorithm steps 1-3). Optional DAPO pieces:
dynamic sampling drops groups whose online rewards all agree (they carry no GRPO signal),
and the overlong penalty lowers the reward of responses that run into the last
``overlong_buffer`` tokens before the length limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from nemo_red.algorithms.advantages import ADVANTAGE_ESTIMATORS, group_accuracy
from nemo_red.rollout.base import Completion
from nemo_red.training.packing import SequenceBatch


@dataclass(frozen=True)
class GroupInput:
    """One prompt of the step with what was generated and graded for it.

    Attributes:
        prompt_ids: the rendered prompt's token ids.
        completions: the G online completions (may be empty for an SFT-only step).
        online_rewards: their rewards (G floats).
        teacher_ids: the teacher trace's token ids, or None to leave it out.
        teacher_reward: r* of the teacher trace.
    """

    prompt_ids: Sequence[int]
    completions: Sequence[Completion]
    online_rewards: Sequence[float]
    teacher_ids: Sequence[int] | None
    teacher_reward: float


@dataclass(frozen=True)
class StepGroups:
    """The step's sequences and what the loop logs about them."""

    batch: SequenceBatch
    engine_logprobs: torch.Tensor  # [N, T] log-probs the engine reported (0 for teachers)
    group_ids: torch.Tensor  # [N]
    dropped_groups: int  # by dynamic sampling
    truncated: torch.Tensor  # [N] bool, online responses that hit the length limit


def overlong_penalty(length: int, max_new_tokens: int, buffer: int) -> float:
    """DAPO's soft penalty: 0 up to ``max - buffer`` tokens, then linear down to -1 at max."""
    if buffer <= 0 or length <= max_new_tokens - buffer:
        return 0.0
    return max(-1.0, (max_new_tokens - buffer - length) / buffer)


def build_groups(
    inputs: Sequence[GroupInput],
    advantage: str,
    dynamic_sampling: bool = False,
    overlong_buffer: int = 0,
    max_new_tokens: int = 0,
) -> StepGroups:
    """Assembles the step batch (online completions first, then the teacher, per group)."""
    tokens, prompt_lengths, offline, gids, engine_lp, truncated = [], [], [], [], [], []
    rewards: list[float] = []  # graded correctness (beta and SRFT use these)
    shaped: list[float] = []  # with the overlong penalty (advantages use these)
    dropped = 0
    for g, item in enumerate(inputs):
        online = list(item.online_rewards)
        if dynamic_sampling and len(online) > 1 and len(set(online)) == 1:
            dropped += 1
            continue
        prompt = torch.as_tensor(list(item.prompt_ids), dtype=torch.long)
        for completion, reward in zip(item.completions, online, strict=True):
            penalty = overlong_penalty(len(completion.token_ids), max_new_tokens, overlong_buffer)
            tokens.append(torch.cat([prompt, completion.token_ids.long()]))
            prompt_lengths.append(len(prompt))
            offline.append(False)
            rewards.append(reward)
            shaped.append(reward + penalty)
            gids.append(g)
            engine_lp.append(completion.logprobs)
            truncated.append(completion.finish_reason == "length")
        if item.teacher_ids is not None:
            teacher = torch.as_tensor(list(item.teacher_ids), dtype=torch.long)
            tokens.append(torch.cat([prompt, teacher]))
            prompt_lengths.append(len(prompt))
            offline.append(True)
            rewards.append(item.teacher_reward)
            shaped.append(item.teacher_reward)
            gids.append(g)
            engine_lp.append(torch.zeros(len(teacher)))
            truncated.append(False)
    if not tokens:
        raise ValueError("every group was dropped: no sequences left for this step")
    reward_t = torch.tensor(rewards, dtype=torch.float32)
    shaped_t = torch.tensor(shaped, dtype=torch.float32)
    group_t = torch.tensor(gids)
    offline_t = torch.tensor(offline)
    width = max(len(lp) for lp in engine_lp)
    engine = torch.zeros(len(tokens), width)
    for i, lp in enumerate(engine_lp):
        engine[i, : len(lp)] = lp
    batch = SequenceBatch(
        tokens=tokens,
        prompt_lengths=torch.tensor(prompt_lengths),
        is_offline=offline_t,
        advantages=ADVANTAGE_ESTIMATORS.get(advantage)(shaped_t, group_t, offline_t, 1e-6),
        rewards=reward_t,
        group_accuracy=group_accuracy(reward_t, group_t, offline_t),
    )
    return StepGroups(batch, engine, group_t, dropped, torch.tensor(truncated))
