"""Stage-wise baselines as trainer schedules (DESIGN section 2): HPT and ReLIFT.

These baselines do not change a loss term; they change which items a step trains on, so
they live here, between the rollouts and ``build_groups``, and every loss stays a
composition of registered terms over explicit ``is_offline`` masks with global normalisers.

``algorithm.schedule: hpt`` (HPT's ``select_on_off_ada_balance``): per prompt, when the
number of correct online rollouts is at most ``algorithm.hpt.gate``, the prompt contributes
only its teacher trace (an offline item); otherwise it contributes only its G rollouts (a
GRPO group without the teacher, so its advantages use the online rollouts alone). The loss
is the stage's online preset (e.g. ``grpo``) plus one registered ``nll`` term on the offline
population with coefficient ``algorithm.hpt.sft_coef``; with the ``grpo`` preset's
``per_term`` normaliser the step loss is L_GRPO(rollouts of the RL prompts) +
sft_coef * L_SFT(teacher traces of the SFT prompts), each a mean over its own items. One
step mixes both kinds of prompts and needs no flag inside any loss. Stages whose preset is
offline-only (an SFT warm-up) run unchanged.

``algorithm.schedule: relift`` (ReLIFT): RL steps run the stage's preset as usual; after a
step's update, the questions whose online rollouts all failed join a buffer (each question
once). When the buffer holds ``algorithm.relift.buffer_size`` questions, the same iteration
runs one extra optimizer update of ``algorithm.relift.preset`` (default ``sft``) on their
teacher traces, then the buffer empties. The buffer holds indices of training problems; it
is training state, saved in and restored from checkpoints (:meth:`ReliftBuffer.state_dict`).
The extra update advances the optimizer's step counter, so the learning-rate schedule
(counted in optimizer updates) reaches its end a few updates early and then stays at
``min_lr``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from nemo_red.algorithms import LossSpec, TermSpec
from nemo_red.training.groups import GroupInput

CORRECT_THRESHOLD = 0.5  # a rollout with reward above this counts as correct


def num_correct(rewards: Sequence[float]) -> int:
    """How many of a prompt's online rollouts are correct."""
    return sum(1 for r in rewards if r > CORRECT_THRESHOLD)


def hpt_loss(spec: LossSpec, sft_coef: float) -> LossSpec:
    """The HPT loss of a stage: an online preset plus ``sft_coef`` x NLL on offline items.

    Offline-only presets (an SFT warm-up stage) are returned unchanged.
    """
    if not spec.uses_online:
        return spec
    if spec.uses_offline:
        raise ValueError(f"HPT adds its own SFT term; preset {spec.name!r} already has one")
    term = TermSpec("nll", "offline", coefficient_params={"value": sft_coef})
    return replace(spec.with_extra_term(term), name=f"{spec.name}+hpt")


def route_hpt(inputs: Sequence[GroupInput], gate: int) -> tuple[list[GroupInput], list[bool]]:
    """HPT's per-prompt switch.

    Args:
        inputs: one group per prompt, with its rollouts, rewards and teacher trace.
        gate: prompts with ``num_correct <= gate`` go to SFT.

    Returns:
        ``(routed, to_sft)``: per prompt either only its teacher trace (no completions) or
        only its rollouts (no teacher), and whether it went to SFT.
    """
    routed, to_sft = [], []
    for item in inputs:
        sft = num_correct(item.online_rewards) <= gate
        if sft and item.teacher_ids is None:
            raise ValueError("HPT routes a prompt to SFT but its group has no teacher trace")
        if sft:
            routed.append(replace(item, completions=[], online_rewards=[]))
        else:
            routed.append(replace(item, teacher_ids=None, teacher_reward=0.0))
        to_sft.append(sft)
    return routed, to_sft


class ReliftBuffer:
    """ReLIFT's buffer of questions (training-problem indices) whose rollouts all failed.

    Args:
        size: the buffer is full (an SFT update is due) at this many questions.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"buffer size must be >= 1, got {size}")
        self.size = size
        self.items: list[int] = []

    def add_failures(self, indices: Sequence[int], rewards: Sequence[Sequence[float]]) -> int:
        """Adds the questions none of whose rollouts is correct; returns how many were new."""
        added = 0
        for index, per_prompt in zip(indices, rewards, strict=True):
            if per_prompt and num_correct(per_prompt) == 0 and index not in self.items:
                self.items.append(int(index))
                added += 1
        return added

    @property
    def full(self) -> bool:
        """Whether the buffer holds at least ``size`` questions."""
        return len(self.items) >= self.size

    def drain(self) -> list[int]:
        """The buffered questions, in the order they came; the buffer is then empty."""
        items, self.items = self.items, []
        return items

    def state_dict(self) -> dict[str, Any]:
        """The buffer's state (JSON-serialisable), part of the training checkpoint."""
        return {"size": self.size, "items": list(self.items)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict` (the configured size wins over the saved one)."""
        self.items = [int(i) for i in state["items"]]
