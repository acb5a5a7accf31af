"""The RED training loop (DESIGN section 3's data flow), one optimizer step per phase list.

Per iteration: sample prompts -> rollouts (sharded over data-parallel ranks) -> grade ->
groups of G online + 1 teacher trace -> advantages and beta -> log pi_old and entropies ->
entropy regulator w(t) -> K updates -> refit the engine -> metrics -> checkpoint / eval.

Where it departs from the paper's public code, and why:
* Teacher traces are found by an explicit flag, never by position in the batch.
* Groups whose rewards all agree are dropped only when ``algorithm.dynamic_sampling`` is on,
  and are not regenerated (the batch shrinks for that step; the count is logged).
* The offline item's reward is graded like any response unless ``data.trust_offline``.
* Steps with non-finite gradients are skipped and logged; training stops after
  ``trainer.max_consecutive_skips`` in a row.
* ``algorithm.schedule`` (HPT, ReLIFT) changes which items a step trains on, not the loss
  terms; see ``schedules.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

from nemo_red.algorithms import LossSpec, StepContext
from nemo_red.rollout.base import Completion, SamplingParams, logprob_gap
from nemo_red.training.config import StageConfig, TrainConfig
from nemo_red.training.groups import GroupInput, StepGroups, build_groups
from nemo_red.training.schedules import ReliftBuffer, hpt_loss, route_hpt


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
            self.times[f"time/{name}"] = self.times.get(f"time/{name}", 0.0) + (
                time.perf_counter() - start
            )


def stage_at(stages: list[StageConfig], step: int) -> StageConfig:
    """The stage that step ``step`` (0-based) belongs to."""
    end = 0
    for stage in stages:
        end += stage.steps
        if step < end:
            return stage
    return stages[-1]


class StepRunner:
    """One training iteration: the phases of the module docstring, with their metrics.

    Holds references to the run's parts (built by ``trainer.RedTrainer``).
    """

    def __init__(self, config: TrainConfig, parts: Any) -> None:
        self.config = config
        self.parts = parts
        self.teacher_rewards: dict[str, float] = {}
        self.relift = ReliftBuffer(config.algorithm.relift.buffer_size)

    def state_dict(self) -> dict[str, Any]:
        """The loop's own training state (JSON-serialisable), saved in checkpoints."""
        state: dict[str, Any] = {"teacher_rewards": self.teacher_rewards}
        if self.config.algorithm.schedule == "relift":
            state["relift_buffer"] = self.relift.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict` (keys a checkpoint lacks keep their initial value)."""
        self.teacher_rewards = dict(state.get("teacher_rewards", {}))
        if "relift_buffer" in state:
            self.relift.load_state_dict(state["relift_buffer"])

    def loss_for(self, stage: StageConfig) -> LossSpec:
        """The loss of a step of ``stage``: its preset, overrides, and the schedule's terms."""
        spec = self.config.algorithm.loss_spec(stage.preset)
        algo = self.config.algorithm
        return hpt_loss(spec, algo.hpt.sft_coef) if algo.schedule == "hpt" else spec

    # -------------------------------------------------------------- rollouts
    def _dp(self) -> tuple[int, int]:
        from megatron.core import parallel_state as ps

        return ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()

    def _generate_and_grade(self, problems: list[Any], step: int, timer: PhaseTimer) -> list[Any]:
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
            outputs = parts.engine.generate([problems[i].prompt_ids for i in mine], params)
        with timer.phase("grading"):
            flat = [(i, c) for i, per in zip(mine, outputs, strict=True) for c in per]
            graded = parts.grader.grade(
                [c.token_ids for _, c in flat], [problems[i].gold for i, _ in flat]
            )
        local: dict[int, tuple[list[Completion], list[float]]] = {i: ([], []) for i in mine}
        for (i, completion), result in zip(flat, graded, strict=True):
            local[i][0].append(completion)
            local[i][1].append(result.reward)
        return _all_gather_dict(local, len(problems))

    def _teacher_reward(self, problem: Any) -> float:
        if self.config.data.trust_offline:
            return 1.0
        if problem.uid not in self.teacher_rewards:
            result = self.parts.grader.grade([torch.tensor(problem.teacher_ids)], [problem.gold])
            self.teacher_rewards[problem.uid] = result[0].reward
        return self.teacher_rewards[problem.uid]

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
        inputs = [
            GroupInput(
                prompt_ids=p.prompt_ids,
                completions=completions,
                online_rewards=rewards,
                teacher_ids=p.teacher_ids if spec.uses_offline else None,
                teacher_reward=self._teacher_reward(p) if spec.uses_offline else 0.0,
            )
            for p, (completions, rewards) in zip(problems, rolled, strict=True)
        ]
        schedule_metrics: dict[str, float] = {}
        if config.algorithm.schedule == "hpt" and spec.uses_online:
            inputs, to_sft = route_hpt(inputs, config.algorithm.hpt.gate)
            schedule_metrics["hpt/sft_fraction"] = sum(to_sft) / len(to_sft)
        groups = build_groups(
            inputs,
            spec.advantage,
            config.algorithm.dynamic_sampling,
            config.algorithm.overlong_buffer,
            config.rollout.max_new_tokens,
        )
        with timer.phase("logprobs"):
            stats = parts.actor.compute_logprobs_and_entropy(groups.batch)
        metrics = self._pre_update_metrics(groups, stats)
        batch = groups.batch.with_fields(old_logprobs=stats.logprobs)
        ctx = StepContext(step=step, entropy_weight=parts.regulator.weight)
        with timer.phase("train"):
            train_metrics = self._updates(batch, spec, ctx)
        if config.algorithm.schedule == "relift" and spec.uses_online:
            with timer.phase("relift"):
                schedule_metrics.update(self._relift(indices, [r for _, r in rolled], ctx))
        with timer.phase("refit"):
            parts.engine.update_weights(parts.actor)
        tokens = int(sum(len(t) for t in batch.tokens))
        metrics.update(train_metrics)
        metrics.update(schedule_metrics)
        metrics["skipped"] = max(train_metrics["skipped"], metrics.get("relift/skipped", 0.0))
        metrics.update(timer.times)
        metrics["time/step"] = sum(timer.times.values())
        metrics["throughput/tokens_per_s"] = tokens / max(metrics["time/step"], 1e-9)
        metrics["stage/sft_only"] = float(not spec.uses_online)
        return metrics

    def _relift(
        self, indices: list[int], rewards: list[list[float]], ctx: StepContext
    ) -> dict[str, float]:
        """Buffers the failed questions; when the buffer is full, one SFT update on it."""
        metrics = {"relift/added": float(self.relift.add_failures(indices, rewards))}
        metrics["relift/sft_step"] = float(self.relift.full)
        if self.relift.full:
            buffered = [self.parts.train[i] for i in self.relift.drain()]
            spec = self.config.algorithm.loss_spec(self.config.algorithm.relift.preset)
            inputs = [
                GroupInput(p.prompt_ids, [], [], p.teacher_ids, self._teacher_reward(p))
                for p in buffered
            ]
            batch = build_groups(inputs, spec.advantage).batch
            stats = self.parts.actor.compute_logprobs_and_entropy(batch)
            out = self.parts.actor.train_step(
                batch.with_fields(old_logprobs=stats.logprobs), spec, ctx
            )
            metrics.update({f"relift/{k}": v for k, v in out.items()})
            metrics["relift/questions"] = float(len(buffered))
            metrics["entropy/h_sft"] = stats.h_sft
        metrics["relift/buffer"] = float(len(self.relift.items))
        return metrics

    def _pre_update_metrics(self, groups: StepGroups, stats: Any) -> dict[str, float]:
        batch, parts = groups.batch, self.parts
        online, offline = ~batch.is_offline, batch.is_offline
        lengths = batch.response_lengths.float()
        metrics: dict[str, float] = {"groups/dropped": float(groups.dropped_groups)}
        if online.any():
            metrics["reward/online_accuracy"] = float(batch.rewards[online].mean())
            metrics["length/online_mean"] = float(lengths[online].mean())
            metrics["length/online_truncated"] = float(groups.truncated[online].float().mean())
            mask = batch.response_mask & online[:, None]
            metrics.update(logprob_gap(groups.engine_logprobs, stats.logprobs, mask))
            beta = batch.group_accuracy[online]
            metrics["beta/mean"] = float(beta.mean())
            metrics["beta/all_wrong"] = float((beta == 0).float().mean())
            metrics["beta/all_right"] = float((beta == 1).float().mean())
            metrics["entropy/h_rl"] = stats.h_rl
        if offline.any():
            metrics["reward/offline_accuracy"] = float(batch.rewards[offline].mean())
            metrics["length/offline_mean"] = float(lengths[offline].mean())
            metrics["entropy/h_sft"] = stats.h_sft
        if online.any() and offline.any():
            update = parts.regulator.update(stats.h_rl, stats.h_sft)
            metrics["entropy/delta_rl"] = update.delta_rl
            metrics["entropy/delta_sft"] = update.delta_sft
        metrics["entropy/w"] = parts.regulator.weight
        return metrics

    def _updates(self, batch: Any, spec: LossSpec, ctx: StepContext) -> dict[str, float]:
        """K optimizer steps on consecutive slices of the step's groups; metrics averaged."""
        k = self.config.trainer.updates_per_step
        n = len(batch)
        bounds = [round(n * j / k) for j in range(k + 1)]
        collected: dict[str, list[float]] = {}
        for j in range(k):
            rows = list(range(bounds[j], bounds[j + 1]))
            if not rows:
                continue
            out = self.parts.actor.train_step(batch.select(rows) if k > 1 else batch, spec, ctx)
            for key, value in out.items():
                collected.setdefault(key, []).append(value)
        merged = {key: sum(values) / len(values) for key, values in collected.items()}
        merged["skipped"] = max(collected.get("skipped", [0.0]))
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
