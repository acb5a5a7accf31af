"""Pull the question, gold answer, teacher trace and id out of one data row."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nemo_red.data.layouts import FieldMap
from nemo_red.rewards.extraction import extract_boxed

__all__ = ["MISSING", "FieldError", "RowFields", "extract_fields", "lookup"]

_GSM8K_MARK = "####"
MISSING = object()


class FieldError(Exception):
    """A row field that cannot be used; the loader adds the file and row.

    Attributes:
        kind: The category (see :class:`~nemo_red.data.records.DataError`).
        detail: What is wrong, naming the field.
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class RowFields:
    """The values pulled out of one row (not yet validated for the teacher requirement)."""

    question: str
    gold: str
    teacher: str | None
    uid: str | None


def lookup(row: Any, path: str) -> Any:
    """The value at a dotted path (``"choices.text"``, ``"final_answer.0"``), or
    :data:`MISSING`."""
    value = row
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part, MISSING)
        elif isinstance(value, list) and part.lstrip("-").isdigit():
            index = int(part)
            value = value[index] if -len(value) <= index < len(value) else MISSING
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return value


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _message_text(value: list, path: str, role: str, last: bool) -> str | None:
    """Content of the last (or first) message with ``role`` in a chat list."""
    found = None
    for message in value:
        if not isinstance(message, Mapping) or "role" not in message:
            raise FieldError(
                "wrong_type",
                f"field {path!r}: expected a string or a list of chat messages, "
                f"got a list holding {_type_name(message)}",
            )
        if message["role"] == role:
            found = message
            if not last:
                break
    if found is None:
        return None
    content = found.get("content")
    if content is not None and not isinstance(content, str):
        raise FieldError(
            "wrong_type",
            f"field {path!r}: {role} message content must be a string, got {_type_name(content)}",
        )
    return content


def _text(value: Any, path: str, role: str, last: bool) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        return _message_text(value, path, role, last)
    raise FieldError(
        "wrong_type",
        f"field {path!r}: expected a string or a list of chat messages, got {_type_name(value)}",
    )


def _gold(value: Any, path: str) -> str:
    if isinstance(value, list):
        if not value:
            raise FieldError("missing_gold", f"field {path!r}: empty list, no gold answer")
        value = value[0]
    if value is None:
        raise FieldError("missing_gold", f"field {path!r}: gold answer is null")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FieldError(
            "wrong_type",
            f"field {path!r}: gold answer must be a string or a number, got {_type_name(value)}",
        )
    gold = (value if isinstance(value, str) else str(value)).strip()
    if not gold:
        raise FieldError("missing_gold", f"field {path!r}: empty gold answer")
    return gold


def _split_gsm8k(text: Any, path: str) -> tuple[str, str]:
    """(solution before the ``#### `` line, gold after it with commas removed)."""
    if not isinstance(text, str):
        raise FieldError("wrong_type", f"field {path!r}: expected a string, got {_type_name(text)}")
    cut = text.rfind(_GSM8K_MARK)
    if cut < 0 or (cut > 0 and text[cut - 1] != "\n"):
        raise FieldError(
            "bad_answer_format", f"field {path!r}: no line starting with '####' holds the gold"
        )
    gold = text[cut + len(_GSM8K_MARK) :].strip().replace(",", "")
    if not gold:
        raise FieldError("missing_gold", f"field {path!r}: empty gold answer after '####'")
    return text[:cut].rstrip(), gold


def _boxed_gold(text: Any, path: str) -> str:
    """The content of the last ``\\boxed{...}`` of a solution."""
    if not isinstance(text, str):
        raise FieldError("wrong_type", f"field {path!r}: expected a string, got {_type_name(text)}")
    gold = extract_boxed(text)
    if gold is None or not gold.strip():
        raise FieldError("bad_answer_format", f"field {path!r}: no \\boxed{{...}} holds the gold")
    return gold.strip()


def extract_fields(row: Any, fields: FieldMap) -> RowFields:
    """Pull the question, gold, teacher and id out of one row.

    Args:
        row: One decoded row (a dict).
        fields: Where the values sit.

    Returns:
        The values; ``teacher`` is None when its field is absent, null, empty or has no
        assistant message.

    Raises:
        FieldError: For a row that is not an object, a missing question, answer or uid
            field, a value of the wrong type, an empty question or gold answer.
    """
    if not isinstance(row, Mapping):
        raise FieldError("not_an_object", f"expected an object, got {_type_name(row)}")

    def required(path: str) -> Any:
        value = lookup(row, path)
        if value is MISSING:
            raise FieldError("missing_field", f"missing field {path!r}")
        return value

    question = _text(required(fields.question), fields.question, "user", last=True)
    if question is None or not question.strip():
        raise FieldError("empty_question", f"field {fields.question!r}: empty question")

    answer = required(fields.answer)
    before_mark = None
    if fields.answer_style == "gsm8k":
        before_mark, gold = _split_gsm8k(answer, fields.answer)
    elif fields.answer_style == "boxed":
        gold = _boxed_gold(answer, fields.answer)
    else:
        gold = _gold(answer, fields.answer)
        if fields.answer_style == "dollars":
            gold = _gold(gold.replace("$", ""), fields.answer)

    teacher = None
    if fields.teacher is not None:
        if fields.teacher == fields.answer and before_mark is not None:
            teacher = before_mark
        else:
            value = lookup(row, fields.teacher)
            if value is not MISSING:
                teacher = _text(value, fields.teacher, "assistant", last=False)
        if teacher is not None and not teacher.strip():
            teacher = None

    uid = None
    if fields.uid is not None:
        value = required(fields.uid)
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise FieldError(
                "wrong_type",
                f"field {fields.uid!r}: id must be a non-empty string or an integer, got {value!r}",
            )
        uid = str(value)
    return RowFields(question=question, gold=gold, teacher=teacher, uid=uid)
