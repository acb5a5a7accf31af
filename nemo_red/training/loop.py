"""The RED training loop (docs/design.md, "Data flow"): one iteration, phase by phase.

Per iteration: sample prompts -> rollouts (sharded over data-parallel ranks) -> grade ->
groups of G online + 1 teacher trace -> advantages and beta -> log pi_old and entropies ->
entropy regulator w(t) -> K updates -> refit the engine -> metrics -> checkpoint / eval.
An engine with weights of its own (hf, vLLM, TensorRT-LLM) sleeps from the end of the rollouts
to the refit when ``rollout.sleep_while_training``.

Where it departs from the paper's public code, and why:
* Teacher traces are found by an explicit flag, never by position in the batch.
* Groups whose rewards all agree are dropped only when ``algorithm.dynamic_sampling`` is on,
  and are not regenerated (the batch shrinks for that step; the count is logged).
* The offline item's reward is graded like any response unless ``data.trust_offline``.
* Steps with non-finite gradients are skipped and logged; training stops after
  ``trainer.max_consecutive_skips`` in a row.
* ``algorithm.step_rule`` (HPT, ReLIFT) changes which items a step trains on, not the loss
  terms; see ``step_rules.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from nemo_red.algorithms import LossSpec, StepContext
from nemo_red.monitoring import names
from nemo_red.rollout.base import Completion, SamplingParams, logprob_gap
from nemo_red.rollout.registry import engine_info
from nemo_red.training.config import StageConfig, TrainConfig
from nemo_red.training.groups import GroupInput, StepGroups, build_groups
from nemo_red.training.step_rules import StepOutcome, build_step_rule

if TYPE_CHECKING:
    from nemo_red.data.dataset import TokenizedProblem
    from nemo_red.training.assembly import RunParts


class PhaseTimer:
    """Wall time per phase of a step (``time/<phase>`` metrics)."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        """Adds ``seconds`` to phase ``name``."""
        key = names.phase_time(name)
        self.times[key] = self.times.get(key, 0.0) + seconds


def stage_ends(stages: Sequence[StageConfig]) -> list[int]:
    """The number of steps done at the end of each stage."""
    ends, end = [], 0
    for stage in stages:
        end += stage.steps
        ends.append(end)
    return ends


def stage_starts(stages: Sequence[StageConfig]) -> list[int]:
    """The step (0-based) each stage starts at."""
    return [0, *stage_ends(stages)[:-1]]


def stage_at(stages: list[StageConfig], step: int) -> StageConfig:
    """The stage that step ``step`` (0-based) belongs to."""
    for stage, end in zip(stages, stage_ends(stages), strict=True):
        if step < end:
            return stage
    return stages[-1]


class StepRunner:
    """One training iteration: the phases of the module docstring, with their metrics.

    Holds references to the run's parts (built by ``assembly.assemble_run``); the step rule
    and each stage's loss are chosen once, here.
    """

    def __init__(self, config: TrainConfig, parts: RunParts) -> None:
        self.config = config
        self.parts = parts
        self.teacher_rewards: dict[str, float] = {}
        self.rule = build_step_rule(config.algorithm)
        presets = {stage.preset for stage in config.stages()}
        self._losses = {p: self.rule.loss(config.algorithm.loss_spec(p)) for p in presets}
        self._offline_losses: dict[str, LossSpec] = {}
        engine = engine_info(config.rollout.engine)
        self._sleeps = config.rollout.sleep_while_training and engine.holds_memory

    def state_dict(self) -> dict[str, Any]:
        """The loop's own training state (JSON-serialisable), saved in checkpoints."""
        return {"teacher_rewards": self.teacher_rewards, **self.rule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict` (keys a checkpoint lacks keep their initial value)."""
        self.teacher_rewards = dict(state.get("teacher_rewards", {}))
        self.rule.load_state_dict(state)

    def loss_for(self, stage: StageConfig) -> LossSpec:
        """The loss of a step of ``stage``: its preset, the overrides and the rule's terms."""
        return self._losses[stage.preset]

    # -------------------------------------------------------------- rollouts
    def _dp(self) -> tuple[int, int]:
        from megatron.core import parallel_state as ps

        return ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()

    def _generate_and_grade(
        self, problems: list[TokenizedProblem], step: int, timer: PhaseTimer
    ) -> list[Any]:
        """(completions, rewards) per problem; each DP rank does its share, then all share."""
        rollout, parts = self.config.rollout, self.parts
        rank, size = self._dp()
        mine = list(range(rank, len(problems), size))
        params = SamplingParams(
            n=rollout.n,
            temperature=rollout.temperature,
            top_p=rollout.top_p,
            top_k=rollout.top_k,
            max_new_tokens=rollout.max_new_tokens,
            stop_token_ids=tuple(parts.stop_token_ids),
            seed=(self.config.run.seed * 1_000_003 + step * 7919 + rank) % 2**31,
        )
        with timer.phase("rollout"):
            prompts = self.rule.prompts([problems[i].prompt_ids for i in mine])
            outputs = parts.engine.generate(prompts, params)
        with timer.phase("grading"):
            flat = [(i, c) for i, per in zip(mine, outputs, strict=True) for c in per]
            graded = parts.rewards.grade(
                [c.token_ids for _, c in flat], [problems[i].gold for i, _ in flat]
            )
        local: dict[int, tuple[list[Completion], list[float]]] = {i: ([], []) for i in mine}
        for (i, completion), result in zip(flat, graded, strict=True):
            local[i][0].append(completion)
            local[i][1].append(result.reward)
        return _all_gather_dict(local, len(problems))

    def _teacher_rewards(self, problems: Sequence[TokenizedProblem]) -> list[float]:
        """r* of each problem's teacher trace (1 with ``data.trust_offline``), graded once
        per problem (cached and checkpointed), the step's new ones in one call."""
        if self.config.data.trust_offline:
            return [1.0] * len(problems)
        new = {p.uid: p for p in problems if p.uid not in self.teacher_rewards}
        if new:
            results = self.parts.rewards.grade(
                [torch.tensor(p.teacher_ids) for p in new.values()],
                [p.gold for p in new.values()],
            )
            for uid, result in zip(new, results, strict=True):
                self.teacher_rewards[uid] = result.reward
        return [self.teacher_rewards[p.uid] for p in problems]

    # -------------------------------------------------------------- the step
    def run(self, step: int, indices: list[int], stage: StageConfig) -> dict[str, float]:
        """Runs iteration ``step`` on the training problems ``indices``."""
        config, parts = self.config, self.parts
        spec = self.loss_for(stage)
        timer = PhaseTimer()
        problems = [parts.train[i] for i in indices]
        rolled = (
            self._generate_and_grade(problems, step, timer)
            if spec.uses_online
            else [([], [])] * len(problems)
        )
        asleep = spec.uses_online and self._sleeps
        if asleep:  # free the engine's memory for the update
            parts.engine.sleep()
        teacher = [0.0] * len(problems)
        if spec.uses_offline:
            with timer.phase("grading"):
                teacher = self._teacher_rewards(problems)
        inputs = [
            GroupInput(
                prompt_ids=p.prompt_ids,
                completions=completions,
                online_rewards=rewards,
                teacher_ids=p.teacher_ids if spec.uses_offline else None,
                teacher_reward=reward,
            )
            for p, (completions, rewards), reward in zip(problems, rolled, teacher, strict=True)
        ]
        inputs, rule_metrics = self.rule.select(inputs, spec)
        groups = build_groups(
            inputs,
            spec.advantage,
            config.algorithm.dynamic_sampling,
            config.algorithm.overlong_buffer,
            config.rollout.max_new_tokens,
        )
        # The pass before the update gives pi_old and the entropies the regulator reads. A
        # step with no rollouts, one update and a loss that reads no pi_old (SFT) needs
        # neither: its update's own forward pass (same weights) measures the entropies.
        single = config.trainer.updates_per_step == 1
        measured = spec.uses_online or "old_logprobs" in spec.needs or not single
        batch = groups.batch
        stats = None
        if measured:
            with timer.phase("logprobs"):
                stats = parts.actor.compute_logprobs_and_entropy(batch)
            batch = batch.with_fields(old_logprobs=stats.logprobs)
        metrics = self._pre_update_metrics(groups, stats)
        ctx = StepContext(step=step, entropy_weight=parts.regulator.weight)
        with timer.phase("train"):
            train_metrics = self._updates(batch, spec, ctx, measure_entropy=not measured)
        outcome = StepOutcome(indices, [r for _, r in rolled], ctx)
        start = time.perf_counter()
        after = self.rule.after_update(outcome, spec, self)
        if after:  # a rule that did something after the update: its own phase
            timer.add(self.rule.name, time.perf_counter() - start)
            rule_metrics.update(after)
        with timer.phase("refit"):
            if asleep:
                parts.engine.wake()
            parts.engine.update_weights(parts.actor)
        tokens = int(sum(len(t) for t in batch.tokens))
        metrics.update(train_metrics)
        metrics.update(rule_metrics)
        # an extra update of the rule that was skipped counts as a skipped step
        extra_skipped = [v for k, v in rule_metrics.items() if k.endswith("/" + names.SKIPPED)]
        metrics[names.SKIPPED] = max([train_metrics[names.SKIPPED], *extra_skipped])
        metrics.update(timer.times)
        metrics[names.STEP_TIME] = sum(timer.times.values())
        metrics[names.THROUGHPUT] = tokens / max(metrics[names.STEP_TIME], 1e-9)
        metrics[names.SFT_ONLY] = float(not spec.uses_online)
        return metrics

    def offline_update(
        self, indices: Sequence[int], preset: str, context: StepContext
    ) -> dict[str, float]:
        """One update of ``preset`` on the teacher traces of ``indices`` (for step rules);
        its metrics and ``h_sft``, the entropy of those traces before the update."""
        if preset not in self._offline_losses:
            self._offline_losses[preset] = self.config.algorithm.loss_spec(preset)
        spec = self._offline_losses[preset]
        problems = [self.parts.train[i] for i in indices]
        inputs = [
            GroupInput(p.prompt_ids, [], [], p.teacher_ids, reward)
            for p, reward in zip(problems, self._teacher_rewards(problems), strict=True)
        ]
        batch = build_groups(inputs, spec.advantage).batch
        stats = self.parts.actor.compute_logprobs_and_entropy(batch)
        out = self.parts.actor.train_step(
            batch.with_fields(old_logprobs=stats.logprobs), spec, context
        )
        return {**out, "h_sft": stats.h_sft}

    def _pre_update_metrics(self, groups: StepGroups, stats: Any | None) -> dict[str, float]:
        """Metrics of the batch before the update; the entropies and the regulator's update
        need ``stats`` (None only for steps without rollouts)."""
        batch, parts = groups.batch, self.parts
        online, offline = ~batch.is_offline, batch.is_offline
        lengths = batch.response_lengths.float()
        metrics: dict[str, float] = {names.GROUPS_DROPPED: float(groups.dropped_groups)}
        if online.any():
            assert stats is not None  # measured for every step with rollouts
            metrics[names.ONLINE_ACCURACY] = float(batch.rewards[online].mean())
            metrics[names.ONLINE_LENGTH] = float(lengths[online].mean())
            metrics[names.ONLINE_TRUNCATED] = float(groups.truncated[online].float().mean())
            mask = batch.response_mask & online[:, None]
            metrics.update(logprob_gap(groups.engine_logprobs, stats.logprobs, mask))
            beta = batch.group_accuracy[online]
            metrics[names.BETA_MEAN] = float(beta.mean())
            metrics[names.BETA_ALL_WRONG] = float((beta == 0).float().mean())
            metrics[names.BETA_ALL_RIGHT] = float((beta == 1).float().mean())
            metrics[names.H_RL] = stats.h_rl
        if offline.any():
            metrics[names.OFFLINE_ACCURACY] = float(batch.rewards[offline].mean())
            metrics[names.OFFLINE_LENGTH] = float(lengths[offline].mean())
            if stats is not None:
                metrics[names.H_SFT] = stats.h_sft
        if stats is not None and online.any() and offline.any():
            update = parts.regulator.update(stats.h_rl, stats.h_sft)
            metrics[names.DELTA_RL] = update.delta_rl
            metrics[names.DELTA_SFT] = update.delta_sft
        metrics[names.W] = parts.regulator.weight
        return metrics

    def _updates(
        self, batch: Any, spec: LossSpec, ctx: StepContext, measure_entropy: bool = False
    ) -> dict[str, float]:
        """K optimizer steps on consecutive slices of the step's groups; metrics averaged.

        With ``measure_entropy`` (one update per step) the entropies of the update's forward
        pass are the step's ``entropy/h_rl`` / ``entropy/h_sft``."""
        k = self.config.trainer.updates_per_step
        n = len(batch)
        bounds = [round(n * j / k) for j in range(k + 1)]
        collected: dict[str, list[float]] = {}
        for j in range(k):
            rows = list(range(bounds[j], bounds[j + 1]))
            if not rows:
                continue
            out = self.parts.actor.train_step(
                batch.select(rows) if k > 1 else batch, spec, ctx, measure_entropy
            )
            for key, value in out.items():
                collected.setdefault(key, []).append(value)
        merged = {key: sum(values) / len(values) for key, values in collected.items()}
        merged[names.SKIPPED] = max(collected.get(names.SKIPPED, [0.0]))
        return merged


def _all_gather_dict(local: dict[int, Any], total: int) -> list[Any]:
    """Merges each data-parallel rank's ``{index: value}`` into a list over all indices."""
    from megatron.core import parallel_state as ps

    gathered: list[Any] = [None] * ps.get_data_parallel_world_size()
    dist.all_gather_object(gathered, local, group=ps.get_data_parallel_group())
    merged: dict[int, Any] = {}
    for part in gathered:
        merged.update(part)
    return [merged[i] for i in range(total)]
