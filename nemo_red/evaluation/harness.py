"""Evaluate a policy on benchmarks: sample, grade, record, summarise.

:func:`generate_records` is the core shared with the training loop (which calls it on a
subset every ``trainer.eval_every`` steps): prompts -> ``n`` completions per problem from any
:class:`~nemo_red.rollout.base.RolloutEngine` -> decoded text -> grades (math-verify in worker
processes for math, option letters for multiple choice) -> one :class:`ItemRecord` per problem.

:func:`evaluate_benchmarks` runs whole benchmarks for ``nemo-red eval``: problems go in
chunks of ``chunk_size``; each chunk is sampled with a seed derived from the run's seed, the
benchmark and the chunk's index, and recorded before the next starts, so a resumed evaluation
gives what an uninterrupted one would (with a deterministic engine) without regrading
anything. It writes ``records.jsonl`` (resumable), ``results.json`` (settings, versions,
metrics per benchmark and overall, and every item's completions and grades) and
``results.md`` (the table also printed at the end).

Items that cannot be scored are dropped and counted per benchmark and reason, never lost
silently (:data:`DROP_REASONS`): a prompt longer than ``max_prompt_tokens``, a prompt that
leaves the model's context no room to generate, and a gold answer that cannot be parsed
(such an item is sampled and recorded, but left out of the metrics).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_red.data.dataset import encode_prompts as encode_questions
from nemo_red.data.templates import PromptTemplate
from nemo_red.evaluation.benchmarks import EvalItem, ResolvedBenchmark, load_items
from nemo_red.evaluation.choice import grade_choice
from nemo_red.evaluation.metrics import overall, summarise
from nemo_red.evaluation.records import ItemRecord, RecordStore, SampleRecord
from nemo_red.evaluation.report import markdown_table, run_info
from nemo_red.rewards.verification import GradeReason, GradeResult
from nemo_red.rollout.base import SamplingParams

__all__ = [
    "DROP_REASONS",
    "EvalSettings",
    "ResponseGrader",
    "encode_prompts",
    "evaluate_benchmarks",
    "generate_records",
]


# reason -> what it means; the keys of each benchmark's ``dropped`` counts in the results
DROP_REASONS = {
    "prompt_too_long": "prompt longer than max_prompt_tokens",
    "prompt_exceeds_context": "prompt leaves no room to generate in the model's context",
    "invalid_gold": "gold answer cannot be parsed",
}


@dataclass(frozen=True)
class EvalSettings:
    """How problems are sampled and graded.

    Attributes:
        n: Samples per problem; None: each benchmark's setting in the RED paper (32 for
            AIME and AMC, else 1).
        temperature: Sampling temperature (the paper: 0.6; 0 = greedy).
        top_p: Nucleus sampling threshold.
        top_k: Top-k (0 = off).
        max_new_tokens: Most tokens per completion (the engine may lower it to fit the
            model's context).
        seed: Base seed of the sampling.
        chunk_size: Problems per engine call and per write to the records file.
        max_prompt_tokens: Problems with longer prompts are dropped and counted (None: no
            limit).
        pass_ks: The k of pass@k (default: 1, powers of two, n).
    """

    n: int | None = None
    temperature: float = 0.6
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 8192
    seed: int = 0
    chunk_size: int = 64
    max_prompt_tokens: int | None = None
    pass_ks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.n is not None and self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.chunk_size < 1 or self.max_new_tokens < 1:
            raise ValueError("chunk_size and max_new_tokens must be >= 1")

    def samples(self, benchmark: ResolvedBenchmark) -> int:
        return self.n if self.n is not None else benchmark.benchmark.samples

    def params(self, n: int, seed: int, stop_token_ids: Sequence[int]) -> SamplingParams:
        return SamplingParams(
            n=n,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            max_new_tokens=self.max_new_tokens,
            stop_token_ids=tuple(stop_token_ids),
            seed=seed,
        )


class ResponseGrader:
    """Grades decoded completions: math items with a ``MathGrader``, choice items in-process.

    Args:
        math_grader: A :class:`~nemo_red.rewards.MathGrader` (its ``think_split`` applies).
        think_split: Only grade the text after ``</think>`` in multiple-choice items too.
    """

    def __init__(self, math_grader: Any, think_split: bool = False) -> None:
        self.math_grader = math_grader
        self.think_split = think_split

    def grade(self, items: Sequence[EvalItem], texts: Sequence[str]) -> list[GradeResult]:
        """One grade per (item, text) pair."""
        results: list[GradeResult | None] = [None] * len(texts)
        math = [i for i, item in enumerate(items) if item.kind == "math"]
        if math:
            graded = self.math_grader.grade([texts[i] for i in math], [items[i].gold for i in math])
            for i, result in zip(math, graded, strict=True):
                results[i] = result
        for i, item in enumerate(items):
            if item.kind == "choice":
                results[i] = grade_choice(texts[i], item.gold, item.options, self.think_split)
        return [r for r in results if r is not None]


def encode_prompts(
    items: Sequence[EvalItem], tokenizer: Any, template: PromptTemplate
) -> list[list[int]]:
    """Prompt token ids of each item, tokenized as for training (see
    :func:`nemo_red.data.dataset.encode_prompts`)."""
    return encode_questions([item.question for item in items], tokenizer, template)


def generate_records(
    engine: Any,
    tokenizer: Any,
    grader: ResponseGrader,
    items: Sequence[EvalItem],
    prompt_ids: Sequence[Sequence[int]],
    params: SamplingParams,
) -> list[ItemRecord]:
    """Sample ``params.n`` completions per item, decode and grade them.

    Args:
        engine: A rollout engine.
        tokenizer: Decodes completions (special tokens skipped).
        grader: Grades the decoded text.
        items: The problems.
        prompt_ids: Their prompts' token ids.
        params: Sampling parameters.

    Returns:
        One record per item, in order.
    """
    if not items:
        return []
    outputs = engine.generate([list(p) for p in prompt_ids], params)
    flat = [(item, c) for item, per in zip(items, outputs, strict=True) for c in per]
    texts = [
        tokenizer.decode(list(map(int, c.token_ids)), skip_special_tokens=True) for _, c in flat
    ]
    grades = grader.grade([item for item, _ in flat], texts)
    graded = iter(zip(flat, texts, grades, strict=True))
    records = []
    for item, per in zip(items, outputs, strict=True):
        samples = [
            SampleRecord(
                text=text,
                extracted=grade.extracted,
                reason=grade.reason.value,
                tokens=len(completion.token_ids),
                finish_reason=completion.finish_reason,
            )
            for (_, completion), text, grade in itertools.islice(graded, len(per))
        ]
        valid = all(s.reason != GradeReason.UNPARSABLE_GOLD.value for s in samples)
        records.append(ItemRecord(item.benchmark, item.uid, item.gold, tuple(samples), valid))
    return records


def chunk_seed(seed: int, benchmark: str, chunk: int) -> int:
    """The sampling seed of one chunk of a benchmark."""
    return (seed * 1_000_003 + zlib.crc32(benchmark.encode()) + chunk * 7919) % 2**31


def evaluate_benchmarks(
    engine: Any,
    tokenizer: Any,
    template: PromptTemplate,
    grader: ResponseGrader,
    benchmarks: Sequence[ResolvedBenchmark],
    settings: EvalSettings,
    out_dir: Path,
    stop_token_ids: Sequence[int] = (),
    limit: int | None = None,
    restart: bool = False,
    describe: Mapping[str, Any] | None = None,
    progress: bool = True,
    max_context: int | None = None,
) -> dict[str, Any]:
    """Evaluate benchmarks, resumably, and write the results (see the module docstring).

    Args:
        engine: The rollout engine holding the policy.
        tokenizer: The policy's tokenizer.
        template: The prompt template.
        grader: Grades completions.
        benchmarks: What to evaluate.
        settings: Sampling and grading settings.
        out_dir: Where ``records.jsonl``, ``results.json`` and ``results.md`` go.
        stop_token_ids: Token ids that end a completion.
        limit: Only the first ``limit`` problems of each benchmark.
        restart: Discard the records of an earlier evaluation in ``out_dir``.
        describe: Extra settings recorded with the results (model, engine, ...); part of
            what must match when resuming.
        progress: Show a progress bar on stderr.
        max_context: The model's context in tokens (``max_position_embeddings``); prompts
            of that many tokens or more are dropped and counted (None: no check).

    Returns:
        The results (what ``results.json`` holds): per benchmark its metrics and
        ``dropped`` (count per reason of :data:`DROP_REASONS`), and ``prompt_limits``
        (``max_prompt_tokens`` and ``max_context``).
    """
    out_dir = Path(out_dir)
    items = {b.name: load_items(b, limit) for b in benchmarks}
    prompts = {name: encode_prompts(its, tokenizer, template) for name, its in items.items()}
    record_settings = {
        **dict(describe or {}),
        "template": dataclasses.asdict(template),
        "sampling": {**dataclasses.asdict(settings), "pass_ks": list(settings.pass_ks)},
        "stop_token_ids": list(stop_token_ids),
        "limit": limit,
        "benchmarks": {
            b.name: {"path": str(b.path), "items": len(items[b.name]), "n": settings.samples(b)}
            for b in benchmarks
        },
    }
    store = RecordStore(out_dir / "records.jsonl", record_settings, restart=restart)
    bar = _progress_bar(progress, sum(len(v) for v in items.values()), len(store))
    dropped: dict[str, dict[str, int]] = {}
    try:
        for bench in benchmarks:
            dropped[bench.name] = _run_benchmark(
                bench,
                items[bench.name],
                prompts[bench.name],
                (engine, tokenizer, grader),
                settings,
                stop_token_ids,
                store,
                bar,
                max_context,
            )
    finally:
        bar.close()
    results = _results(benchmarks, items, store, settings, record_settings, dropped)
    results["prompt_limits"] = {
        "max_prompt_tokens": settings.max_prompt_tokens,
        "max_context": max_context,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_dir / "results.json", json.dumps(results, indent=1, ensure_ascii=False))
    table = markdown_table(results["benchmarks"], results["overall"], results["prompt_limits"])
    _write_atomic(out_dir / "results.md", table + "\n")
    return results


def _run_benchmark(
    bench: ResolvedBenchmark,
    items: list[EvalItem],
    prompts: list[list[int]],
    policy: tuple[Any, Any, ResponseGrader],
    settings: EvalSettings,
    stop_token_ids: Sequence[int],
    store: RecordStore,
    bar: Any,
    max_context: int | None,
) -> dict[str, int]:
    """Evaluates the pending items of one benchmark; returns how many prompts were dropped,
    by reason (``prompt_too_long``, ``prompt_exceeds_context``).

    ``policy`` is ``(engine, tokenizer, grader)``.
    """
    limit = settings.max_prompt_tokens
    dropped = {"prompt_too_long": 0, "prompt_exceeds_context": 0}
    n = settings.samples(bench)
    for chunk, start in enumerate(range(0, len(items), settings.chunk_size)):
        todo = [
            i
            for i in range(start, min(start + settings.chunk_size, len(items)))
            if not store.done(bench.name, items[i].uid)
        ]
        fits = []
        for i in todo:
            if limit is not None and len(prompts[i]) > limit:
                dropped["prompt_too_long"] += 1
            elif max_context is not None and len(prompts[i]) >= max_context:
                dropped["prompt_exceeds_context"] += 1
            else:
                fits.append(i)
        bar.update(len(todo) - len(fits))
        if not fits:
            continue
        params = settings.params(n, chunk_seed(settings.seed, bench.name, chunk), stop_token_ids)
        records = generate_records(
            *policy, [items[i] for i in fits], [prompts[i] for i in fits], params
        )
        store.append(records)
        bar.update(len(fits))
    return dropped


def _results(
    benchmarks: Sequence[ResolvedBenchmark],
    items: Mapping[str, list[EvalItem]],
    store: RecordStore,
    settings: EvalSettings,
    record_settings: Mapping[str, Any],
    dropped: Mapping[str, Mapping[str, int]],
) -> dict[str, Any]:
    summaries: dict[str, Any] = {}
    records: dict[str, Any] = {}
    for bench in benchmarks:
        order = {item.uid: i for i, item in enumerate(items[bench.name])}
        done = sorted(store.records(bench.name), key=lambda r: order.get(r.uid, len(order)))
        rows = [r.to_json() for r in done]
        summary = summarise(rows, settings.pass_ks)
        prompts = dropped.get(bench.name, {})
        counts = {
            "prompt_too_long": prompts.get("prompt_too_long", 0),
            "prompt_exceeds_context": prompts.get("prompt_exceeds_context", 0),
            "invalid_gold": summary["invalid_items"],
        }
        summaries[bench.name] = {
            **summary,
            "prompt_too_long": counts["prompt_too_long"],
            "dropped": counts,
            "dropped_items": sum(counts.values()),
            "title": bench.benchmark.title,
        }
        records[bench.name] = rows
    return {
        **run_info(),
        "settings": dict(record_settings),
        "benchmarks": summaries,
        "overall": overall(summaries),
        "records": records,
    }


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _progress_bar(enabled: bool, total: int, initial: int) -> Any:
    if enabled:
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc="eval", unit="problem", file=sys.stderr)

    class _Silent:
        def update(self, count: int) -> None:
            pass

        def close(self) -> None:
            pass

    return _Silent()
