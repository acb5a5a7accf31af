"""Field maps: where the question, gold answer, teacher trace and id sit in a data row.

Built-in layouts (auto-detected from the first row's keys when ``layout="auto"``):

- ``luffy``: LUFFY's OpenR1-Math-46k-8192 parquet. ``prompt`` is a list of chat messages
  (the last user message is the question), ``target`` a list of messages (the first
  assistant message is the teacher trace; a plain string works too) and
  ``reward_model.ground_truth`` the gold answer.
- ``red``: ``problem``, ``answer``, ``distill`` (the teacher solution).
- ``math``: ``problem``, ``answer``, optional ``solution`` as the teacher.
- ``gsm8k``: ``question``; the gold is what follows the ``#### `` line of ``answer``
  (commas removed), the text before that line is the teacher.
- ``minerva``: ``problem``; the gold is the last ``\\boxed{}`` of ``solution`` (Minerva
  Math), the solution is the teacher.
- ``olympiad``: ``question``, ``final_answer`` (a list; its first element without ``$``
  delimiters) (OlympiadBench).
- ``custom``: dotted paths given by the user.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "ANSWER_STYLES",
    "LAYOUTS",
    "LAYOUT_NAMES",
    "FieldMap",
    "detect_layout",
    "resolve_field_map",
]

AnswerStyle = Literal["plain", "gsm8k", "boxed", "dollars"]
ANSWER_STYLES: tuple[str, ...] = ("plain", "gsm8k", "boxed", "dollars")
_GSM8K_MARK = "####"


@dataclass(frozen=True)
class FieldMap:
    """Dotted paths to the fields of a row (``"reward_model.ground_truth"``; a number indexes
    a list: ``"final_answer.0"``).

    A question or teacher value may be a plain string or a list of chat messages
    (``{"role": ..., "content": ...}``): the question is then the last user message, the
    teacher the first assistant message.

    Attributes:
        question: Path to the question (required in every row).
        answer: Path to the gold answer (required; a string, a number, or a list whose
            first element is used).
        teacher: Path to the teacher's solution (optional in a row unless the loader
            requires it), or None when the data has no teacher traces.
        uid: Path to a stable id (required in every row when set), or None for
            ``"<file stem>:<row>"``.
        answer_style: ``"plain"``; ``"gsm8k"``: the answer field is a solution whose
            last ``#### `` line holds the gold (commas removed); when ``teacher`` is the
            same path, the teacher is the text before that line; ``"boxed"``: the answer
            field is a solution and the gold is its last ``\\boxed{...}`` (Minerva Math);
            ``"dollars"``: the gold with its ``$`` math delimiters removed, so that
            OlympiadBench's ``$69$,$84$`` becomes ``69,84``.
    """

    question: str
    answer: str
    teacher: str | None = None
    uid: str | None = None
    answer_style: AnswerStyle = "plain"

    def __post_init__(self) -> None:
        for name in ("question", "answer", "teacher", "uid"):
            value = getattr(self, name)
            if value is None and name in ("teacher", "uid"):
                continue
            if not isinstance(value, str) or not value or any(not p for p in value.split(".")):
                raise ValueError(f"field map: {name!r} must be a dotted path, got {value!r}")
        if self.answer_style not in ANSWER_STYLES:
            raise ValueError(
                f"field map: answer_style must be one of {', '.join(ANSWER_STYLES)}, "
                f"got {self.answer_style!r}"
            )


LAYOUTS: dict[str, FieldMap] = {
    "luffy": FieldMap(question="prompt", answer="reward_model.ground_truth", teacher="target"),
    "red": FieldMap(question="problem", answer="answer", teacher="distill"),
    "math": FieldMap(question="problem", answer="answer", teacher="solution"),
    "gsm8k": FieldMap(question="question", answer="answer", teacher="answer", answer_style="gsm8k"),
    "minerva": FieldMap(
        question="problem", answer="solution", teacher="solution", answer_style="boxed"
    ),
    "olympiad": FieldMap(question="question", answer="final_answer", answer_style="dollars"),
}
LAYOUT_NAMES: tuple[str, ...] = (*LAYOUTS, "custom")


def detect_layout(row: Mapping[str, Any]) -> str | None:
    """The built-in layout a row's keys match (luffy, red, gsm8k, math, minerva, olympiad,
    in that order).

    Args:
        row: The first row of the data.

    Returns:
        The layout name, or None when none matches.
    """
    keys = set(row)
    if {"prompt", "reward_model"} <= keys:
        return "luffy"
    if {"problem", "answer", "distill"} <= keys:
        return "red"
    if {"question", "answer"} <= keys and "problem" not in keys:
        answer = row["answer"]
        if isinstance(answer, str) and _GSM8K_MARK in answer:
            return "gsm8k"
    if {"problem", "answer"} <= keys:
        return "math"
    if {"problem", "solution"} <= keys:
        return "minerva"
    if {"question", "final_answer"} <= keys:
        return "olympiad"
    return None


def resolve_field_map(
    layout: str,
    fields: FieldMap | Mapping[str, Any] | None = None,
    first_row: Mapping[str, Any] | None = None,
) -> tuple[str, FieldMap]:
    """Choose the field map for a layout name, with optional overrides.

    Args:
        layout: ``"auto"``, a built-in layout name, or ``"custom"``.
        fields: For ``custom``: the field map (a :class:`FieldMap` or a mapping with at
            least ``question`` and ``answer``). For the other layouts: overrides of the
            built-in paths (e.g. ``{"uid": "unique_id"}``). With ``auto``, when no layout
            matches and ``fields`` names both ``question`` and ``answer``, it is used as a
            custom map.
        first_row: The first row, needed by ``auto``.

    Returns:
        The resolved layout name and its field map.

    Raises:
        ValueError: For an unknown layout name (the message lists the valid ones), a
            ``custom`` layout without fields, unknown keys in ``fields``, or a first row
            that matches no layout.
    """
    overrides = _as_overrides(fields)
    if layout == "auto":
        detected = detect_layout(first_row) if isinstance(first_row, Mapping) else None
        if detected is None:
            if {"question", "answer"} <= set(overrides):
                return "custom", FieldMap(**overrides)
            keys = sorted(first_row) if isinstance(first_row, Mapping) else first_row
            raise ValueError(
                f"cannot detect the data layout from the first row's keys {keys}; "
                f"pass layout= (one of {', '.join(LAYOUT_NAMES)}) or fields="
            )
        layout = detected
    if layout == "custom":
        if not {"question", "answer"} <= set(overrides):
            raise ValueError(
                "layout 'custom' needs fields with at least 'question' and 'answer' paths"
            )
        return "custom", FieldMap(**overrides)
    if layout not in LAYOUTS:
        raise ValueError(
            f"unknown data layout {layout!r}; valid layouts: auto, {', '.join(LAYOUT_NAMES)}"
        )
    return layout, dataclasses.replace(LAYOUTS[layout], **overrides)


def _as_overrides(fields: FieldMap | Mapping[str, Any] | None) -> dict[str, Any]:
    if fields is None:
        return {}
    if isinstance(fields, FieldMap):
        return dataclasses.asdict(fields)
    valid = {f.name for f in dataclasses.fields(FieldMap)}
    unknown = sorted(set(fields) - valid)
    if unknown:
        raise ValueError(f"unknown field map keys {unknown}; valid keys: {sorted(valid)}")
    return dict(fields)
