"""Final-answer extraction and gold wrapping: plain string work, no math-verify."""

from __future__ import annotations

import time

import pytest

from nemo_red.rewards.extraction import extract_boxed, final_answer, wrap_gold


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the answer is \\boxed{5}.", "5"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\frac{\\sqrt{2}}{2}} done", "\\frac{\\sqrt{2}}{2}"),
        ("\\boxed{{a}{b{c}}}", "{a}{b{c}}"),
        ("first \\boxed{1}, then \\boxed{2}", "2"),
        ("\\fbox{7}", "7"),
        ("\\boxed{3} and \\fbox{4}", "4"),
        ("\\boxed 5", "5"),
        ("so \\boxed 5.", "5"),
        ("$\\boxed 42$", "42"),
        ("\\boxed {6}", "6"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("\\boxed{\\left\\{ x \\right\\}}", "\\left\\{ x \\right\\}"),
        ("\\boxed{a\\\\}", "a\\\\"),
        ("\\boxed{}", ""),
        ("\\boxed{\\boxed{9}}", "9"),
        ("\\boxed{x}\n\\boxed", "x"),  # a trailing bare command is skipped
        ("\\boxedx{1}", None),  # another command
        ("no box here", None),
        ("", None),
        ("\\boxed{1} \\boxed{2", None),  # the last box is never closed: truncated answer
        ("\\boxed{1}}", "1"),
        ("\\boxed{\\}", None),  # the only closing brace is escaped
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


def test_extract_boxed_rejects_non_strings() -> None:
    assert extract_boxed(None) is None  # type: ignore[arg-type]
    assert extract_boxed(b"\\boxed{1}") is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "\\boxed{" + "{" * 100_000 + "1" + "}" * 100_000 + "}",
        "\\boxed{" + "{" * 100_000,
        "\\boxed{" * 100_000,
        "\\boxed " * 100_000 + "{",
        "\\boxed" + " " * 1_000_000,
        "\\boxed{" + "\\" * 1_000_001,
        "x" * 1_000_000 + "\\boxed{1}",
        "\\boxed{1}" + "}" * 1_000_000,
        ("\\boxed{" + " " * 1000) * 1000,
    ],
)
def test_extract_boxed_adversarial_is_fast(text: str) -> None:
    started = time.perf_counter()
    extract_boxed(text)
    final_answer(text + "</think>" + text, think_split=True)
    assert time.perf_counter() - started < 2.0


def test_extract_boxed_deep_nesting_result() -> None:
    depth = 100_000
    inner = "{" * depth + "1" + "}" * depth
    assert extract_boxed("\\boxed{" + inner + "}") == inner


def test_final_answer_think_split() -> None:
    response = "<think>maybe \\boxed{1}</think> so \\boxed{2}"
    assert final_answer(response, think_split=True) == "2"
    assert final_answer(response, think_split=False) == "2"
    # The box is inside the reasoning only: no final answer.
    assert final_answer("<think>\\boxed{1}</think> I give up", think_split=True) is None
    assert final_answer("<think>\\boxed{1}</think> I give up", think_split=False) == "1"
    # Never finished thinking.
    assert final_answer("<think> \\boxed{1}", think_split=True) is None
    assert final_answer("<think> \\boxed{1}", think_split=False) == "1"
    # The last </think> counts.
    assert final_answer("</think>\\boxed{1}</think>\\boxed{3}", think_split=True) == "3"
    assert final_answer("</think>\\boxed{1}</think>", think_split=True) is None


@pytest.mark.parametrize(
    ("gold", "expected"),
    [
        ("x^2+1", "\\boxed{x^2+1}"),
        ("  5 ", "\\boxed{5}"),
        ("\\boxed{5}", "\\boxed{5}"),
        ("The answer is \\boxed{5}", "The answer is \\boxed{5}"),
        ("$\\frac{1}{2}$", "$\\frac{1}{2}$"),
        ("\\(3\\)", "\\(3\\)"),
        ("\\[3\\]", "\\[3\\]"),
        ("$5", "\\boxed{$5}"),
        (27.0, "\\boxed{27.0}"),
        (5, "\\boxed{5}"),
        (None, "\\boxed{}"),
    ],
)
def test_wrap_gold(gold: object, expected: str) -> None:
    assert wrap_gold(gold) == expected
