"""In-process grading of one answer with math-verify, under a ``SIGALRM`` time budget.

These functions run inside the grader's worker processes (see :mod:`nemo_red.rewards.grader`);
they may also be called directly, from the main thread of a process only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from nemo_red.rewards.extraction import final_answer, wrap_gold
from nemo_red.rewards.time_budget import BudgetExceeded, require_main_thread, time_budget

DEFAULT_TIMEOUT_S = 5.0
# Longer final answers are not parsed (reason ``unparsable_answer``): math-verify's LaTeX
# parser is super-linear (100 nested braces already take ~2 s) and no real answer is this long.
MAX_ANSWER_CHARS = 4096


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once per process that its timeouts are off; ours replace them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


class GradeReason(StrEnum):
    """Why an item got its reward."""

    CORRECT = "correct"
    WRONG = "wrong"
    NO_ANSWER = "no_answer"
    UNPARSABLE_ANSWER = "unparsable_answer"
    UNPARSABLE_GOLD = "unparsable_gold"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class GradeResult:
    """The grade of one response.

    Attributes:
        reward: 1.0 when correct, else 0.0.
        reason: Why.
        extracted: The final answer taken from the response (None when there was none).
    """

    reward: float
    reason: GradeReason
    extracted: str | None

    @property
    def valid(self) -> bool:
        """False when the gold answer could not be parsed: the item must be dropped, not scored."""
        return self.reason is not GradeReason.UNPARSABLE_GOLD

    @classmethod
    def of(cls, reason: GradeReason, extracted: str | None = None) -> GradeResult:
        """Build a result from its reason (the reward follows from it).

        Args:
            reason: Why.
            extracted: The final answer taken from the response.

        Returns:
            The result, with reward 1.0 exactly when ``reason`` is ``correct``.
        """
        return cls(1.0 if reason is GradeReason.CORRECT else 0.0, reason, extracted)


def _parse(text: str) -> list:
    """math-verify's parse, with its own timeout off (ours is around the whole item)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    config = [LatexExtractionConfig(), ExprExtractionConfig()]
    return parse(text, extraction_config=config, parsing_timeout=None)


def _grade_extracted(extracted: str | None, gold: object) -> GradeResult:
    from math_verify import verify

    # The gold is checked first, so that a bad gold is reported whatever the response.
    gold_parsed = _parse(wrap_gold(gold))
    if not gold_parsed:
        return GradeResult.of(GradeReason.UNPARSABLE_GOLD, extracted)
    if extracted is None or not extracted.strip():
        return GradeResult.of(GradeReason.NO_ANSWER, extracted)
    if len(extracted) > MAX_ANSWER_CHARS:
        return GradeResult.of(GradeReason.UNPARSABLE_ANSWER, extracted)
    answer_parsed = _parse("\\boxed{" + extracted + "}")
    if not answer_parsed:
        return GradeResult.of(GradeReason.UNPARSABLE_ANSWER, extracted)
    correct = verify(gold_parsed, answer_parsed, timeout_seconds=None)
    return GradeResult.of(GradeReason.CORRECT if correct else GradeReason.WRONG, extracted)


def grade_one(
    response: str,
    gold: object,
    think_split: bool = False,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
) -> GradeResult:
    """Grade one response against its gold answer.

    Steps: parse the gold, wrapped with :func:`wrap_gold` (nothing: ``unparsable_gold``; done
    first, so that a bad gold is reported whatever the response); take the final boxed answer
    (none or blank: ``no_answer``); parse ``\\boxed{answer}`` (nothing, or longer than
    :data:`MAX_ANSWER_CHARS`: ``unparsable_answer``); verify (``correct`` or ``wrong``).
    math-verify's own timeouts are off; the whole item gets one budget of ``timeout_s``
    (``timeout`` when spent).

    Args:
        response: The model response.
        gold: The gold answer (a string, or a number from JSON).
        think_split: Only look after the last ``</think>`` (see :func:`final_answer`).
        timeout_s: Budget for the item in seconds; None disables it.

    Returns:
        The grade.

    Raises:
        RuntimeError: When called outside the main thread of a process (the budget uses
            ``SIGALRM``); use :class:`~nemo_red.rewards.grader.MathGrader` from threads.
    """
    require_main_thread("grade_one")
    extracted: str | None = None
    try:
        with time_budget(timeout_s):
            extracted = final_answer(response, think_split)
            return _grade_extracted(extracted, gold)
    except BudgetExceeded:
        return GradeResult.of(GradeReason.TIMEOUT, extracted)


def gold_parses(
    gold: object, timeout_s: float | None = DEFAULT_TIMEOUT_S, strict: bool = False
) -> bool:
    """Whether a gold answer, wrapped with :func:`wrap_gold`, parses within ``timeout_s``.

    Args:
        gold: The gold answer.
        timeout_s: Budget in seconds; running out counts as not parsing.
        strict: Also require a math expression: math-verify keeps the raw text of a match
            it cannot turn into sympy, and such a gold (``-1./3``) only matches answers that
            are the same string.

    Returns:
        True when math-verify extracts something (a sympy object when strict) from the gold.

    Raises:
        RuntimeError: When called outside the main thread of a process.
    """
    require_main_thread("gold_parses")
    try:
        with time_budget(timeout_s):
            parsed = _parse(wrap_gold(gold))
            return any(not isinstance(p, str) for p in parsed) if strict else bool(parsed)
    except BudgetExceeded:
        return False
