"""95% t intervals and the paired verdict rule, against hand-computed values."""

import math

import pytest

from nemo_red.experiments.intervals import (
    BETTER,
    UNRESOLVED,
    WORSE,
    interval,
    paired_verdict,
    t_quantile_975,
)


def test_t_quantiles_match_the_table_and_tend_to_the_normal():
    assert t_quantile_975(1) == 12.706
    assert t_quantile_975(4) == 2.776
    assert t_quantile_975(30) == 2.042
    assert t_quantile_975(40) == pytest.approx(2.021, abs=1e-3)  # tabulated 2.0211
    assert t_quantile_975(120) == pytest.approx(1.980, abs=1e-3)  # tabulated 1.9799
    assert t_quantile_975(10**6) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError, match=">= 1"):
        t_quantile_975(0)


def test_interval_by_hand():
    # 0.5, 0.6, 0.7, 0.8, 0.9: mean 0.7, s = sqrt(0.025), half = 2.776 * s / sqrt(5)
    got = interval([0.5, 0.6, 0.7, 0.8, 0.9])
    assert got is not None
    assert got.mean == pytest.approx(0.7)
    assert got.half_width == pytest.approx(2.776 * math.sqrt(0.025) / math.sqrt(5))
    assert got.half_width == pytest.approx(0.19629, abs=1e-5)
    assert got.low == pytest.approx(0.7 - got.half_width)
    one = interval([0.4])
    assert one is not None
    assert one.half_width is None
    assert one.low is None
    assert interval([]) is None


def test_paired_verdicts_read_the_interval_of_the_differences():
    reference = {1: 0.50, 2: 0.60, 3: 0.40, 4: 0.55, 5: 0.45}
    # a constant +5 points on every seed: zero spread, the interval is [5, 5] points
    better = paired_verdict({s: v + 0.05 for s, v in reference.items()}, reference)
    assert better.verdict == BETTER
    assert better.differences == pytest.approx([0.05] * 5)
    worse = paired_verdict({s: v - 0.05 for s, v in reference.items()}, reference)
    assert worse.verdict == WORSE
    # differences +10, -10, +10, -10, 0: mean 0, the interval contains 0
    mixed = {1: 0.60, 2: 0.50, 3: 0.50, 4: 0.45, 5: 0.45}
    unresolved = paired_verdict(mixed, reference)
    assert unresolved.verdict == UNRESOLVED
    assert unresolved.difference is not None
    assert unresolved.difference.mean == pytest.approx(0.0)
    # only the seeds both arms ran are paired; one pair gives no interval
    lone = paired_verdict({1: 0.9, 7: 0.1}, reference)
    assert lone.seeds == [1]
    assert lone.verdict == UNRESOLVED
