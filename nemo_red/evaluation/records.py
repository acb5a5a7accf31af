"""Per-item evaluation records and the resumable file that holds them.

``records.jsonl`` starts with a header line holding the evaluation's settings (model,
sampling, template, benchmark files); each further line is one finished item with all its
samples. Items are appended chunk by chunk and flushed to disk, so an evaluation that is
stopped (even killed mid-write) continues where it stopped: finished items are neither
generated nor graded again, and a torn last line is dropped. Reopening with different
settings is an error when items are recorded, since mixing the two would give meaningless
numbers (the message names the differing keys); a file with no item yet (a start that
failed before its first chunk) is simply replaced, as is one without a complete header.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["ItemRecord", "RecordStore", "SampleRecord", "SettingsMismatchError"]


@dataclass(frozen=True)
class SampleRecord:
    """One graded completion.

    Attributes:
        text: The decoded completion.
        extracted: The final answer found in it (a letter for multiple choice), or None.
        reason: The grading reason (``correct``, ``wrong``, ``no_answer``, ...).
        tokens: Completion length in tokens.
        finish_reason: ``stop`` or ``length`` (cut by the token limit).
    """

    text: str
    extracted: str | None
    reason: str
    tokens: int
    finish_reason: str

    @property
    def correct(self) -> bool:
        return self.reason == "correct"


@dataclass(frozen=True)
class ItemRecord:
    """One evaluated item: its gold answer and graded samples.

    Attributes:
        benchmark: The benchmark's name.
        uid: The item's id within the benchmark.
        gold: The gold answer (a letter for multiple choice).
        samples: The graded completions.
        valid: False when the gold answer cannot be parsed (the item is left out of the
            metrics and reported).
    """

    benchmark: str
    uid: str
    gold: str
    samples: tuple[SampleRecord, ...]
    valid: bool = True

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for sample, record in zip(out["samples"], self.samples, strict=True):
            sample["correct"] = record.correct
        return out

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> ItemRecord:
        samples = tuple(
            SampleRecord(**{k: v for k, v in s.items() if k != "correct"}) for s in row["samples"]
        )
        return cls(row["benchmark"], row["uid"], row["gold"], samples, bool(row["valid"]))


class SettingsMismatchError(ValueError):
    """An existing records file was written with other settings."""


class RecordStore:
    """Appends item records to ``records.jsonl`` and reads back what an earlier run wrote.

    Args:
        path: The records file.
        settings: The evaluation's settings (JSON-serialisable); must equal those in an
            existing file's header when that file holds records.
        restart: Discard an existing file instead of continuing it.

    Raises:
        SettingsMismatchError: When the file holds records of an evaluation with other
            settings (the message names the differing keys, and how to go on).
    """

    def __init__(self, path: Path, settings: Mapping[str, Any], restart: bool = False) -> None:
        self.path = Path(path)
        self.settings = json.loads(json.dumps(dict(settings)))
        self._records: dict[tuple[str, str], ItemRecord] = {}
        if restart or not self.path.is_file() or not self._read():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._records = {}
            self._write_lines([json.dumps({"settings": self.settings})], mode="w")

    def _read(self) -> bool:
        """Reads the file; returns False when it must be started anew (no header, or a
        header of other settings and no record)."""
        lines = self.path.read_bytes().split(b"\n")
        good = 0  # bytes of complete, decodable lines
        header: Mapping[str, Any] | None = None
        for index, raw in enumerate(lines):
            if not raw.strip():
                good += len(raw) + 1
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError:
                if index == len(lines) - 1 or not any(line.strip() for line in lines[index + 1 :]):
                    break  # a torn last line: dropped below
                raise ValueError(f"{self.path}: row {index + 1}: not valid JSON") from None
            if header is None:
                if not isinstance(row, dict) or not isinstance(row.get("settings"), dict):
                    raise ValueError(
                        f"{self.path}: row {index + 1}: not an evaluation records header"
                    )
                header = row["settings"]
            else:
                record = ItemRecord.from_json(row)
                self._records[(record.benchmark, record.uid)] = record
            good += len(raw) + 1
        if header is None:
            return False  # empty, or only a torn header
        if header != self.settings:
            if not self._records:
                return False
            count = len(self._records)
            keys = ", ".join(_differing(header, self.settings))
            raise SettingsMismatchError(
                f"{self.path} holds {count} recorded item{'s' if count != 1 else ''} of an "
                f"evaluation with other settings (differing: {keys}); pass --restart to "
                "discard them, or use another --out"
            )
        if good < self.path.stat().st_size:
            with self.path.open("r+b") as handle:
                handle.truncate(min(good, self.path.stat().st_size))
        return True

    def _write_lines(self, lines: Iterable[str], mode: str = "a") -> None:
        with self.path.open(mode, encoding="utf-8") as handle:
            for line in lines:
                handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def done(self, benchmark: str, uid: str) -> bool:
        """Whether the item is already recorded."""
        return (benchmark, uid) in self._records

    def append(self, records: Iterable[ItemRecord]) -> None:
        """Records finished items (durably, before returning)."""
        records = list(records)
        self._write_lines(json.dumps(r.to_json(), ensure_ascii=False) for r in records)
        for record in records:
            self._records[(record.benchmark, record.uid)] = record

    def records(self, benchmark: str) -> list[ItemRecord]:
        """The recorded items of a benchmark, in the order they were written."""
        return [r for (name, _), r in self._records.items() if name == benchmark]

    def __len__(self) -> int:
        return len(self._records)


def _differing(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The keys whose values differ, nested ones dotted (``sampling.temperature``)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [] if old == new else [prefix[:-1]]
    keys = []
    for key in sorted(set(old) | set(new)):
        if key not in old or key not in new:
            keys.append(f"{prefix}{key}")
        else:
            keys += _differing(old[key], new[key], f"{prefix}{key}.")
    return keys
