"""Evaluation during training.

Every ``trainer.eval_every`` steps the trainer evaluates the held-out problems of the run
(``data.eval_path``, or the generated task's test split), the files of ``data.eval_sets``
(``eval/<name>/...``) and, when ``data.eval_benchmarks`` names any, the first
``data.eval_limit`` problems of each of those benchmarks, through the
same sampling and grading code as ``nemo-red eval``
(:func:`nemo_red.evaluation.generate_records`), with the run's rollout engine and prompt
template. Problems are shared over data-parallel ranks and the records gathered, so every
rank logs the same metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.distributed as dist

from nemo_red.data.dataset import TokenizedProblem
from nemo_red.data.templates import PromptTemplate
from nemo_red.evaluation import (
    EvalItem,
    ResponseGrader,
    encode_prompts,
    generate_records,
    load_items,
    resolve_benchmarks,
    summarise,
)
from nemo_red.monitoring import names
from nemo_red.rollout.base import RolloutEngine, SamplingParams

if TYPE_CHECKING:
    from nemo_red.training.assembly import RunParts
    from nemo_red.training.config import TrainConfig

HELD_OUT = "heldout"


@dataclass(frozen=True)
class EvalSet:
    """Problems evaluated together under one name, with their prompts' token ids."""

    name: str
    items: list[EvalItem]
    prompt_ids: list[list[int]]
    benchmark: bool = True  # counted in ``eval/overall/accuracy``, the mean over benchmarks


def held_out_set(problems: Sequence[TokenizedProblem]) -> EvalSet:
    """The run's held-out problems (already tokenized) as an evaluation set."""
    return named_set(HELD_OUT, problems)


def named_set(name: str, problems: Sequence[TokenizedProblem]) -> EvalSet:
    """Held-out problems (already tokenized) logged as ``eval/<name>/...`` (``eval/...`` for
    the run's own held-out set); not a benchmark, so not in ``eval/overall/accuracy``."""
    items = [EvalItem(name, p.uid, p.question, p.gold) for p in problems]
    return EvalSet(name, items, [list(p.prompt_ids) for p in problems], benchmark=False)


def benchmark_sets(
    names: Sequence[str],
    data_dir: str | None,
    limit: int,
    tokenizer: Any,
    template: PromptTemplate,
    max_prompt_tokens: int,
) -> list[EvalSet]:
    """The first ``limit`` problems of each named benchmark whose prompts fit."""
    sets = []
    resolved = resolve_benchmarks(names, None if data_dir is None else Path(data_dir))
    for bench in resolved:
        items = load_items(bench, limit)
        prompts = encode_prompts(items, tokenizer, template)
        kept = [i for i, ids in enumerate(prompts) if len(ids) <= max_prompt_tokens]
        sets.append(EvalSet(bench.name, [items[i] for i in kept], [prompts[i] for i in kept]))
    return sets


def _set_metrics(set_name: str, summary: dict[str, Any]) -> dict[str, float]:
    if "accuracy" not in summary:
        return {}

    def key(metric: str) -> str:
        if set_name == HELD_OUT:
            return names.EVAL_PREFIX + metric
        return names.eval_metric(set_name, metric)

    metrics = {
        key("accuracy"): summary["accuracy"],
        key("response_length"): summary["length"]["mean"],
        key("truncated"): summary["truncated"],
    }
    n = summary["samples_per_item"]
    if n > 1:
        metrics[key(f"pass@{n}")] = summary[f"pass@{n}"]
    return metrics


def evaluate_sets(
    engine: RolloutEngine,
    tokenizer: Any,
    grader: ResponseGrader,
    sets: Sequence[EvalSet],
    params: SamplingParams,
    shard: tuple[int, int] = (0, 1),
    gather: Callable[[list[dict]], list[dict]] = lambda records: records,
) -> dict[str, float]:
    """Metrics of every set: ``eval/accuracy`` etc. for the held-out set and
    ``eval/<benchmark>/accuracy`` etc. for benchmarks, plus ``eval/overall/accuracy`` (the
    mean over benchmarks).

    Args:
        engine: The run's rollout engine.
        tokenizer: Decodes completions.
        grader: Grades them.
        sets: What to evaluate.
        params: Sampling parameters (``n`` samples per problem).
        shard: ``(rank, size)``: this rank evaluates problems ``rank::size`` of each set.
        gather: Merges the ranks' records (a collective under data parallelism).

    Returns:
        The metrics, the same on every rank.
    """
    rank, size = shard
    local: list[dict] = []
    for eval_set in sets:
        mine = list(range(rank, len(eval_set.items), size))
        if mine:
            records = generate_records(
                engine,
                tokenizer,
                grader,
                [eval_set.items[i] for i in mine],
                [eval_set.prompt_ids[i] for i in mine],
                params,
            )
            local.extend(r.to_json() for r in records)
    merged = gather(local)
    metrics: dict[str, float] = {}
    accuracies = []
    for eval_set in sets:
        summary = summarise([r for r in merged if r["benchmark"] == eval_set.name])
        metrics.update(_set_metrics(eval_set.name, summary))
        if eval_set.benchmark and "accuracy" in summary:
            accuracies.append(summary["accuracy"])
    if accuracies:
        metrics[names.OVERALL_ACCURACY] = sum(accuracies) / len(accuracies)
    return metrics


def evaluate_run(config: TrainConfig, parts: RunParts) -> dict[str, float]:
    """The evaluation of a training run now: its held-out and benchmark sets, sampled with
    ``rollout.eval_*`` on the run's engine, problems shared over data-parallel ranks
    (collective; every rank gets the same metrics). Empty when the run has no sets."""
    if not parts.eval:
        return {}
    from megatron.core import parallel_state as ps

    group = ps.get_data_parallel_group()
    size = ps.get_data_parallel_world_size()

    def gather(records: list[dict]) -> list[dict]:
        everyone: list[Any] = [None] * size
        dist.all_gather_object(everyone, records, group=group)
        return [record for part in everyone for record in part]

    rollout = config.rollout
    params = SamplingParams(
        n=rollout.eval_n,
        temperature=rollout.eval_temperature,
        max_new_tokens=rollout.eval_max_new_tokens or rollout.max_new_tokens,
        stop_token_ids=tuple(parts.stop_token_ids),
        seed=config.run.seed,
    )
    grader = ResponseGrader(parts.rewards.grader, think_split=config.trainer.think_split)
    return evaluate_sets(
        parts.engine,
        parts.tokenizer,
        grader,
        parts.eval,
        params,
        shard=(ps.get_data_parallel_rank(), size),
        gather=gather,
    )
