"""Confidence intervals and the paired verdict rule of a comparison.

An arm's accuracy over its seeds is reported as mean ± the half-width of a two-sided 95%
Student t interval, ``t(0.975, n - 1) * s / sqrt(n)`` with ``s`` the sample standard
deviation. Two arms are compared on the seeds both ran: run ``seed`` of every arm starts
from the same base model and draws its problems in the same order, so the per-seed
differences ``d_s = acc(arm, s) - acc(reference, s)`` are paired, and the verdict reads the
95% t interval of their mean:

* ``better``: the whole interval is above 0;
* ``worse``: the whole interval is below 0;
* ``no difference shown``: the interval contains 0 (or fewer than 2 paired seeds).

No correction for the number of arms compared is applied: with 16 arms against one
reference, about one "better" or "worse" in 20 is expected by chance alone.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# t(0.975, df) for df = 1..30 (two-sided 95%); beyond 30 the Cornish-Fisher expansion below.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z975 = 1.959964

BETTER, WORSE, UNRESOLVED = "better", "worse", "no difference shown"


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Interval:
    """A mean with the half-width of its 95% t interval (None for fewer than 2 values)."""

    mean: float
    half_width: float | None
    n: int

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width


def interval(values: Sequence[float]) -> Interval | None:
    """Mean and 95% t half-width of ``values`` (None when empty)."""
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Interval(mean, None, len(values))
    half = t_quantile_975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return Interval(mean, half, len(values))


@dataclass(frozen=True)
class PairedVerdict:
    """An arm against the reference arm on the seeds both have."""

    seeds: list[int]
    differences: list[float]
    difference: Interval | None
    verdict: str


def paired_verdict(arm: Mapping[int, float], reference: Mapping[int, float]) -> PairedVerdict:
    """The paired comparison of per-seed values (seed -> accuracy) against the reference's."""
    seeds = sorted(set(arm) & set(reference))
    diffs = [arm[s] - reference[s] for s in seeds]
    diff = interval(diffs)
    verdict = UNRESOLVED
    if diff is not None and diff.low is not None and diff.high is not None:
        if diff.low > 0:
            verdict = BETTER
        elif diff.high < 0:
            verdict = WORSE
    return PairedVerdict(seeds, diffs, diff, verdict)
