"""Benchmark metrics from graded samples: avg@n, unbiased pass@k, majority vote, lengths.

For an item with ``n`` samples of which ``c`` are correct:

* ``avg@n`` = c / n (the paper's avg@32 on AIME and AMC; with n = 1 it is pass@1);
* ``pass@k`` = 1 - C(n - c, k) / C(n, k), the unbiased estimator of Chen et al. (2021,
  "Evaluating Large Language Models Trained on Code", Eq. 1), computed as a product so that
  it is exact for large n;
* ``maj@n``: 1 when the most frequent final answer is correct. Answers are compared after
  :func:`normalise_answer` (spacing, ``\\left``/``\\right``, ``\\dfrac``); two equivalent answers
  written differently (``0.5`` and ``\\frac12``) count as different votes. Ties go to the
  answer seen first; samples without an answer do not vote.

A benchmark's value of each metric is the mean over its items. Items whose gold answer
cannot be parsed are left out of every metric and counted (``invalid_items``), never scored 0.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "default_pass_ks",
    "length_summary",
    "majority_correct",
    "normalise_answer",
    "overall",
    "pass_at_k",
    "summarise",
]

_SPACING = re.compile(r"\\[,;:! ]|\\left|\\right|\s+")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k: the probability that k of the n samples, drawn without
    replacement, hold at least one correct one.

    Args:
        n: Samples of the item.
        c: Correct samples, ``0 <= c <= n``.
        k: ``1 <= k <= n``.

    Returns:
        ``1 - C(n - c, k) / C(n, k)``.

    Raises:
        ValueError: For counts out of range.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=0}^{k-1} (n - c - i) / (n - i)
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def default_pass_ks(n: int) -> list[int]:
    """1, the powers of two below n, and n (``[1, 2, 4, 8, 16, 32]`` for n = 32)."""
    ks = {1, n}
    k = 2
    while k < n:
        ks.add(k)
        k *= 2
    return sorted(ks)


def normalise_answer(answer: str) -> str:
    """The form in which final answers are compared for the majority vote."""
    text = _SPACING.sub("", answer)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return text.rstrip(".")


def majority_correct(answers: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """Whether the most frequent answer (see the module docstring) is a correct one.

    Args:
        answers: The final answer of each sample (None: no answer).
        correct: Whether each sample is correct.

    Returns:
        The correctness of the majority answer; False when no sample has an answer.
    """
    votes: Counter[str] = Counter()
    first: dict[str, int] = {}
    for index, answer in enumerate(answers):
        if answer is None or not answer.strip():
            continue
        key = normalise_answer(answer)
        votes[key] += 1
        first.setdefault(key, index)
    if not votes:
        return False
    top = max(votes.values())
    winner = min((key for key, count in votes.items() if count == top), key=first.__getitem__)
    return bool(correct[first[winner]])


def length_summary(lengths: Sequence[int]) -> dict[str, float]:
    """Mean, standard deviation and quantiles (p10, p50, p90) and extremes of lengths."""
    if not lengths:
        return {}
    ordered = sorted(lengths)

    def quantile(q: float) -> float:
        return float(ordered[min(len(ordered) - 1, math.floor(q * len(ordered)))])

    return {
        "mean": statistics.fmean(ordered),
        "std": statistics.pstdev(ordered) if len(ordered) > 1 else 0.0,
        "min": float(ordered[0]),
        "p10": quantile(0.1),
        "p50": quantile(0.5),
        "p90": quantile(0.9),
        "max": float(ordered[-1]),
    }


def summarise(records: Iterable[Mapping[str, Any]], pass_ks: Sequence[int] = ()) -> dict[str, Any]:
    """The metrics of one benchmark from its item records.

    Args:
        records: Item records as stored (``{"valid": bool, "samples": [{"reason",
            "extracted", "tokens", "finish_reason"}, ...]}``; see ``records.py``).
        pass_ks: The k of pass@k (default: :func:`default_pass_ks` of the samples per item).

    Returns:
        ``items``, ``invalid_items``, ``samples_per_item``, ``accuracy`` (= avg@n),
        ``avg@n``, ``pass@k`` for each k, ``maj@n`` (when n > 1), ``length`` (see
        :func:`length_summary`, in tokens), ``truncated`` (fraction of samples stopped by the
        token limit), ``no_answer`` (fraction without a final answer) and ``reasons``
        (counts of the grading reasons over all samples, invalid items included).
    """
    records = list(records)
    reasons: Counter[str] = Counter(s["reason"] for r in records for s in r["samples"])
    valid = [r for r in records if r["valid"]]
    out: dict[str, Any] = {"items": len(valid), "invalid_items": len(records) - len(valid)}
    if not valid:
        return {**out, "reasons": dict(sorted(reasons.items()))}
    counts = {len(r["samples"]) for r in valid}
    if len(counts) != 1:
        raise ValueError(f"items have different numbers of samples: {sorted(counts)}")
    n = counts.pop()
    correct = [[s["reason"] == "correct" for s in r["samples"]] for r in valid]
    samples = [s for r in valid for s in r["samples"]]
    accuracy = statistics.fmean(sum(c) / n for c in correct)
    out.update({"samples_per_item": n, "accuracy": accuracy, f"avg@{n}": accuracy})
    for k in pass_ks or default_pass_ks(n):
        if k <= n:
            out[f"pass@{k}"] = statistics.fmean(pass_at_k(n, sum(c), k) for c in correct)
    if n > 1:
        out[f"maj@{n}"] = statistics.fmean(
            majority_correct([s["extracted"] for s in r["samples"]], c)
            for r, c in zip(valid, correct, strict=True)
        )
    out["length"] = length_summary([int(s["tokens"]) for s in samples])
    out["truncated"] = statistics.fmean(s["finish_reason"] == "length" for s in samples)
    out["no_answer"] = statistics.fmean(s["reason"] == "no_answer" for s in samples)
    out["reasons"] = dict(sorted(reasons.items()))
    return out


def overall(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The mean over benchmarks (the paper's Overall column) of accuracy and mean length."""
    scored = [s for s in summaries.values() if "accuracy" in s]
    if not scored:
        return {}
    return {
        "benchmarks": float(len(scored)),
        "accuracy": statistics.fmean(s["accuracy"] for s in scored),
        "length_mean": statistics.fmean(s["length"]["mean"] for s in scored),
        "truncated": statistics.fmean(s["truncated"] for s in scored),
    }
