"""A generated arithmetic task in named parts, with train, validation and test files.

For comparisons where Recall and Extend can separate (README, "Does RED hold up in
miniature?"): a base model is trained on some parts only (``base_parts``, e.g. sums of 2-3
numbers), and the methods then train on every part (e.g. also sums of 4 numbers), so one part
is solvable by the base and another needs what only the teacher traces carry. Written files
(``write_task_parts``)::

    base_train.jsonl              the train rows of the base parts
    train.jsonl                   the train rows of every part, interleaved
    validation_<part>.jsonl       held-out rows, for choosing settings
    test_<part>.jsonl             held-out rows, for reporting; disjoint from validation

Held-out rows are distinct problems of the arithmetic task's test split (a hash of the
problem text, so never a train problem); the first ``validation_size`` of a part's shuffled
held-out problems are its validation rows, the next ``test_size`` its test rows.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nemo_red.data.arithmetic import ArithmeticTask, write_jsonl

__all__ = ["PartSpec", "TaskParts", "eval_set_files", "write_task_parts"]

# Drawn from a part's test split to find its distinct held-out problems (repeats are dropped).
_HELD_OUT_DRAWS = 20_000


@dataclass(frozen=True)
class PartSpec:
    """The problems of one part (see :class:`nemo_red.data.arithmetic.ArithmeticTask`)."""

    operators: str = "+"
    min_operands: int = 2
    max_operands: int = 3
    max_value: int = 9

    def task(self, seed: int) -> ArithmeticTask:
        """The arithmetic task of this part (raises ValueError on bad fields)."""
        return ArithmeticTask(
            min_operands=self.min_operands,
            max_operands=self.max_operands,
            max_value=self.max_value,
            operators=self.operators,
            seed=seed,
        )


@dataclass(frozen=True)
class TaskParts:
    """A task in parts.

    Attributes:
        parts: part name -> its problems, in report order.
        base_parts: the parts the base model trains on (``base_train.jsonl``).
        train_size: train rows per part (``train.jsonl`` holds ``train_size`` x parts).
        validation_size: validation rows per part.
        test_size: test rows per part.
        seed: seed of the draws.
    """

    parts: dict[str, PartSpec] = field(default_factory=dict)
    base_parts: list[str] = field(default_factory=list)
    train_size: int = 2000
    validation_size: int = 100
    test_size: int = 100
    seed: int = 0

    def check(self) -> None:
        """Raises ValueError naming the field that is wrong."""
        if not self.parts:
            raise ValueError("task.parts is empty")
        for name, spec in self.parts.items():
            if not name.replace("_", "").isalnum():
                raise ValueError(f"task.parts: name {name!r} must be letters, digits and '_'")
            try:
                spec.task(self.seed)
            except ValueError as err:
                raise ValueError(f"task.parts.{name}: {err}") from None
        unknown = [p for p in self.base_parts if p not in self.parts]
        if not self.base_parts or unknown:
            raise ValueError(
                f"task.base_parts must name parts of {list(self.parts)}, got {self.base_parts}"
            )
        for key in ("train_size", "validation_size", "test_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"task.{key} must be >= 1, got {getattr(self, key)}")


def eval_set_files(folder: Path, parts: Mapping[str, PartSpec]) -> dict[str, Path]:
    """Evaluation set name -> file: ``validation_<part>`` and ``test_<part>`` per part."""
    return {
        f"{split}_{name}": folder / f"{split}_{name}.jsonl"
        for split in ("validation", "test")
        for name in parts
    }


def _held_out(task: ArithmeticTask, count: int, part: str, seed: int) -> list[dict[str, str]]:
    distinct: dict[str, dict[str, str]] = {}
    for row in task.generate(_HELD_OUT_DRAWS, "test"):
        distinct.setdefault(row["problem"], row)
        if len(distinct) >= 4 * count:
            break
    if len(distinct) < count:
        raise ValueError(
            f"task.parts.{part}: only {len(distinct)} distinct held-out problems, fewer than "
            f"validation_size + test_size = {count}; lower them or widen the part"
        )
    rows = list(distinct.values())
    random.Random(f"task_parts/{seed}/{part}").shuffle(rows)
    return rows[:count]


def write_task_parts(config: TaskParts, folder: Path) -> dict[str, Path]:
    """Writes the task's files into ``folder`` (see the module docstring).

    Returns:
        File name stem -> path: ``base_train``, ``train``, and every evaluation set.

    Raises:
        ValueError: on a bad configuration, or a part with too few held-out problems.
    """
    config.check()
    train: dict[str, list[dict[str, str]]] = {}
    written: dict[str, Path] = {}
    sets = eval_set_files(folder, config.parts)
    for name, spec in config.parts.items():
        task = spec.task(config.seed)
        rows = task.generate(config.train_size, "train")
        train[name] = [{**r, "uid": f"{name}-{r['uid']}"} for r in rows]
        held = _held_out(task, config.validation_size + config.test_size, name, config.seed)
        for split, chunk in (
            ("validation", held[: config.validation_size]),
            ("test", held[config.validation_size :]),
        ):
            rows = [{**r, "uid": f"{split}-{name}-{i:05d}"} for i, r in enumerate(chunk)]
            written[f"{split}_{name}"] = write_jsonl(rows, sets[f"{split}_{name}"])

    def interleave(names: list[str]) -> list[dict[str, str]]:
        return [train[n][i] for i in range(config.train_size) for n in names]

    written["base_train"] = write_jsonl(interleave(config.base_parts), folder / "base_train.jsonl")
    written["train"] = write_jsonl(interleave(list(config.parts)), folder / "train.jsonl")
    return written
