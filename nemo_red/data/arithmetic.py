"""Generated arithmetic problems with exact answers and step-by-step teacher traces.

The task of the tiny CPU default: problems such as ``Compute 7 + 5 * 3.`` whose teacher trace
evaluates the expression one operation at a time, multiplications first and then left to
right (``5 * 3 = 15. 7 + 15 = 22. The answer is \\boxed{22}.``). Rows are in the ``red``
layout: ``{"uid", "problem", "answer", "distill"}``.

Difficulty is tuned by the number of operands, their range and the operators (see
:data:`LEVELS`). Level 1 (two or three operands in 0..9, ``+`` and ``-``; the defaults) is
learnt by a model of about a million parameters in minutes of CPU training: a 0.9M-parameter
transformer trained from scratch on the traces for 2 minutes (one CPU thread, ~300 steps of 64)
answered 75% of test problems; level 2 (``*`` too, up to four operands) 14% in the same
budget, which leaves room for methods to differ.

The train/test split of a problem depends on its text only (a hash), not on the seed or the
rest of the configuration: a test problem is never a train problem of any task.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypedDict

__all__ = ["LEVELS", "ArithmeticTask", "evaluate", "split_of", "teacher_trace", "write_jsonl"]

Split = Literal["train", "test"]
OPERATORS = "+-*"
MAX_OPERANDS = 6
# Operand spaces up to this many problems (per operand count) are enumerated, so that every
# problem of a split is drawn once before any repeats; larger ones are sampled at random.
_ENUMERATE_LIMIT = 50_000
# Consecutive duplicate draws after which a sampled space counts as used up (repeats allowed).
_MAX_DUPLICATE_STREAK = 1_000
_HASH_BUCKETS = 10_000


def split_of(problem: str, test_fraction: float) -> Split:
    """The split of a problem: a hash of its text, independent of any seed.

    Args:
        problem: The problem text.
        test_fraction: Fraction of all problems that belong to the test split.

    Returns:
        ``"test"`` or ``"train"``.
    """
    digest = hashlib.blake2b(problem.encode(), digest_size=8).digest()
    bucket = int.from_bytes(digest, "little") % _HASH_BUCKETS
    return "test" if bucket < round(test_fraction * _HASH_BUCKETS) else "train"


def _steps(operands: list[int], ops: list[str]) -> tuple[list[str], int]:
    """The evaluation steps (multiplications first, then left to right) and the value."""
    steps: list[str] = []
    terms: list[int] = []
    signs: list[str] = []
    acc = operands[0]
    for op, value in zip(ops, operands[1:], strict=True):
        if op == "*":
            steps.append(f"{acc} * {value} = {acc * value}")
            acc *= value
        else:
            terms.append(acc)
            signs.append(op)
            acc = value
    terms.append(acc)
    total = terms[0]
    for sign, term in zip(signs, terms[1:], strict=True):
        result = total + term if sign == "+" else total - term
        steps.append(f"{total} {sign} {term} = {result}")
        total = result
    return steps, total


def evaluate(operands: list[int], ops: list[str]) -> int:
    """The exact value of ``operands[0] ops[0] operands[1] ...`` (usual precedence).

    Args:
        operands: The numbers, at least one.
        ops: The operators between them (``+``, ``-``, ``*``), one fewer than the operands.

    Returns:
        The value.
    """
    return _steps(operands, ops)[1]


def teacher_trace(operands: list[int], ops: list[str]) -> str:
    """The step-by-step solution ending in ``The answer is \\boxed{<value>}.``.

    Args:
        operands: The numbers, at least one.
        ops: The operators between them, one fewer than the operands.

    Returns:
        The trace, e.g. ``5 * 3 = 15. 7 + 15 = 22. The answer is \\boxed{22}.``.
    """
    steps, value = _steps(operands, ops)
    return "".join(f"{step}. " for step in steps) + f"The answer is \\boxed{{{value}}}."


def _problem_text(operands: list[int], ops: list[str]) -> str:
    parts = [str(operands[0])]
    for op, value in zip(ops, operands[1:], strict=True):
        parts += [op, str(value)]
    return "Compute " + " ".join(parts) + "."


@dataclass(frozen=True)
class ArithmeticTask:
    """Configuration of a family of arithmetic problems.

    Attributes:
        min_operands: Fewest operands of a problem (2..6).
        max_operands: Most operands of a problem (``min_operands``..6); the count is drawn
            uniformly from this range for every problem.
        max_value: Operands are drawn uniformly from ``0..max_value``.
        operators: The operators used, a subset of ``"+-*"`` (kept in that order).
        seed: Seed of the draws (the train/test partition does not depend on it).
        test_fraction: Fraction of all possible problems reserved for the test split.
    """

    min_operands: int = 2
    max_operands: int = 3
    max_value: int = 9
    operators: str = "+-"
    seed: int = 0
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not 2 <= self.min_operands <= self.max_operands <= MAX_OPERANDS:
            raise ValueError(
                f"need 2 <= min_operands <= max_operands <= {MAX_OPERANDS}, "
                f"got {self.min_operands}, {self.max_operands}"
            )
        if self.max_value < 1:
            raise ValueError(f"max_value must be >= 1, got {self.max_value}")
        if not self.operators or set(self.operators) - set(OPERATORS):
            raise ValueError(f"operators must be a non-empty subset of {OPERATORS!r}")
        if len(set(self.operators)) != len(self.operators):
            raise ValueError(f"operators repeat: {self.operators!r}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        canonical = "".join(op for op in OPERATORS if op in self.operators)
        object.__setattr__(self, "operators", canonical)

    @classmethod
    def level(cls, level: int, seed: int = 0) -> ArithmeticTask:
        """The preset of a difficulty level (see :data:`LEVELS`).

        Args:
            level: 1 (easiest) to 5.
            seed: Seed of the draws.

        Returns:
            The task.
        """
        if level not in LEVELS:
            raise ValueError(f"unknown level {level}; known: {sorted(LEVELS)}")
        return cls(**LEVELS[level], seed=seed)

    def space_size(self, num_operands: int) -> int:
        """Number of distinct problems with ``num_operands`` operands (both splits)."""
        return (self.max_value + 1) ** num_operands * len(self.operators) ** (num_operands - 1)

    def _decode(self, index: int, num_operands: int) -> tuple[list[int], list[str]]:
        """The problem of an index in ``range(space_size(num_operands))``."""
        base = self.max_value + 1
        operands = []
        for _ in range(num_operands):
            index, digit = divmod(index, base)
            operands.append(digit)
        ops = []
        for _ in range(num_operands - 1):
            index, digit = divmod(index, len(self.operators))
            ops.append(self.operators[digit])
        return operands, ops

    def _stream(self, num_operands: int, split: Split) -> Iterator[tuple[list[int], list[str]]]:
        """Endless problems of one operand count in one split, repeats only when used up."""
        rng = random.Random(f"arithmetic/{self.seed}/{split}/{num_operands}")
        size = self.space_size(num_operands)

        def in_split(problem: tuple[list[int], list[str]]) -> bool:
            return split_of(_problem_text(*problem), self.test_fraction) == split

        if size <= _ENUMERATE_LIMIT:
            pool = [p for p in map(self._decode, range(size), [num_operands] * size) if in_split(p)]
            if not pool:
                return
            while True:
                rng.shuffle(pool)
                yield from pool
        seen: set[int] = set()
        streak = 0
        while True:
            index = rng.randrange(size)
            problem = self._decode(index, num_operands)
            if not in_split(problem):
                continue
            if index in seen:
                streak += 1
                if streak < _MAX_DUPLICATE_STREAK:
                    continue
                seen.clear()
            streak = 0
            seen.add(index)
            yield problem

    def generate(self, n: int, split: Split = "train") -> list[dict[str, str]]:
        """Draw ``n`` problems of a split, deterministically given the configuration.

        Within a split and operand count no problem repeats until all have been drawn. The
        first ``m`` rows of ``generate(n)`` are ``generate(m)`` for ``m <= n``.

        Args:
            n: Number of rows.
            split: ``"train"`` or ``"test"`` (disjoint sets of problem texts).

        Returns:
            Rows ``{"uid", "problem", "answer", "distill"}``; the answer is an integer string.

        Raises:
            ValueError: On a bad ``n`` or split, or when the split holds no problem at all.
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        counts = list(range(self.min_operands, self.max_operands + 1))
        streams = {k: self._stream(k, split) for k in counts}
        rng = random.Random(f"arithmetic/{self.seed}/{split}/counts")
        rows: list[dict[str, str]] = []
        while len(rows) < n:
            k = rng.choice(counts)
            problem = next(streams[k], None)
            if problem is None:  # this operand count has no problem in the split
                counts.remove(k)
                if not counts:
                    raise ValueError(f"the {split} split of {self} holds no problem")
                continue
            operands, ops = problem
            rows.append(
                {
                    "uid": f"arith-{split}-{len(rows):06d}",
                    "problem": _problem_text(operands, ops),
                    "answer": str(evaluate(operands, ops)),
                    "distill": teacher_trace(operands, ops),
                }
            )
        return rows


class _Level(TypedDict):
    """The :class:`ArithmeticTask` fields a level sets."""

    min_operands: int
    max_operands: int
    max_value: int
    operators: str


# Presets, easiest first. Level 1 is the tiny CPU default. With two operands only, every
# problem is one fact of a table and held-out problems are unseen facts (a small model
# memorizes the train split and fails the test split); with three operands as well, the
# test problems' steps are facts that train traces hold, and the task generalizes.
LEVELS: dict[int, _Level] = {
    1: {"min_operands": 2, "max_operands": 3, "max_value": 9, "operators": "+-"},
    2: {"min_operands": 2, "max_operands": 4, "max_value": 9, "operators": "+-*"},
    3: {"min_operands": 2, "max_operands": 4, "max_value": 20, "operators": "+-*"},
    4: {"min_operands": 3, "max_operands": 5, "max_value": 50, "operators": "+-*"},
    5: {"min_operands": 4, "max_operands": 6, "max_value": 99, "operators": "+-*"},
}


def write_jsonl(rows: Iterable[Mapping[str, object]], path: str | Path) -> Path:
    """Write rows as JSON lines (UTF-8), creating parent directories.

    Args:
        rows: The rows.
        path: The output file (replaced).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
