"""Splitting a step into 1, 2 or 4 micro-batches gives the same loss and gradient."""

import pytest
import torch

from nemo_red.algorithms.loss import compute_loss, reduce_metrics
from nemo_red.algorithms.loss_inputs import GlobalNormalisers, LossBatch, StepContext
from nemo_red.algorithms.presets import PRESETS, TermSpec, get_preset

B, T = 8, 7


def _random_batch(logprobs: torch.Tensor, entropy: torch.Tensor) -> LossBatch:
    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    mask = torch.arange(T)[None] < lengths[:, None]
    return LossBatch(
        logprobs=logprobs,
        old_logprobs=(logprobs + 0.3 * torch.randn(B, T, generator=gen, dtype=torch.float64))
        .clamp(max=0)
        .detach(),
        mask=mask,
        is_offline=torch.tensor([False, False, False, True, False, False, False, True]),
        advantages=torch.randn(B, generator=gen, dtype=torch.float64),
        rewards=torch.randint(0, 2, (B,), generator=gen).double(),
        group_accuracy=torch.rand(B, generator=gen, dtype=torch.float64),
        entropy=entropy,
        ref_logprobs=(logprobs - 0.1).detach(),
    )


def _loss_and_grad(spec, splits: int):
    gen = torch.Generator().manual_seed(0)
    logprobs = (-torch.rand(B, T, generator=gen, dtype=torch.float64) * 3).requires_grad_(True)
    entropy = (torch.rand(B, T, generator=gen, dtype=torch.float64) * 2).requires_grad_(True)
    batch = _random_batch(logprobs, entropy)
    chunks = [torch.arange(i, B, splits) for i in range(splits)]  # interleaved split
    micro = [batch.select(rows) for rows in chunks]
    norm = GlobalNormalisers.from_batches([(m.mask, m.is_offline) for m in micro], T)
    ctx = StepContext(step=250, entropy_weight=3.0)
    total, metrics = 0.0, []
    for m in micro:
        loss, mb_metrics = compute_loss(spec, m, norm, ctx)
        total = total + loss
        metrics.append(mb_metrics)
    grads = torch.autograd.grad(total, (logprobs, entropy), allow_unused=True)
    grads = tuple(torch.zeros(B, T, dtype=torch.float64) if g is None else g for g in grads)
    return total.detach(), grads, reduce_metrics(metrics)


@pytest.mark.parametrize("preset", PRESETS.names())
@pytest.mark.parametrize("aggregation", ["seq_mean_token_mean", "token_mean", "seq_sum_lmax"])
def test_micro_batch_invariance(preset, aggregation):
    import dataclasses

    spec = dataclasses.replace(get_preset(preset), aggregation=aggregation)
    spec = spec.with_extra_term(TermSpec("kl_k3", "online", coefficient_params={"value": 0.05}))
    ref_loss, ref_grads, ref_metrics = _loss_and_grad(spec, 1)
    assert any(g.abs().max() > 0 for g in ref_grads)
    for splits in (2, 4):
        loss, grads, metrics = _loss_and_grad(spec, splits)
        torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-12)
        for g, ref in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(g, ref, rtol=0, atol=1e-12)
        assert metrics.keys() == ref_metrics.keys()
        for key, value in metrics.items():
            assert value == pytest.approx(ref_metrics[key], abs=1e-12), key
