"""The paper's Propositions 1 and 2 for the accuracy-aware offline policy shift.

Gradients are taken with respect to the logits of a small categorical policy, so they are
the gradients the model sees, not just d loss / d log pi.
"""

import torch

from nemo_red.algorithms.loss import compute_loss
from nemo_red.algorithms.loss_inputs import GlobalNormalisers, LossBatch, StepContext
from nemo_red.algorithms.presets import LossSpec, TermSpec

T, V = 6, 5


def _offline_batch(logits: torch.Tensor, targets: torch.Tensor, beta: float, adv: float):
    logprobs = torch.log_softmax(logits, -1).gather(-1, targets[:, None])[:, 0]
    logprobs = logprobs[None]  # one offline response of T tokens
    return LossBatch(
        logprobs=logprobs,
        old_logprobs=logprobs.detach(),
        mask=torch.ones(1, T, dtype=torch.bool),
        is_offline=torch.tensor([True]),
        advantages=torch.tensor([adv], dtype=torch.float64),
        rewards=torch.tensor([1.0], dtype=torch.float64),
        group_accuracy=torch.tensor([beta], dtype=torch.float64),
    )


def _grad(spec: LossSpec, beta: float, adv: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, V, generator=gen, dtype=torch.float64).requires_grad_(True)
    targets = torch.randint(0, V, (T,), generator=gen)
    batch = _offline_batch(logits, targets, beta, adv)
    norm = GlobalNormalisers.from_batches([(batch.mask, batch.is_offline)], T)
    loss, _ = compute_loss(spec, batch, norm, StepContext())
    (grad,) = torch.autograd.grad(loss, logits)
    return grad


def _offline(ratio: str) -> LossSpec:
    return LossSpec(
        f"offline_{ratio}", (TermSpec("offline_pg", "offline", params={"ratio": ratio}),)
    )


NLL = LossSpec("nll", (TermSpec("nll", "offline"),))


def test_proposition_2_beta_zero_is_nll_gradient_scaled_by_advantage():
    for adv in (1.0, 0.37, -2.0):
        shifted = _grad(_offline("accuracy_shift"), beta=0.0, adv=adv)
        torch.testing.assert_close(shifted, adv * _grad(NLL, beta=0.0, adv=1.0), rtol=0, atol=1e-12)


def test_beta_one_is_pi_times_grad_log_pi():
    for adv in (1.0, -0.5):
        shifted = _grad(_offline("accuracy_shift"), beta=1.0, adv=adv)
        torch.testing.assert_close(shifted, _grad(_offline("pi_theta"), beta=1.0, adv=adv))


def test_detached_pi_off_keeps_the_gradient_alive_at_beta_zero():
    # Without the detach, pi / (beta + (1 - beta) pi) is identically 1 at beta = 0.
    assert _grad(_offline("accuracy_shift"), beta=0.0, adv=1.0).abs().max() > 1e-3


def test_proposition_1_rho_off_at_most_one_and_vanishing_with_pi():
    from nemo_red.algorithms.loss_terms import OfflinePGParams, ratio_accuracy_shift

    pi = torch.logspace(-30, 0, 301, dtype=torch.float64)
    for beta in torch.linspace(0, 1, 11, dtype=torch.float64):
        betas = beta.expand(1)
        rho = ratio_accuracy_shift(pi.log()[None], betas, OfflinePGParams())[0]
        assert torch.all(rho <= 1 + 1e-15)
        assert torch.all(rho > 0)
        if beta > 0:  # rho_off -> 0 as pi -> 0, monotonically
            assert rho[0] < 1e-29 / beta
            assert torch.all(rho[1:] >= rho[:-1])
        else:
            torch.testing.assert_close(rho, torch.ones_like(rho))


def test_gradient_interpolates_monotonically_between_sft_and_pi_theta():
    # The per-token gradient weight rho_off = pi / pi_off decreases as beta grows.
    from nemo_red.algorithms.loss_terms import OfflinePGParams, ratio_accuracy_shift

    logp = torch.log(torch.tensor([[0.01, 0.3, 0.9]], dtype=torch.float64))
    weights = [
        ratio_accuracy_shift(logp, torch.tensor([b], dtype=torch.float64), OfflinePGParams())
        for b in (0.0, 0.25, 0.5, 0.75, 1.0)
    ]
    for lo, hi in zip(weights[1:], weights[:-1], strict=True):
        assert torch.all(lo <= hi)
