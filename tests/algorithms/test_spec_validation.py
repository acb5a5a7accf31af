"""Loss specs fail at build time with the valid choices; the CHORD mu schedule by hand."""

import pytest

from nemo_red.algorithms.coefficients import ChordMuParams, chord_mu_at
from nemo_red.algorithms.presets import LossSpec, TermSpec, get_preset
from nemo_red.algorithms.registry import UnknownNameError


def test_unknown_preset_lists_valid_names():
    with pytest.raises(UnknownNameError) as err:
        get_preset("ppo")
    assert "red_entropy" in str(err.value)
    assert "luffy" in str(err.value)


def test_unknown_term_coefficient_ratio_and_aggregation():
    with pytest.raises(UnknownNameError, match="clipped_pg"):
        TermSpec("clipped", "online")
    with pytest.raises(UnknownNameError, match="entropy_regulated"):
        TermSpec("offline_pg", "offline", coefficient="entropy")
    with pytest.raises(UnknownNameError, match="accuracy_shift"):
        TermSpec("offline_pg", "offline", params={"ratio": "shift"})
    with pytest.raises(UnknownNameError, match="seq_mean_token_mean"):
        LossSpec("x", (TermSpec("nll", "offline"),), aggregation="mean")


def test_unknown_params_list_valid_ones():
    with pytest.raises(ValueError, match=r"\['dual_clip', 'eps_high', 'eps_low'\]"):
        get_preset("grpo").with_term("clipped_pg", params={"eps": 0.1})


def test_bad_values_and_populations():
    with pytest.raises(ValueError, match="eps_low"):
        TermSpec("clipped_pg", "online", params={"eps_low": 1.5})
    with pytest.raises(ValueError, match=r"'online', 'offline'"):
        TermSpec("nll", "teacher")
    with pytest.raises(ValueError, match="unique"):
        LossSpec("x", (TermSpec("nll", "offline"), TermSpec("nll", "offline")))
    with pytest.raises(ValueError, match="no term"):
        get_preset("grpo").with_term("nll")


def test_with_term_merges_params_and_keeps_the_original():
    spec = get_preset("dapo").with_term("clipped_pg", params={"eps_high": 0.3})
    assert spec.terms[0].term_params.eps_high == 0.3
    assert spec.terms[0].term_params.eps_low == 0.2
    assert get_preset("dapo").terms[0].term_params.eps_high == 0.28


def test_spec_flags():
    assert not get_preset("sft").uses_online
    assert get_preset("sft").uses_offline
    assert not get_preset("grpo").uses_offline
    assert get_preset("luffy").needs == {"old_logprobs", "entropy", "entropy_grad"}
    assert get_preset("srft").needs == {"old_logprobs", "entropy"}
    assert get_preset("sft").needs == frozenset()  # NLL reads no pi_old: no pass before SFT


def test_chord_mu_schedule_by_hand():
    p = ChordMuParams(warmup_steps=200, decay_steps=400, peak=0.5, valley=0.02)
    assert chord_mu_at(0, p) == 0.0
    assert chord_mu_at(100, p) == pytest.approx(0.25)
    assert chord_mu_at(200, p) == pytest.approx(0.5)
    assert chord_mu_at(400, p) == pytest.approx(0.02 + 0.48 * 0.5)  # cos(pi / 2) = 0
    assert chord_mu_at(600, p) == pytest.approx(0.02)
    assert chord_mu_at(10_000, p) == pytest.approx(0.02)
    constant = ChordMuParams(warmup_steps=0, decay_steps=0, peak=0.1, valley=0.1)
    assert chord_mu_at(0, constant) == chord_mu_at(999, constant) == pytest.approx(0.1)
