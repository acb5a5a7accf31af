"""Step rules: how a step of a stage trains, as registered strategies (plain, HPT, ReLIFT).

A run is a list of stages (``algorithm.stages``, or an SFT warm-up then
``algorithm.preset``), each a loss preset for a number of steps. A *step rule*
(``algorithm.step_rule``) says how a step of a stage with online rollouts uses them; it is
chosen once and asked, at fixed points of every step (``loop.StepRunner.run``):

1. :meth:`StepRule.loss`: the loss of the stage's steps (built once per stage);
2. :meth:`StepRule.select`: which items of the step's groups train (after grading);
3. :meth:`StepRule.after_update`: what happens after the step's update (through an
   :class:`OfflineUpdater`: an extra update on teacher traces);
4. :meth:`StepRule.state_dict` / :meth:`StepRule.load_state_dict`: its training state,
   saved in checkpoints.

Rules change which items a step trains on, never a loss term: every loss stays a
composition of registered terms over explicit ``is_offline`` masks with global
normalisers. Offline-only stages (an SFT warm-up) run every rule unchanged. See
docs/design.md ("Seams", "Step rules"; "How to extend") for how to add one; a rule that
changes the rollouts themselves (BREAD's expert-prefix branches) overrides :meth:`StepRule.prompts`.

``hpt`` (HPT's ``select_on_off_ada_balance``): per prompt, when the number of correct online
rollouts is at most ``algorithm.hpt.gate``, the prompt contributes only its teacher trace (an
offline item); otherwise only its G rollouts (a GRPO group without the teacher, so its
advantages use the online rollouts alone). The loss is the stage's online preset (e.g.
``grpo``) plus one registered ``nll`` term on the offline population with coefficient
``algorithm.hpt.sft_coef``; with the ``grpo`` preset's ``per_term`` normaliser the step loss
is L_GRPO(rollouts of the RL prompts) + sft_coef * L_SFT(teacher traces of the SFT prompts),
each a mean over its own items.

``relift`` (ReLIFT): RL steps run the stage's preset as usual; after a step's update, the
questions whose online rollouts all failed join a buffer (each question once). When the
buffer holds ``algorithm.relift.buffer_size`` questions, the same iteration runs one extra
optimizer update of ``algorithm.relift.preset`` (default ``sft``) on their teacher traces,
then the buffer empties. The buffer holds indices of training problems and is saved in
checkpoints. The extra update advances the optimizer's step counter, so the learning-rate
schedule (counted in optimizer updates) reaches its end a few updates early and then stays
at ``min_lr``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from nemo_red.algorithms import PRESETS, LossSpec, StepContext, TermSpec
from nemo_red.algorithms.registry import Registry
from nemo_red.monitoring import names
from nemo_red.training.groups import GroupInput

if TYPE_CHECKING:
    from nemo_red.training.config import AlgorithmConfig

__all__ = [
    "CORRECT_THRESHOLD",
    "STEP_RULES",
    "HPTRule",
    "OfflineUpdater",
    "PlainRule",
    "ReliftBuffer",
    "ReliftRule",
    "StepOutcome",
    "StepRule",
    "build_step_rule",
    "hpt_loss",
    "num_correct",
    "route_hpt",
]

CORRECT_THRESHOLD = 0.5  # a rollout with reward above this counts as correct


def num_correct(rewards: Sequence[float]) -> int:
    """How many of a prompt's online rollouts are correct."""
    return sum(1 for r in rewards if r > CORRECT_THRESHOLD)


@dataclass(frozen=True)
class StepOutcome:
    """What a step did, for :meth:`StepRule.after_update`.

    Attributes:
        indices: the training problems of the step.
        online_rewards: per problem, the rewards of its online rollouts.
        context: the step's loss context (step index, the regulator's w).
    """

    indices: Sequence[int]
    online_rewards: Sequence[Sequence[float]]
    context: StepContext


class OfflineUpdater(Protocol):
    """What a rule may run after a step's update (the step runner provides it)."""

    def offline_update(
        self, indices: Sequence[int], preset: str, context: StepContext
    ) -> dict[str, float]:
        """One optimizer update of ``preset`` on the teacher traces of problems ``indices``;
        returns its metrics (with ``h_sft``, the entropy of those traces)."""
        ...


class StepRule:
    """The plain rule, and the base of every rule: each step trains on all its groups.

    Subclasses set :attr:`name`, register with :data:`STEP_RULES` and override what they
    change. One instance serves the whole run (its state is checkpointed).
    """

    name: ClassVar[str] = "plain"

    def __init__(self, algorithm: AlgorithmConfig) -> None:
        self.algorithm = algorithm

    @classmethod
    def check(cls, algorithm: AlgorithmConfig, online: list[LossSpec]) -> str | None:
        """Why ``algorithm`` cannot run this rule (None: it can); ``online``: the specs of
        its stages that use rollouts. Called when the config is loaded."""
        return None

    def loss(self, spec: LossSpec) -> LossSpec:
        """The loss of a stage whose preset (with the config's overrides) is ``spec``."""
        return spec

    def prompts(self, prompt_ids: Sequence[Sequence[int]]) -> list[list[int]]:
        """The prompts to roll out for the step's problems (BREAD would branch here)."""
        return [list(p) for p in prompt_ids]

    def select(
        self, inputs: Sequence[GroupInput], spec: LossSpec
    ) -> tuple[list[GroupInput], dict[str, float]]:
        """The groups the step trains on, and metrics of the choice."""
        return list(inputs), {}

    def after_update(
        self, outcome: StepOutcome, spec: LossSpec, updater: OfflineUpdater
    ) -> dict[str, float]:
        """Runs after the step's update; returns metrics."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The rule's training state (JSON-serialisable)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict` (absent keys keep their initial values)."""


STEP_RULES: Registry[type[StepRule]] = Registry("step rule")
STEP_RULES.add("plain", StepRule)
PlainRule = StepRule


def build_step_rule(algorithm: AlgorithmConfig) -> StepRule:
    """The run's step rule (``algorithm.step_rule``)."""
    return STEP_RULES.get(algorithm.step_rule)(algorithm)


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


@STEP_RULES.register("hpt")
class HPTRule(StepRule):
    """HPT: per prompt, SFT on the teacher trace or GRPO on the rollouts (module docstring)."""

    name = "hpt"

    @classmethod
    def check(cls, algorithm: AlgorithmConfig, online: list[LossSpec]) -> str | None:
        if any(s.uses_offline for s in online):
            return (
                "adds its own SFT term: its online presets must not train on teacher traces "
                f"(got {[s.name for s in online if s.uses_offline]})"
            )
        return None

    def loss(self, spec: LossSpec) -> LossSpec:
        return hpt_loss(spec, self.algorithm.hpt.sft_coef)

    def select(
        self, inputs: Sequence[GroupInput], spec: LossSpec
    ) -> tuple[list[GroupInput], dict[str, float]]:
        if not spec.uses_online:
            return list(inputs), {}
        routed, to_sft = route_hpt(inputs, self.algorithm.hpt.gate)
        return routed, {names.HPT_SFT_FRACTION: sum(to_sft) / len(to_sft)}


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


@STEP_RULES.register("relift")
class ReliftRule(StepRule):
    """ReLIFT: an extra SFT update on a buffer of failed questions (module docstring)."""

    name = "relift"
    STATE_KEY = "relift_buffer"  # the checkpoint's key (as written before rules existed)

    def __init__(self, algorithm: AlgorithmConfig) -> None:
        super().__init__(algorithm)
        self.buffer = ReliftBuffer(algorithm.relift.buffer_size)

    @classmethod
    def check(cls, algorithm: AlgorithmConfig, online: list[LossSpec]) -> str | None:
        relift = PRESETS.get(algorithm.relift.preset)
        if relift.uses_online or not relift.uses_offline:
            return f"algorithm.relift.preset {relift.name!r} must train on teacher traces only"
        return None

    def after_update(
        self, outcome: StepOutcome, spec: LossSpec, updater: OfflineUpdater
    ) -> dict[str, float]:
        if not spec.uses_online:
            return {}
        prefix = names.RELIFT_PREFIX
        added = self.buffer.add_failures(outcome.indices, outcome.online_rewards)
        metrics = {f"{prefix}added": float(added), f"{prefix}sft_step": float(self.buffer.full)}
        if self.buffer.full:
            buffered = self.buffer.drain()
            out = updater.offline_update(buffered, self.algorithm.relift.preset, outcome.context)
            h_sft = out.pop("h_sft")
            metrics.update({f"{prefix}{k}": v for k, v in out.items()})
            metrics[f"{prefix}questions"] = float(len(buffered))
            metrics[names.H_SFT] = h_sft
        metrics[f"{prefix}buffer"] = float(len(self.buffer.items))
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {self.STATE_KEY: self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.STATE_KEY in state:
            self.buffer.load_state_dict(state[self.STATE_KEY])
