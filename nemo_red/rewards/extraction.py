"""Pull the final answer out of a model response, and wrap gold answers for math-verify.

Everything here is plain string work in linear time, so it is safe on adversarial input
(megabyte strings, 100k nested braces) and cheap enough to run anywhere.
"""

from __future__ import annotations

import re

THINK_END = "</think>"

# A box command: ``\boxed`` or ``\fbox``, not followed by another letter (``\boxedx`` is
# a different command).
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# Inside a box, only escapes (``\{``, ``\}``, ``\\``) and braces matter for matching.
_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]", re.DOTALL)
# ``\boxed 5``: after at least one space, a single token ends at whitespace or ``$``.
_BARE_TOKEN = re.compile(r"[ \t]+([^\s$]+)")
_WHITESPACE = re.compile(r"\s*")
_TRAILING_PUNCTUATION = ".,;:"


def _braced_content(text: str, open_pos: int) -> str | None:
    """Return the text inside the brace group that opens at ``text[open_pos]``.

    Args:
        text: The whole string.
        open_pos: Index of an opening ``{``.

    Returns:
        The content between the matching braces, or None when the group is never closed.
        Escaped braces (``\\{``, ``\\}``) are literal characters and do not count.
    """
    depth = 0
    for match in _BRACE_OR_ESCAPE.finditer(text, open_pos):
        token = match.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                return text[open_pos + 1 : match.start()]
    return None


def extract_boxed(text: str) -> str | None:
    """Return the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``.

    The last box command decides: its braces are matched with nesting, escaped braces
    being literal, so ``\\boxed{\\{1,2\\}}`` gives ``\\{1,2\\}``. ``\\boxed 5`` (a single
    token after a space, as some models write) gives ``5``. When the last box is never
    closed (a truncated response), the result is None rather than an earlier box: the model
    did not finish its final answer. Box commands with neither form (``\\boxed`` at the
    very end, ``\\boxed$``) are skipped.

    Runs in time linear in ``len(text)``.

    Args:
        text: A model response.

    Returns:
        The boxed content (possibly empty), or None when there is no usable box.
    """
    if not isinstance(text, str):
        return None
    starts = [match.end() for match in _BOX_COMMAND.finditer(text)]
    for after in reversed(starts):
        # Whitespace runs between box commands are disjoint, so all skips stay linear.
        # ``\s*`` matches at every position, so there is always a match.
        whitespace = _WHITESPACE.match(text, after)
        assert whitespace is not None
        brace = whitespace.end()
        if brace < len(text) and text[brace] == "{":
            return _braced_content(text, brace)
        bare = _BARE_TOKEN.match(text, after)
        if bare is not None:
            token = bare.group(1).rstrip(_TRAILING_PUNCTUATION)
            if token:
                return token
    return None


def final_answer(response: str, think_split: bool) -> str | None:
    """Return the final boxed answer of a response.

    Args:
        response: The full model response.
        think_split: When True the response is expected to hold a reasoning block closed by
            ``</think>``; only the text after the last ``</think>`` is searched, and a response
            without ``</think>`` (the model never finished thinking) has no answer. When False
            the whole response is searched.

    Returns:
        The content of the last box, or None when there is none.
    """
    if not isinstance(response, str):
        return None
    if think_split:
        cut = response.rfind(THINK_END)
        if cut < 0:
            return None
        response = response[cut + len(THINK_END) :]
    return extract_boxed(response)


def _is_math_delimited(text: str) -> bool:
    """Whether ``text`` is wholly inside ``$...$``, ``\\(...\\)`` or ``\\[...\\]``."""
    if len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        return True
    return (text.startswith("\\(") and text.endswith("\\)")) or (
        text.startswith("\\[") and text.endswith("\\]")
    )


def wrap_gold(gold: object) -> str:
    """Wrap a gold answer so that math-verify's LaTeX extraction finds it.

    Bare gold strings do not always parse (``x^2+1`` gives nothing, ``\\boxed{x^2+1}``
    works), so golds are boxed unless they already carry a box or math delimiters.

    Args:
        gold: The gold answer; numbers from JSON (``27.0``, ``5``) are turned into strings
            with ``str()``, None into an empty answer.

    Returns:
        The gold unchanged when it contains ``\\boxed`` or is wrapped in ``$...$``
        (or ``\\(...\\)``, ``\\[...\\]``); else ``\\boxed{gold}`` with the gold stripped.
    """
    text = "" if gold is None else gold if isinstance(gold, str) else str(gold)
    text = text.strip()
    if "\\boxed" in text or _is_math_delimited(text):
        return text
    return "\\boxed{" + text + "}"
