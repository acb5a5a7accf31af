"""Multiple-choice benchmarks (ARC-Challenge, GPQA-Diamond, MMLU-Pro): items and grading.

An item's options are shown as ``(A) ...``, ``(B) ...`` after the question; the gold is a
letter. The model's answer is the letter found, in order of preference, in the last
``\\boxed{...}`` (``\\boxed{B}``, ``\\boxed{(B)}``, ``\\boxed{\\text{B}}``, ``\\boxed{B. 42}`` or
the text of an option), else in the last phrase such as "the answer is (B)" or "Answer: B",
else on the last line when it is only a letter. A response with none of these has reason
``no_answer``; grading needs no math-verify, so it runs in-process.

Built-in layouts (``CHOICE_LAYOUTS``), as the data sets are published on Hugging Face:

- ``arc``: ``question``, ``choices.text`` / ``choices.label``, ``answerKey`` (a label, which
  may be ``"1"``..``"4"`` in some ARC rows), ``id``.
- ``mmlu_pro``: ``question``, ``options`` (up to 10), ``answer`` (a letter), ``question_id``.
- ``gpqa``: ``Question``, ``Correct Answer``, ``Incorrect Answer 1..3``, ``Record ID``; the
  four options are shuffled with a seed derived from the question text, so the order (and
  the gold letter) is the same in every run and on every machine.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_red.data.loading import find_data_files, iter_rows
from nemo_red.data.records import DataError
from nemo_red.data.rows import MISSING, FieldError, lookup
from nemo_red.rewards.extraction import extract_boxed
from nemo_red.rewards.verification import GradeReason, GradeResult

__all__ = [
    "CHOICE_LAYOUTS",
    "LETTERS",
    "ChoiceFields",
    "ChoiceItem",
    "extract_choice",
    "format_choice_question",
    "grade_choice",
    "load_choice_items",
]

LETTERS = "ABCDEFGHIJKLMNOP"


@dataclass(frozen=True)
class ChoiceFields:
    """Where a multiple-choice row keeps its parts (dotted paths, as in ``FieldMap``).

    Either ``options`` (a list of option texts, with ``answer`` a letter, a label from
    ``labels``, a 0-based index or the correct option's text) or ``correct`` plus
    ``incorrect`` (option texts in separate fields, shuffled deterministically).

    Attributes:
        question: Path to the question.
        options: Path to the list of option texts.
        answer: Path to the answer (with ``options``).
        labels: Path to the options' own labels (ARC's ``choices.label``), if any.
        correct: Path to the correct option's text (GPQA style).
        incorrect: Paths to the incorrect options' texts (GPQA style).
        uid: Path to a stable id, or None for ``"<file stem>:<row>"``.
    """

    question: str
    options: str | None = None
    answer: str | None = None
    labels: str | None = None
    correct: str | None = None
    incorrect: tuple[str, ...] = ()
    uid: str | None = None

    def __post_init__(self) -> None:
        listed = self.options is not None and self.answer is not None
        separate = self.correct is not None and len(self.incorrect) > 0
        if listed == separate:
            raise ValueError(
                "choice fields: give either 'options' and 'answer', or 'correct' and "
                "'incorrect' paths"
            )


CHOICE_LAYOUTS: dict[str, ChoiceFields] = {
    "arc": ChoiceFields(
        question="question",
        options="choices.text",
        labels="choices.label",
        answer="answerKey",
        uid="id",
    ),
    "mmlu_pro": ChoiceFields(
        question="question", options="options", answer="answer", uid="question_id"
    ),
    "gpqa": ChoiceFields(
        question="Question",
        correct="Correct Answer",
        incorrect=("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"),
        uid="Record ID",
    ),
}


@dataclass(frozen=True)
class ChoiceItem:
    """One multiple-choice question.

    Attributes:
        uid: Stable id.
        question: The question text (without the options).
        options: The option texts, in the order shown (``A`` first).
        answer: The gold letter.
        source: ``"<file>:<row>"``.
    """

    uid: str
    question: str
    options: tuple[str, ...]
    answer: str
    source: str


def format_choice_question(question: str, options: Sequence[str]) -> str:
    """The question followed by its lettered options, as the model sees it."""
    lines = [f"({LETTERS[i]}) {text}" for i, text in enumerate(options)]
    return (
        f"{question.rstrip()}\n\n" + "\n".join(lines) + "\n\nAnswer with the letter of the "
        "correct option."
    )


def _text(row: Any, path: str) -> str:
    value = lookup(row, path)
    if value is MISSING:
        raise FieldError("missing_field", f"missing field {path!r}")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FieldError("wrong_type", f"field {path!r}: expected text, got {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise FieldError("missing_field", f"field {path!r}: empty")
    return text


def _answer_index(row: Any, fields: ChoiceFields, options: list[str]) -> int:
    assert fields.answer is not None
    value = lookup(row, fields.answer)
    if value is MISSING or value is None:
        raise FieldError("missing_gold", f"missing field {fields.answer!r}")
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(options):
            return value
        raise FieldError(
            "bad_answer_format", f"field {fields.answer!r}: index {value} out of range"
        )
    text = str(value).strip()
    if fields.labels is not None:
        labels = lookup(row, fields.labels)
        if not isinstance(labels, list) or len(labels) != len(options):
            raise FieldError(
                "wrong_type", f"field {fields.labels!r}: expected one label per option"
            )
        if text in [str(label).strip() for label in labels]:
            return [str(label).strip() for label in labels].index(text)
    if len(text) == 1 and text in LETTERS[: len(options)]:
        return LETTERS.index(text)
    if text in options:
        return options.index(text)
    raise FieldError(
        "bad_answer_format",
        f"field {fields.answer!r}: {text!r} is not a letter, label or option of this row",
    )


def _to_item(row: Any, fields: ChoiceFields, uid: str, source: str) -> ChoiceItem:
    if not isinstance(row, Mapping):
        raise FieldError("not_an_object", f"expected an object, got {type(row).__name__}")
    question = _text(row, fields.question)
    if fields.options is not None:
        raw = lookup(row, fields.options)
        if not isinstance(raw, list) or len(raw) < 2:
            raise FieldError(
                "wrong_type", f"field {fields.options!r}: expected a list of at least 2 options"
            )
        if len(raw) > len(LETTERS):
            raise FieldError("wrong_type", f"field {fields.options!r}: more than 16 options")
        options = [str(option).strip() for option in raw]
        answer = _answer_index(row, fields, options)
    else:
        assert fields.correct is not None
        options = [_text(row, fields.correct), *(_text(row, p) for p in fields.incorrect)]
        order = list(range(len(options)))
        random.Random(question).shuffle(order)  # str seeds are hashed with SHA-512: stable
        options = [options[i] for i in order]
        answer = order.index(0)
    return ChoiceItem(uid, question, tuple(options), LETTERS[answer], source)


def _iter_items(files: list[Path], fields: ChoiceFields) -> Iterator[ChoiceItem]:
    seen: set[str] = set()
    for file in files:
        for number, row in iter_rows(file):
            source = f"{file}:{number}"
            try:
                if isinstance(row, FieldError):
                    raise row
                uid = f"{file.stem}:{number}"
                if fields.uid is not None:
                    uid = _text(row, fields.uid)
                if uid in seen:
                    raise FieldError(
                        "duplicate_uid", f"field {fields.uid!r}: duplicate uid {uid!r}"
                    )
                seen.add(uid)
                yield _to_item(row, fields, uid, source)
            except FieldError as error:
                raise DataError(str(file), number, error.kind, error.detail) from None


def load_choice_items(
    path: str | Path | Sequence[str | Path],
    layout: str | ChoiceFields,
    limit: int | None = None,
) -> list[ChoiceItem]:
    """Multiple-choice items from ``.jsonl`` / ``.json`` / ``.parquet`` files.

    Args:
        path: A file, directory, glob or list of these.
        layout: A name of :data:`CHOICE_LAYOUTS` or explicit :class:`ChoiceFields`.
        limit: Stop after this many items.

    Returns:
        The items in file order.

    Raises:
        DataError: Naming the file, row and field of a bad row.
        ValueError: For an unknown layout name.
    """
    if isinstance(layout, str):
        if layout not in CHOICE_LAYOUTS:
            raise ValueError(
                f"unknown multiple-choice layout {layout!r}; valid: {', '.join(CHOICE_LAYOUTS)}"
            )
        layout = CHOICE_LAYOUTS[layout]
    items: list[ChoiceItem] = []
    for item in _iter_items(find_data_files(path), layout):
        if limit is not None and len(items) >= limit:
            break
        items.append(item)
    return items


_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")
_LEADING_LETTER = re.compile(r"^\(?([A-P])(?:\)|\.|:|\s|$)")
_PHRASES = [
    re.compile(r"(?i:answer\s+is)\s*:?\s*[*$\\{(\[]*\s*\(?([A-P])\b"),
    re.compile(r"(?i:answer)\s*:\s*[*$\\{(\[]*\s*\(?([A-P])\b"),
    re.compile(r"(?i:correct\s+(?:option|choice)\s+is)\s*:?\s*\(?([A-P])\b"),
    re.compile(r"(?i:option)\s+\(?([A-P])\)?\s+is\s+(?i:correct)"),
]


def _normalise(text: str) -> str:
    return " ".join(text.casefold().split()).rstrip(".")


def _letter_of(text: str, options: Sequence[str]) -> str | None:
    """The option letter a short answer names (``B``, ``(B)``, ``B. 42``, or an option's text)."""
    letters = LETTERS[: len(options)]
    cleaned = _WRAPPERS.sub(r"\1", text).strip().strip("*$ ").strip()
    bare = cleaned.strip("()[]{}.:").strip()
    if len(bare) == 1 and bare in letters:
        return bare
    match = _LEADING_LETTER.match(cleaned)
    if match and match.group(1) in letters:
        return match.group(1)
    wanted = _normalise(bare)
    for index, option in enumerate(options):
        if wanted and _normalise(option) == wanted:
            return letters[index]
    return None


def extract_choice(response: str, options: Sequence[str], think_split: bool = False) -> str | None:
    """The option letter a response chooses, or None (see the module docstring for the rules).

    Args:
        response: The model's response.
        options: The item's options (their number bounds the valid letters).
        think_split: Only look after the last ``</think>`` (nothing when it is absent).

    Returns:
        The letter, or None when the response names no option.
    """
    text = response
    if think_split:
        cut = response.rfind("</think>")
        if cut < 0:
            return None
        text = response[cut + len("</think>") :]
    boxed = extract_boxed(text)
    if boxed is not None:
        letter = _letter_of(boxed, options)
        if letter is not None:
            return letter
    letters = LETTERS[: len(options)]
    best: tuple[int, str] | None = None
    for pattern in _PHRASES:
        for match in pattern.finditer(text):
            if match.group(1) in letters and (best is None or match.start() > best[0]):
                best = (match.start(), match.group(1))
    if best is not None:
        return best[1]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines:
        last = lines[-1].strip()
        bare = last.strip("*$ ()[].:").strip()
        if len(bare) == 1 and bare in letters:
            return bare
    return None


def grade_choice(
    response: str, gold: str, options: Sequence[str], think_split: bool = False
) -> GradeResult:
    """Grade a multiple-choice response: ``correct``, ``wrong`` or ``no_answer``.

    Args:
        response: The model's response.
        gold: The gold letter.
        options: The item's options.
        think_split: Only look after the last ``</think>``.

    Returns:
        The grade, with the chosen letter as ``extracted``.
    """
    letter = extract_choice(response, options, think_split)
    if letter is None:
        return GradeResult.of(GradeReason.NO_ANSWER, None)
    return GradeResult.of(GradeReason.CORRECT if letter == gold else GradeReason.WRONG, letter)
