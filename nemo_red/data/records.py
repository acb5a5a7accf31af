"""Training records: one math problem with its gold answer and, optionally, a teacher trace."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DataError", "Problem"]


@dataclass(frozen=True)
class Problem:
    """One training problem, as loaded from a data file.

    Attributes:
        uid: Stable identifier: the value of the configured id field, else
            ``"<file stem>:<row>"`` with the 1-based row number.
        question: The question text, as written in the file.
        gold: The gold answer as a stripped string (numbers through ``str()``: ``27.0``
            gives ``"27.0"``; a list gives its first element).
        teacher: The teacher's solution text (the off-policy trace), or None.
        source: ``"<file>:<row>"``, for error messages.
    """

    uid: str
    question: str
    gold: str
    teacher: str | None
    source: str


class DataError(ValueError):
    """A data file, or one of its rows, that cannot be turned into a :class:`Problem`.

    The message names the file, the 1-based row number (when a row is at fault) and the
    field, e.g. ``data/train.jsonl: row 17: missing field 'answer'``.

    Attributes:
        file: The file at fault (as given or as found in a directory or glob).
        row: The 1-based row number (the line number in a ``.jsonl`` file), or None when the
            whole file is at fault.
        kind: A short category for summaries: ``invalid_json``, ``not_an_object``,
            ``missing_field``, ``wrong_type``, ``empty_question``, ``missing_gold``,
            ``missing_teacher``, ``bad_answer_format``, ``duplicate_uid`` or ``file``.
        detail: The message without the file and row prefix.
    """

    def __init__(self, file: str, row: int | None, kind: str, detail: str) -> None:
        self.file = file
        self.row = row
        self.kind = kind
        self.detail = detail
        where = file if row is None else f"{file}: row {row}"
        super().__init__(f"{where}: {detail}")
