"""Grading generated token ids, and evaluation during training.

Every ``trainer.eval_every`` steps the trainer evaluates the held-out problems of the run
(``data.eval_path``, or the generated task's test split) and, when ``data.eval_benchmarks``
names any, the first ``data.eval_limit`` problems of each of those benchmarks, through the
same sampling and grading code as ``nemo-red eval``
(:func:`nemo_red.evaluation.generate_records`), with the run's rollout engine and prompt
template. Problems are shared over data-parallel ranks and the records gathered, so every
rank logs the same metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

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
from nemo_red.rewards import GradeResult, MathGrader
from nemo_red.rollout.base import SamplingParams

HELD_OUT = "heldout"


@dataclass
class TokenGrader:
    """Decodes completions with the run's tokenizer and grades them with math-verify."""

    grader: MathGrader
    tokenizer: Any

    def grade(self, token_ids: Sequence[torch.Tensor], golds: Sequence[str]) -> list[GradeResult]:
        """One result per completion (decoded without special tokens)."""
        texts = [self.tokenizer.decode(t.tolist(), skip_special_tokens=True) for t in token_ids]
        return self.grader.grade(texts, list(golds))


@dataclass(frozen=True)
class EvalSet:
    """Problems evaluated together under one name, with their prompts' token ids."""

    name: str
    items: list[EvalItem]
    prompt_ids: list[list[int]]


def held_out_set(problems: Sequence[TokenizedProblem]) -> EvalSet:
    """The run's held-out problems (already tokenized) as an evaluation set."""
    items = [EvalItem(HELD_OUT, p.uid, p.question, p.gold) for p in problems]
    return EvalSet(HELD_OUT, items, [list(p.prompt_ids) for p in problems])


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


def _set_metrics(prefix: str, summary: dict[str, Any]) -> dict[str, float]:
    if "accuracy" not in summary:
        return {}
    metrics = {
        f"{prefix}/accuracy": summary["accuracy"],
        f"{prefix}/response_length": summary["length"]["mean"],
        f"{prefix}/truncated": summary["truncated"],
    }
    n = summary["samples_per_item"]
    if n > 1:
        metrics[f"{prefix}/pass@{n}"] = summary[f"pass@{n}"]
    return metrics


def evaluate_sets(
    engine: Any,
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
        prefix = "eval" if eval_set.name == HELD_OUT else f"eval/{eval_set.name}"
        metrics.update(_set_metrics(prefix, summary))
        if eval_set.name != HELD_OUT and "accuracy" in summary:
            accuracies.append(summary["accuracy"])
    if accuracies:
        metrics["eval/overall/accuracy"] = sum(accuracies) / len(accuracies)
    return metrics
