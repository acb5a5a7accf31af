"""A JSON-lines log of the training metrics, one line per step, that survives resumption.

Every line is ``{"step": int, "time": float, **metrics}``, written and flushed at once, so
that a crash loses at most the line being written. Non-finite floats are written as
``null`` (strict JSON). A run resumed from the checkpoint of step ``s`` drops the lines of
the steps after ``s`` (written after that checkpoint, and written again by the resumed
run): its log then equals the log of an uninterrupted run, wall-clock times aside.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["MetricsLog", "read_metrics"]


def _plain(value: Any) -> Any:
    """A JSON value for a metric: scalars of numpy and torch become numbers, NaN/inf None."""
    if hasattr(value, "item") and callable(value.item):  # numpy and torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _parse_lines(text: str, path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The complete lines of a log and their records; an unterminated last line is dropped."""
    records = []
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            records.append((line, json.loads(line)))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not a JSON line: {err}") from err
    return records


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a metrics log.

    Args:
        path: The JSON-lines file.

    Returns:
        One dict per complete line, in file order (``null`` values read as None); a
        trailing line without its newline, left by a crash, is ignored.

    Raises:
        ValueError: When a complete line is not JSON.
    """
    path = Path(path)
    return [record for _, record in _parse_lines(path.read_text(encoding="utf-8"), path)]


class MetricsLog:
    """Appends one JSON line per training step to a file.

    Use on the one process that logs (rank 0). A context manager; :meth:`close` also works.

    Args:
        path: The JSON-lines file (parent directories are created).
        resume_step: None for a new run: an existing file is replaced. Else the step of the
            checkpoint the run resumes from: lines of later steps are dropped (see
            :meth:`truncate_after`) and new lines are appended.
    """

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = None
        if resume_step is None:
            self.path.write_text("", encoding="utf-8")
        else:
            self.truncate_after(resume_step)
        self._file = self.path.open("a", encoding="utf-8")

    def log(self, step: int, metrics: Mapping[str, Any], wall_time: float | None = None) -> None:
        """Append the line of one step and flush it.

        Args:
            step: The training step.
            metrics: Metric names to values (numbers, strings, None, or numpy/torch scalars);
                non-finite floats are written as ``null``. ``step`` and ``time`` are reserved.
            wall_time: Seconds since the epoch; default now.

        Raises:
            ValueError: When a metric is named ``step`` or ``time``, or the log is closed.
            TypeError: When a value is not JSON-serializable.
        """
        if self._file is None:
            raise ValueError(f"metrics log {self.path} is closed")
        reserved = {"step", "time"} & set(metrics)
        if reserved:
            raise ValueError(f"metric names {sorted(reserved)} are reserved")
        record = {
            "step": int(step),
            "time": time.time() if wall_time is None else float(wall_time),
            **{str(key): _plain(value) for key, value in metrics.items()},
        }
        line = json.dumps(record, allow_nan=False, ensure_ascii=False)
        self._file.write(line + "\n")
        self._file.flush()

    def truncate_after(self, step: int) -> int:
        """Drop the lines of steps after ``step`` (and a crash's unterminated last line).

        The file is rewritten atomically (a temporary file, then a rename).

        Args:
            step: The last step to keep.

        Returns:
            The number of lines dropped.
        """
        reopen = self._file is not None
        if self._file is not None:
            self._file.close()
            self._file = None
        kept: list[str] = []
        dropped = 0
        if self.path.exists():
            text = self.path.read_text(encoding="utf-8")
            lines = _parse_lines(text, self.path)
            kept = [line for line, record in lines if int(record["step"]) <= step]
            dropped = len(lines) - len(kept) + (0 if text.endswith("\n") or not text else 1)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for line in kept:
                f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        if reopen:
            self._file = self.path.open("a", encoding="utf-8")
        return dropped

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
