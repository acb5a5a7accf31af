"""Evaluation metrics against hand-computed values and brute-force references."""

from __future__ import annotations

import itertools
import math

import pytest

from nemo_red.evaluation.metrics import (
    default_pass_ks,
    majority_correct,
    normalise_answer,
    overall,
    pass_at_k,
    summarise,
)


def _brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of the k-subsets of n samples (c correct) holding a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_hand_values() -> None:
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)  # pass@1 = c/n
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0  # fewer than k wrong samples
    assert pass_at_k(10, 3, 4) == pytest.approx(1 - math.comb(7, 4) / math.comb(10, 4))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6])
def test_pass_at_k_equals_enumeration(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_is_exact_for_large_n() -> None:
    assert pass_at_k(1024, 1, 1) == pytest.approx(1 / 1024)
    assert pass_at_k(1024, 512, 32) == pytest.approx(
        1 - math.comb(512, 32) / math.comb(1024, 32), rel=1e-12
    )


@pytest.mark.parametrize(("n", "c", "k"), [(3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4)])
def test_pass_at_k_rejects_bad_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match="pass@k needs"):
        pass_at_k(n, c, k)


def test_default_pass_ks() -> None:
    assert default_pass_ks(1) == [1]
    assert default_pass_ks(6) == [1, 2, 4, 6]
    assert default_pass_ks(32) == [1, 2, 4, 8, 16, 32]


def test_majority_vote() -> None:
    # "3" wins 2 votes to 1, and is wrong
    assert majority_correct(["2", "3", " 3 ", None], [True, False, False, False]) is False
    # a tie goes to the answer seen first
    assert majority_correct(["7", "8"], [True, False]) is True
    assert majority_correct(["8", "7"], [False, True]) is False
    # spacing and \dfrac are normalised: 2 votes for 1/2
    assert majority_correct(["\\dfrac{1}{2}", "5", "\\frac {1}{2}"], [True, False, True])
    assert majority_correct([None, ""], [False, False]) is False
    assert normalise_answer("\\left( 3, \\pi \\right).") == "(3,\\pi)"


def _sample(reason: str, extracted: str | None, tokens: int, finish: str = "stop") -> dict:
    return {"reason": reason, "extracted": extracted, "tokens": tokens, "finish_reason": finish}


def test_summarise_hand_computed() -> None:
    item1 = [_sample("correct", "4", 10), _sample("wrong", "5", 20, "length")]
    item2 = [_sample("correct", "1", 30), _sample("correct", "1", 40)]
    item3 = [_sample("wrong", "2", 50), _sample("no_answer", None, 60)]
    # an unparsable gold: reported, left out of every metric
    bad_gold = [_sample("unparsable_gold", "9", 1), _sample("unparsable_gold", None, 1)]
    records = [
        {"valid": True, "samples": item1},
        {"valid": True, "samples": item2},
        {"valid": True, "samples": item3},
        {"valid": False, "samples": bad_gold},
    ]
    s = summarise(records)
    assert (s["items"], s["invalid_items"], s["samples_per_item"]) == (3, 1, 2)
    assert s["accuracy"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert s["avg@2"] == s["accuracy"] == s["pass@1"]
    assert s["pass@2"] == pytest.approx((1 + 1 + 0) / 3)
    assert s["maj@2"] == pytest.approx((1 + 1 + 0) / 3)  # item 1: a tie, first answer "4" wins
    assert s["length"]["mean"] == pytest.approx(35.0)
    assert (s["length"]["min"], s["length"]["max"]) == (10.0, 60.0)
    assert s["truncated"] == pytest.approx(1 / 6)
    assert s["no_answer"] == pytest.approx(1 / 6)
    assert s["reasons"] == {"correct": 3, "no_answer": 1, "unparsable_gold": 2, "wrong": 2}


def test_summarise_rejects_ragged_samples_and_handles_empty() -> None:
    with pytest.raises(ValueError, match="different numbers of samples"):
        summarise(
            [
                {"valid": True, "samples": [_sample("correct", "1", 1)]},
                {"valid": True, "samples": [_sample("correct", "1", 1)] * 2},
            ]
        )
    assert summarise([]) == {"items": 0, "invalid_items": 0, "reasons": {}}


def test_overall_is_the_mean_over_benchmarks() -> None:
    summaries = {
        "a": {"accuracy": 0.2, "length": {"mean": 100.0}, "truncated": 0.0},
        "b": {"accuracy": 0.6, "length": {"mean": 300.0}, "truncated": 0.5},
        "empty": {"items": 0},
    }
    assert overall(summaries) == {
        "benchmarks": 2.0,
        "accuracy": pytest.approx(0.4),
        "length_mean": 200.0,
        "truncated": 0.25,
    }
