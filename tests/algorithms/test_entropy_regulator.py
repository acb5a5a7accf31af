"""EntropyRegulator sequences for each window and clip range (paper Eq. 13, App. D)."""

import math

import pytest

from nemo_red.algorithms.entropy_regulator import EntropyRegulator

# (H_rl, H_sft) per iteration.
SEQUENCE = [(1.0, 2.0), (0.9, 1.0), (0.9, 1.5), (1.08, 1.5), (0.54, 1.2)]


def _weights(reg: EntropyRegulator) -> list[float]:
    return [reg.update(h_rl, h_sft).weight for h_rl, h_sft in SEQUENCE]


def test_window_one_clip_one_to_g():
    # t=1: dH_rl = 0.1, dH_sft = 0.5 -> 5. t=2: dH_rl = 0 -> clip_high 8.
    # t=3: dH_rl = 0.2, dH_sft = 0 -> 0 -> clipped to 1. t=4: 0.5, 0.2 -> 0.4 -> 1.
    assert _weights(EntropyRegulator(1, 1.0, 8.0)) == pytest.approx([1, 5, 8, 1, 1])


def test_window_one_clip_zero_to_g():
    assert _weights(EntropyRegulator(1, 0.0, 8.0)) == pytest.approx([1, 5, 8, 0, 0.4])


def test_window_one_clip_one_to_inf_holds_weight_when_rl_entropy_is_flat():
    # t=2 would be infinite: the previous weight (5) is kept.
    assert _weights(EntropyRegulator(1, 1.0, math.inf)) == pytest.approx([1, 5, 5, 1, 1])


def test_window_five_uses_mean_of_previous_values():
    # t=1: Hbar = (1, 2) -> 5. t=2: Hbar_rl = 0.95, Hbar_sft = 1.5 -> dH_rl = 0.05/0.95,
    # dH_sft = 0 -> 0. t=3: Hbar = (2.8/3, 4.5/3): dH_rl = |1 - 1.08*3/2.8|, dH_sft = 0 -> 0.
    # t=4: Hbar_rl = 3.88/4 = 0.97, Hbar_sft = 6/4 = 1.5: dH_rl = |1 - .54/.97|, dH_sft = 0.2.
    expected_t4 = 0.2 / abs(1 - 0.54 / 0.97)
    assert _weights(EntropyRegulator(5, 0.0, 8.0)) == pytest.approx([1, 5, 0, 0, expected_t4])


def test_window_ten_with_short_history_equals_window_five_here():
    assert _weights(EntropyRegulator(10, 0.0, 8.0)) == pytest.approx(
        _weights(EntropyRegulator(5, 0.0, 8.0))
    )


def test_window_two_forgets_older_values():
    reg = EntropyRegulator(2, 0.0, 100.0)
    weights = _weights(reg)
    # t=4: Hbar_rl = (0.9 + 1.08) / 2 = 0.99, Hbar_sft = 1.5.
    assert weights[4] == pytest.approx(0.2 / abs(1 - 0.54 / 0.99))


def test_update_reports_deltas():
    reg = EntropyRegulator()
    first = reg.update(1.0, 2.0)
    assert first.weight == 1
    assert math.isnan(first.delta_rl)
    second = reg.update(0.9, 1.0)
    assert (second.delta_rl, second.delta_sft, second.ratio) == pytest.approx((0.1, 0.5, 5.0))
    assert reg.weight == pytest.approx(5.0)


def test_state_dict_round_trip_continues_identically():
    a = EntropyRegulator(5, 1.0, 8.0)
    for h in SEQUENCE[:3]:
        a.update(*h)
    b = EntropyRegulator(5, 1.0, 8.0)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict()
    assert [b.update(*h).weight for h in SEQUENCE[3:]] == [
        a.update(*h).weight for h in SEQUENCE[3:]
    ]


def test_state_dict_with_other_settings_is_refused():
    a = EntropyRegulator(1, 1.0, 8.0)
    with pytest.raises(ValueError, match="window/clip"):
        EntropyRegulator(5, 1.0, 8.0).load_state_dict(a.state_dict())


@pytest.mark.parametrize(("h_rl", "h_sft"), [(-0.1, 1.0), (1.0, math.nan), (math.inf, 1.0)])
def test_bad_entropies_are_refused(h_rl, h_sft):
    with pytest.raises(ValueError, match="finite entropy"):
        EntropyRegulator().update(h_rl, h_sft)


def test_zero_previous_entropy():
    reg = EntropyRegulator(1, 1.0, 8.0)
    reg.update(0.0, 1.0)
    assert reg.update(0.0, 1.5).weight == 8.0  # dH_rl = 0 -> clip_high
    reg = EntropyRegulator(1, 0.0, 8.0)
    reg.update(1.0, 0.0)
    assert reg.update(0.8, 0.1).weight == 8.0  # dH_sft infinite -> clip_high


@pytest.mark.parametrize(("window", "low", "high"), [(0, 1, 8), (1, -1, 8), (1, 9, 8)])
def test_bad_settings(window, low, high):
    with pytest.raises(ValueError, match=r"window|clip_low"):
        EntropyRegulator(window, low, high)
