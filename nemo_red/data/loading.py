"""Load training problems from ``.jsonl``, ``.json`` and ``.parquet`` files.

Row numbers in messages and default uids are 1-based: the line number in a ``.jsonl``
file (blank lines are ignored but counted), the position in a ``.json`` list or in a
``.parquet`` file.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_red.data.layouts import FieldMap, resolve_field_map
from nemo_red.data.records import DataError, Problem
from nemo_red.data.rows import FieldError, extract_fields

__all__ = [
    "SUFFIXES",
    "DataError",
    "LoadResult",
    "check_golds",
    "find_data_files",
    "iter_rows",
    "load_problems",
]

logger = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".json", ".parquet")
PathLike = str | os.PathLike[str]
_PARQUET_BATCH_ROWS = 1024


@dataclass
class LoadResult:
    """What :func:`load_problems` returns.

    Attributes:
        problems: The problems, in file order (files sorted by name).
        skipped: One message per skipped row (``on_bad_row="skip"``), naming file, row and
            field.
        layout: The layout used (the detected one when ``layout="auto"``).
        skip_counts: Skipped rows per reason (``missing_field``, ``empty_question``, ...).
    """

    problems: list[Problem]
    skipped: list[str]
    layout: str
    skip_counts: dict[str, int] = field(default_factory=dict)


def find_data_files(path: PathLike | Sequence[PathLike]) -> list[Path]:
    """Expand a file, a directory, a glob pattern, or a list of these, into data files.

    Args:
        path: A file; a directory (its ``.jsonl``/``.json``/``.parquet`` files, not
            recursive, sorted by name); a glob pattern (``**`` allowed; matches sorted); or
            a list of these (in the given order).

    Returns:
        The files.

    Raises:
        DataError: When a path does not exist, a file has an unsupported suffix, or a
            directory or pattern holds no data file.
    """
    if not isinstance(path, str | os.PathLike):
        return [file for item in path for file in find_data_files(item)]
    text = os.fspath(path)
    if any(char in text for char in "*?["):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if _is_data_file(p))
        if not files:
            raise DataError(text, None, "file", f"no {'/'.join(SUFFIXES)} file matches")
        return files
    candidate = Path(text)
    if candidate.is_dir():
        files = sorted(p for p in candidate.iterdir() if _is_data_file(p))
        if not files:
            raise DataError(text, None, "file", f"directory holds no {'/'.join(SUFFIXES)} file")
        return files
    if not candidate.is_file():
        raise DataError(text, None, "file", "no such file or directory")
    if candidate.suffix not in SUFFIXES:
        raise DataError(text, None, "file", f"unsupported file type; expected {SUFFIXES}")
    return [candidate]


def _is_data_file(path: PathLike) -> bool:
    return Path(path).suffix in SUFFIXES and Path(path).is_file()


def iter_rows(file: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(1-based row, row)`` of a data file; a row that cannot be decoded is yielded
    as a :class:`~nemo_red.data.rows.FieldError` (the caller decides to raise or skip)."""
    if file.suffix == ".jsonl":
        with file.open(encoding="utf-8") as stream:
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as error:
                    yield number, FieldError("invalid_json", f"invalid JSON: {error}")
    elif file.suffix == ".json":
        try:
            rows = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise DataError(str(file), None, "file", f"invalid JSON: {error}") from error
        if not isinstance(rows, list):
            raise DataError(
                str(file), None, "file", f"expected a JSON list of rows, got {type(rows).__name__}"
            )
        yield from enumerate(rows, start=1)
    else:
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(file)
        except Exception as error:  # pyarrow raises several types for unreadable files
            raise DataError(str(file), None, "file", f"cannot read parquet: {error}") from error
        number = 0
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
            for row in batch.to_pylist():
                number += 1
                yield number, row


def _first_row(files: Sequence[Path]) -> Any:
    for file in files:
        for _, row in iter_rows(file):
            if isinstance(row, Mapping):
                return row
    return None


def load_problems(
    path: PathLike | Sequence[PathLike],
    layout: str = "auto",
    fields: FieldMap | Mapping[str, Any] | None = None,
    on_bad_row: str = "error",
    require_teacher: bool = False,
    limit: int | None = None,
) -> LoadResult:
    """Load problems (question, gold answer, optional teacher trace) from data files.

    Args:
        path: A file, directory, glob pattern, or list of these (see
            :func:`find_data_files`).
        layout: ``"auto"`` (detected from the first row's keys), ``"luffy"``, ``"red"``,
            ``"math"``, ``"gsm8k"`` or ``"custom"``.
        fields: Field paths for ``custom`` (e.g. ``{"question": "input.text", "answer":
            "meta.gold"}``), or overrides of a built-in layout (e.g. ``{"uid": "id"}``).
        on_bad_row: ``"error"`` raises :class:`DataError` at the first bad row; ``"skip"``
            skips it and records a message in ``skipped``.
        require_teacher: A row without a teacher trace is a bad row.
        limit: Stop after this many problems.

    Returns:
        The problems, the skipped-row messages and the layout used.

    Raises:
        DataError: For a bad row (invalid JSON, missing field, wrong type, empty question,
            missing gold, missing teacher when required, duplicate uid) when
            ``on_bad_row="error"``; and always for a missing or unreadable file.
        ValueError: For an unknown layout, bad field paths or bad arguments.
    """
    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    files = find_data_files(path)
    first_row = _first_row(files) if layout == "auto" else None
    layout, fmap = resolve_field_map(layout, fields, first_row)
    if require_teacher and fmap.teacher is None:
        raise ValueError(f"require_teacher is set but layout {layout!r} has no teacher field")

    problems: list[Problem] = []
    skipped: list[str] = []
    counts: Counter[str] = Counter()
    first_seen: dict[str, str] = {}
    for file in files:
        if limit is not None and len(problems) >= limit:
            break
        for number, row in iter_rows(file):
            if limit is not None and len(problems) >= limit:
                break
            try:
                problem = _to_problem(row, fmap, file, number, require_teacher, first_seen)
            except DataError as error:
                if on_bad_row == "error":
                    raise
                skipped.append(str(error))
                counts[error.kind] += 1
                continue
            first_seen[problem.uid] = problem.source
            problems.append(problem)
    if skipped:
        summary = ", ".join(f"{kind}: {n}" for kind, n in sorted(counts.items()))
        logger.warning("skipped %d bad rows (%s); first: %s", len(skipped), summary, skipped[0])
    return LoadResult(problems, skipped, layout, dict(counts))


def _to_problem(
    row: Any,
    fmap: FieldMap,
    file: Path,
    number: int,
    require_teacher: bool,
    first_seen: Mapping[str, str],
) -> Problem:
    try:
        if isinstance(row, FieldError):
            raise row
        values = extract_fields(row, fmap)
    except FieldError as error:
        raise DataError(str(file), number, error.kind, error.detail) from None
    if require_teacher and values.teacher is None:
        raise DataError(
            str(file), number, "missing_teacher", f"missing teacher field {fmap.teacher!r}"
        )
    uid = values.uid if values.uid is not None else f"{file.stem}:{number}"
    if uid in first_seen:
        hint = "" if fmap.uid else " (files with the same stem: set an id field with fields=)"
        raise DataError(
            str(file),
            number,
            "duplicate_uid",
            f"field {fmap.uid or 'uid'!r}: duplicate uid {uid!r}, first at {first_seen[uid]}"
            + hint,
        )
    return Problem(
        uid=uid,
        question=values.question,
        gold=values.gold,
        teacher=values.teacher,
        source=f"{file}:{number}",
    )


def check_golds(
    problems: Sequence[Problem],
    num_workers: int = 2,
    strict: bool = False,
    timeout_s: float | None = None,
) -> list[str]:
    """Report gold answers that math-verify cannot parse (they can never be graded).

    Spawns worker processes (through
    :func:`~nemo_red.rewards.grader.find_unparsable_golds`), so it is kept apart from
    :func:`load_problems`.

    Args:
        problems: The loaded problems.
        num_workers: Worker processes.
        strict: Also report golds that math-verify keeps only as raw text.
        timeout_s: Parsing budget per gold (default: the grader's).

    Returns:
        One message per unparsable gold: ``"<file>:<row>: uid '...': gold '...' cannot be
        parsed by math-verify"``; empty when all parse.
    """
    from nemo_red.rewards.grader import DEFAULT_TIMEOUT_S, find_unparsable_golds

    if not problems:
        return []
    bad = find_unparsable_golds(
        [p.gold for p in problems],
        num_workers=num_workers,
        timeout_s=DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s,
        strict=strict,
    )
    return [
        f"{problems[i].source}: uid {problems[i].uid!r}: gold {problems[i].gold!r} "
        "cannot be parsed by math-verify"
        for i in bad
    ]
