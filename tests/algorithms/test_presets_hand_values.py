"""Every preset's loss on the hand-made batch of conftest.py, computed by hand.

Numbers below come from the equations of docs/design.md, Algorithm with pencil and paper; the batch
is described in conftest.py. N_seq = 3 responses, 5 tokens (3 online, 2 offline), L_max = 4.
"""

import math

import pytest

from nemo_red.algorithms.loss import compute_loss
from nemo_red.algorithms.loss_inputs import StepContext
from nemo_red.algorithms.presets import get_preset
from tests.algorithms.conftest import normalisers_of

# Online clipped-PG per-token losses (eps 0.2): online 1 -> [-1, -1.2] (rho 1.5 clipped at
# 1.2), online 2 -> [0.8] (rho 0.5 clipped at 0.8 with A < 0). Seq means: -1.1 and 0.8.
ONLINE_SEQ_MEAN_SUM = -1.1 + 0.8  # = -0.3
# Offline per-token rho_off at pi = [0.5, 0.8], beta = 0.5, gamma = 0.1; l = -0.5 * rho_off.
OFFLINE_MEAN = {
    "one": -0.5,  # rho = 1
    "pi_theta": -0.5 * (0.5 + 0.8) / 2,  # rho = pi
    "luffy": -0.5 * (0.5 / 0.6 + 0.8 / 0.9) / 2,  # rho = pi / (pi + 0.1)
    "accuracy_shift": -0.5 * (0.5 / 0.75 + 0.8 / 0.9) / 2,  # pi_off = 0.5 + 0.5 pi
}

CASES = {
    # per_term normaliser: only the 2 online responses count.
    "grpo": ONLINE_SEQ_MEAN_SUM / 2,
    # eps_high 0.28: [-1, -1.28] and [0.8], token mean over the 3 online tokens.
    "dapo": (-1 - 1.28 + 0.8) / 3,
    # -log pi over the 2 offline tokens, token mean.
    "sft": (-math.log(0.5) - math.log(0.8)) / 2,
    "mixpolicy": (ONLINE_SEQ_MEAN_SUM + OFFLINE_MEAN["pi_theta"]) / 3,
    "offline_onpolicy": (ONLINE_SEQ_MEAN_SUM + OFFLINE_MEAN["one"]) / 3,
    "red_shift": (ONLINE_SEQ_MEAN_SUM + OFFLINE_MEAN["accuracy_shift"]) / 3,
    # w(t) = 2 in the step context.
    "red": (ONLINE_SEQ_MEAN_SUM + 2 * OFFLINE_MEAN["accuracy_shift"]) / 3,
    "red_entropy": (ONLINE_SEQ_MEAN_SUM + 2 * OFFLINE_MEAN["pi_theta"]) / 3,
    # Unclipped PG token sum (-1 - 1.5 + 0.5), LUFFY offline token sum, entropy bonus
    # -0.001 * 5 tokens * H = 1; all over N_seq * L_max = 12.
    "luffy": (-2.0 + 2 * OFFLINE_MEAN["luffy"] - 0.005) / 12,
    # A' = 0.1 e for the correct rollout, -1 for the wrong one; l = -A' log pi.
    # NLL weight 0.5 exp(-1); LUFFY off-policy term as above.
    "srft": (
        -0.1 * math.e * (math.log(0.5) + math.log(0.6)) / 2
        + math.log(0.2)
        + 0.5 * math.exp(-1) * (-math.log(0.5) - math.log(0.8)) / 2
        + OFFLINE_MEAN["luffy"]
    )
    / 3,
    # step 200 = end of warm-up: mu = 0.5. (1 - mu) * token mean of clipped PG over the
    # 3 online tokens + mu * token mean of -p(1 - p) log p over the 2 offline tokens.
    "chord": 0.5 * (-1 - 1.2 + 0.8) / 3 + 0.5 * (-0.25 * math.log(0.5) - 0.16 * math.log(0.8)) / 2,
}


@pytest.mark.parametrize("preset", sorted(CASES))
def test_preset_loss_matches_hand_value(preset, hand_batch):
    ctx = StepContext(step=200, entropy_weight=2.0)
    loss, metrics = compute_loss(get_preset(preset), hand_batch, normalisers_of(hand_batch), ctx)
    assert loss.item() == pytest.approx(CASES[preset], abs=1e-9)
    assert metrics["loss/total"].item() == pytest.approx(CASES[preset], abs=1e-9)


def test_every_registered_preset_has_a_hand_value():
    from nemo_red.algorithms.presets import PRESETS

    assert sorted(PRESETS.names()) == sorted(CASES)


def test_red_metrics_by_hand(hand_batch):
    ctx = StepContext(entropy_weight=2.0)
    _, m = compute_loss(get_preset("red"), hand_batch, normalisers_of(hand_batch), ctx)
    # One of the 3 online tokens is clipped high, one clipped low.
    assert m["online/clip_frac"].item() == pytest.approx(2 / 3)
    assert m["online/clip_frac_high"].item() == pytest.approx(1 / 3)
    assert m["online/clip_frac_low"].item() == pytest.approx(1 / 3)
    assert m["online/ratio_mean"].item() == pytest.approx((1 + 1.5 + 0.5) / 3)
    assert m["online/ratio_min"].item() == pytest.approx(0.5)
    assert m["online/ratio_max"].item() == pytest.approx(1.5)
    assert m["offline/rho_off_mean"].item() == pytest.approx((0.5 / 0.75 + 0.8 / 0.9) / 2)
    assert m["offline/rho_off_min"].item() == pytest.approx(0.5 / 0.75)
    assert m["offline/rho_off_max"].item() == pytest.approx(0.8 / 0.9)
    assert m["offline/old_ratio_mean"].item() == pytest.approx(1.0)
    assert m["coef/offline_pg"].item() == pytest.approx(2.0)
    assert m["loss/clipped_pg"].item() == pytest.approx(-0.1)


def test_dual_clip_bounds_negative_advantage_loss(hand_batch):
    # online 2 has rho 0.5 -> make it rho 4 with A = -1: PPO loss 4, dual clip c = 3 -> 3.
    spec = get_preset("grpo").with_term("clipped_pg", params={"dual_clip": 3.0})
    batch = hand_batch.select([1])
    batch.old_logprobs[0, 0] = math.log(0.05)
    loss, m = compute_loss(spec, batch, normalisers_of(batch), StepContext())
    assert loss.item() == pytest.approx(3.0)
    assert m["online/dual_clip_frac"].item() == pytest.approx(1.0)


def test_offline_ratio_cap(hand_batch):
    spec = get_preset("mixpolicy").with_term("offline_pg", params={"max_ratio": 0.6})
    loss, m = compute_loss(spec, hand_batch, normalisers_of(hand_batch), StepContext())
    assert m["offline/clip_frac"].item() == pytest.approx(0.5)  # pi = 0.8 capped at 0.6
    assert loss.item() == pytest.approx((-0.3 - 0.5 * (0.5 + 0.6) / 2) / 3)


def test_kl_k3_by_hand(hand_batch):
    from nemo_red.algorithms.presets import TermSpec

    batch = hand_batch.select([0])
    ref = batch.logprobs.detach().clone()
    ref[0, 1] = math.log(0.3)  # pi = 0.6, pi_ref = 0.3: r = log 0.5, k3 = 0.5 - log 0.5 - 1
    batch = type(batch)(**{**batch.__dict__, "ref_logprobs": ref})
    spec = get_preset("grpo").with_extra_term(
        TermSpec("kl_k3", "online", coefficient_params={"value": 0.1})
    )
    _, m = compute_loss(spec, batch, normalisers_of(batch), StepContext())
    assert m["loss/kl_k3"].item() == pytest.approx(0.1 * (0.5 - math.log(0.5) - 1) / 2)
