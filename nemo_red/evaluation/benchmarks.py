"""Benchmarks by name: where their files are, how to read them, and their items.

A benchmark is named (``math500``) and found in a data directory as ``<dir>/<name>/test.jsonl``
(or ``.parquet`` / ``.json``, or ``<dir>/<name>.jsonl``), or given as ``name=path`` or a bare
path. Built-in names carry the field map of the layout they are published in (the
simpleRL-reason evaluation files for the math sets, Hugging Face for the multiple-choice
ones) and the samples per problem the RED paper uses (avg@32 on AIME and AMC, else 1).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nemo_red.data.loading import SUFFIXES, load_problems
from nemo_red.evaluation.choice import (
    CHOICE_LAYOUTS,
    ChoiceFields,
    format_choice_question,
    load_choice_items,
)

__all__ = [
    "BENCHMARKS",
    "DATA_DIR_ENV",
    "Benchmark",
    "EvalItem",
    "ResolvedBenchmark",
    "default_data_dir",
    "load_items",
    "resolve_benchmarks",
]

DATA_DIR_ENV = "NEMO_RED_BENCHMARK_DATA"
Kind = Literal["math", "choice"]


@dataclass(frozen=True)
class Benchmark:
    """A built-in benchmark.

    Attributes:
        name: Its name (also the folder name in a data directory).
        kind: ``math`` (math-verify on the last ``\\boxed{}``) or ``choice`` (an option letter).
        layout: A data layout (``nemo_red.data.layouts``) for math, a choice layout
            (``CHOICE_LAYOUTS``) for multiple choice.
        fields: Overrides of the layout's field paths (e.g. the id field); a path is a
            string, or a list of strings for a choice layout's ``incorrect``.
        samples: Samples per problem in the RED paper's evaluation.
        title: A human-readable name.
    """

    name: str
    kind: Kind
    layout: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    samples: int = 1
    title: str = ""


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("math500", "math", "math", {"uid": "unique_id"}, 1, "MATH-500"),
        Benchmark("aime24", "math", "math", {"uid": "id"}, 32, "AIME 2024"),
        Benchmark("aime25", "math", "math", {}, 32, "AIME 2025"),
        Benchmark("amc23", "math", "math", {"uid": "id"}, 32, "AMC 2023"),
        Benchmark("minerva_math", "math", "minerva", {"uid": "idx"}, 1, "Minerva Math"),
        Benchmark("olympiadbench", "math", "olympiad", {"uid": "id"}, 1, "OlympiadBench"),
        Benchmark("gsm8k", "math", "gsm8k", {"uid": "idx"}, 1, "GSM8K"),
        Benchmark("arc_c", "choice", "arc", {}, 1, "ARC-Challenge"),
        Benchmark("gpqa_diamond", "choice", "gpqa", {}, 1, "GPQA-Diamond"),
        Benchmark("mmlu_pro", "choice", "mmlu_pro", {}, 1, "MMLU-Pro"),
    )
}
ALIASES = {
    "math": "math500",
    "minerva": "minerva_math",
    "olympiad": "olympiadbench",
    "arc": "arc_c",
    "arc_challenge": "arc_c",
    "gpqa": "gpqa_diamond",
}


@dataclass(frozen=True)
class ResolvedBenchmark:
    """A benchmark with the file to read."""

    benchmark: Benchmark
    path: Path

    @property
    def name(self) -> str:
        return self.benchmark.name


@dataclass(frozen=True)
class EvalItem:
    """One problem to evaluate.

    Attributes:
        benchmark: The benchmark's name.
        uid: Its id within the benchmark.
        question: The text put into the prompt template (options included for choice).
        gold: The gold answer (a letter for multiple choice).
        options: The options of a multiple-choice item (empty for math).
    """

    benchmark: str
    uid: str
    question: str
    gold: str
    options: tuple[str, ...] = ()

    @property
    def kind(self) -> Kind:
        return "choice" if self.options else "math"


def default_data_dir() -> Path:
    """``$NEMO_RED_BENCHMARK_DATA``, else ``data/benchmarks`` (relative to the working dir)."""
    return Path(os.environ.get(DATA_DIR_ENV, "data/benchmarks"))


def _find_file(name: str, data_dir: Path, alias: str | None = None) -> Path:
    candidates = []
    for folder in dict.fromkeys([name, alias or name]):
        candidates += [data_dir / folder / f"test{suffix}" for suffix in SUFFIXES]
        candidates += [data_dir / f"{folder}{suffix}" for suffix in SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"benchmark {name!r}: no file in {data_dir} (looked for {name}/test.jsonl|.parquet|"
        f".json and {name}.jsonl|.parquet|.json); set --data-dir or ${DATA_DIR_ENV}, or "
        f"give {name}=PATH"
    )


def _custom(name: str, kind: Kind, layout: str, fields: Mapping[str, Any] | None) -> Benchmark:
    return Benchmark(name, kind, layout, dict(fields or {}), 1, name)


def resolve_benchmarks(
    entries: Sequence[str],
    data_dir: Path | None = None,
    kind: Kind = "math",
    layout: str = "auto",
    fields: Mapping[str, Any] | None = None,
) -> list[ResolvedBenchmark]:
    """Benchmarks from names, ``name=path`` entries or paths.

    Args:
        entries: Built-in names (``math500``; aliases such as ``minerva`` work), ``name=path``
            (a built-in name keeps its field map; another name is a custom benchmark) or a
            path to a data file or folder (named after the file, or the folder for
            ``<folder>/test.jsonl``).
        data_dir: Where built-in names are looked up (default: :func:`default_data_dir`).
        kind: ``math`` or ``choice``, for custom benchmarks.
        layout: The layout of custom benchmarks (``auto`` for math; a choice layout name,
            or ``custom`` with ``fields``, for multiple choice).
        fields: Field paths of custom benchmarks.

    Returns:
        One resolved benchmark per entry, in order.

    Raises:
        ValueError: For an unknown name, a duplicate name or a bad ``kind``.
        FileNotFoundError: For a benchmark whose file is missing.
    """
    if kind not in ("math", "choice"):
        raise ValueError(f"benchmark kind must be 'math' or 'choice', got {kind!r}")
    data_dir = default_data_dir() if data_dir is None else Path(data_dir)
    resolved: list[ResolvedBenchmark] = []
    for entry in entries:
        written, _, given = entry.partition("=")
        written = written.strip()
        name = ALIASES.get(written, written)
        if given:
            path = Path(given)
            if not path.exists():
                raise FileNotFoundError(f"benchmark {name!r}: {path} does not exist")
            spec = BENCHMARKS.get(name) or _custom(name, kind, layout, fields)
        elif name in BENCHMARKS:
            spec, path = BENCHMARKS[name], _find_file(name, data_dir, alias=written)
        elif Path(name).exists():
            path = Path(name)
            stem = path.parent.name if path.stem == "test" else path.stem
            spec = BENCHMARKS.get(stem) or _custom(stem, kind, layout, fields)
        else:
            raise ValueError(
                f"unknown benchmark {name!r} (and no such file); built-in: "
                f"{', '.join(BENCHMARKS)}; or give NAME=PATH"
            )
        if any(r.name == spec.name for r in resolved):
            raise ValueError(f"benchmark {spec.name!r} is listed twice")
        resolved.append(ResolvedBenchmark(spec, path))
    return resolved


def _choice_fields(spec: Benchmark) -> ChoiceFields:
    values: dict[str, Any] = dict(spec.fields)
    if "incorrect" in values:
        values["incorrect"] = tuple(values["incorrect"])
    valid = {f.name for f in dataclasses.fields(ChoiceFields)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ValueError(
            f"{spec.name}: unknown choice field keys {unknown}; valid: {sorted(valid)}"
        )
    if spec.layout in CHOICE_LAYOUTS:
        return dataclasses.replace(CHOICE_LAYOUTS[spec.layout], **values)
    if spec.layout not in ("auto", "custom"):
        raise ValueError(
            f"{spec.name}: unknown multiple-choice layout {spec.layout!r}; valid: "
            f"{', '.join(CHOICE_LAYOUTS)}, custom"
        )
    return ChoiceFields(**values)


def load_items(resolved: ResolvedBenchmark, limit: int | None = None) -> list[EvalItem]:
    """The items of a benchmark, in file order (the first ``limit`` when given).

    Raises:
        DataError: For a bad row (naming file, row and field).
    """
    spec = resolved.benchmark
    if spec.kind == "choice":
        return [
            EvalItem(
                spec.name, c.uid, format_choice_question(c.question, c.options), c.answer, c.options
            )
            for c in load_choice_items(resolved.path, _choice_fields(spec), limit)
        ]
    problems = load_problems(resolved.path, spec.layout, dict(spec.fields) or None, limit=limit)
    return [EvalItem(spec.name, p.uid, p.question, p.gold) for p in problems.problems]
