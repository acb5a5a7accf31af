"""Tests of nemo_red.algorithms.token_stats (fused per-token log-prob and entropy).

Tolerances: float64 results are compared at 1e-10 (the fused and the naive computation differ
only by summation order over <= a few hundred terms, ~1e-14 relative). float32 results are
compared with a float64 ground truth at ``atol=1e-5, rtol=1e-6``: float32 unit roundoff is
6e-8, the sums over the vocabulary add O(log V) such roundings, and ``logp = z_t - lse`` can
be ~|z| in size, so its error scales with |logp| (hence the relative term; for logits of
magnitude 1e4 one float32 ulp of ``lse`` is already ~1e-3).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nemo_red.algorithms.token_stats import (
    naive_token_logprobs_and_entropy,
    token_logprobs_and_entropy,
    vocab_parallel_token_logprobs_and_entropy,
)
from tests.torchrun import run_torchrun

F64 = {"atol": 1e-10, "rtol": 1e-10}
F32 = {"atol": 1e-5, "rtol": 1e-6}


def _data(
    tokens: int, vocab: int, scale: float, dtype: torch.dtype = torch.float64, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(tokens, vocab, generator=gen, dtype=torch.float64) * scale
    return logits.to(dtype), torch.randint(0, vocab, (tokens,), generator=gen)


def _truth(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return naive_token_logprobs_and_entropy(logits.double(), targets)


@pytest.mark.parametrize("scale", [1.0, 10.0, 1e4])
def test_float64_matches_naive(scale: float) -> None:
    logits, targets = _data(37, 101, scale)
    logp, ent = token_logprobs_and_entropy(logits, targets, chunk_size=8)
    ref_logp, ref_ent = naive_token_logprobs_and_entropy(logits, targets)
    assert logp.dtype == ent.dtype == torch.float64
    torch.testing.assert_close(logp, ref_logp, **F64)
    torch.testing.assert_close(ent, ref_ent, **F64)


@pytest.mark.parametrize("scale", [1.0, 10.0, 1e4])
def test_float32_matches_float64_truth(scale: float) -> None:
    logits, targets = _data(37, 1000, scale, torch.float32)
    logp, ent = token_logprobs_and_entropy(logits, targets, chunk_size=8)
    ref_logp, ref_ent = _truth(logits, targets)
    assert logp.dtype == ent.dtype == torch.float32
    assert torch.isfinite(logp).all()
    assert torch.isfinite(ent).all()
    torch.testing.assert_close(logp.double(), ref_logp, **F32)
    torch.testing.assert_close(ent.double(), ref_ent, **F32)
    # and agrees with the naive float32 computation on ordinary logits
    if scale == 1.0:
        naive_logp, naive_ent = naive_token_logprobs_and_entropy(logits, targets)
        torch.testing.assert_close(logp, naive_logp, **F32)
        torch.testing.assert_close(ent, naive_ent, **F32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_input_computed_in_float32(dtype: torch.dtype) -> None:
    logits, targets = _data(23, 300, 3.0, dtype)
    logp, ent = token_logprobs_and_entropy(logits, targets)
    assert logp.dtype == ent.dtype == torch.float32
    ref_logp, ref_ent = _truth(logits, targets)  # exact values of the low-precision logits
    torch.testing.assert_close(logp.double(), ref_logp, **F32)
    torch.testing.assert_close(ent.double(), ref_ent, **F32)


def test_low_precision_gradient_keeps_input_dtype() -> None:
    logits, targets = _data(5, 40, 2.0, torch.bfloat16)
    logits.requires_grad_(True)
    logp, ent = token_logprobs_and_entropy(logits, targets, with_entropy_grad=True)
    (logp.sum() + ent.sum()).backward()
    ref = logits.detach().double().requires_grad_(True)
    ref_logp, ref_ent = naive_token_logprobs_and_entropy(ref, targets)
    (ref_logp.sum() + ref_ent.sum()).backward()
    assert logits.grad.dtype == torch.bfloat16
    # the gradient is computed in float32 and rounded once to bfloat16 (8-bit mantissa: 4e-3)
    torch.testing.assert_close(logits.grad.double(), ref.grad, atol=1e-2, rtol=1e-2)


def test_uniform_logits_hand_computed() -> None:
    logits = torch.zeros(3, 4)
    logp, ent = token_logprobs_and_entropy(logits, torch.tensor([0, 2, 3]))
    torch.testing.assert_close(logp, torch.full((3,), -math.log(4)))
    torch.testing.assert_close(ent, torch.full((3,), math.log(4)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("entropy_grad", [False, True])
def test_gradients_match_autograd_of_naive(dtype: torch.dtype, entropy_grad: bool) -> None:
    logits, targets = _data(19, 53, 3.0, dtype)
    gen = torch.Generator().manual_seed(1)
    w_logp, w_ent = torch.randn(2, 19, generator=gen, dtype=torch.float64).to(dtype)
    fused_in = logits.clone().requires_grad_(True)
    logp, ent = token_logprobs_and_entropy(
        fused_in, targets, with_entropy_grad=entropy_grad, chunk_size=4
    )
    naive_in = logits.clone().requires_grad_(True)
    ref_logp, ref_ent = naive_token_logprobs_and_entropy(naive_in, targets)
    extra = (w_ent * ent).sum() if entropy_grad else 0.0
    ((w_logp * logp).sum() + extra).backward()
    ref_extra = (w_ent * ref_ent).sum() if entropy_grad else 0.0
    ((w_logp * ref_logp).sum() + ref_extra).backward()
    torch.testing.assert_close(
        fused_in.grad, naive_in.grad, **(F64 if dtype == torch.float64 else F32)
    )


def test_entropy_only_gradient() -> None:
    logits, targets = _data(6, 17, 2.0)
    fused_in = logits.clone().requires_grad_(True)
    _, ent = token_logprobs_and_entropy(fused_in, targets, with_entropy_grad=True)
    ent.sum().backward()
    naive_in = logits.clone().requires_grad_(True)
    naive_token_logprobs_and_entropy(naive_in, targets)[1].sum().backward()
    torch.testing.assert_close(fused_in.grad, naive_in.grad, **F64)


@pytest.mark.parametrize("valid", [None, 5])
def test_gradcheck_float64(valid: int | None) -> None:
    logits, targets = _data(4, 7, 2.0)
    targets = targets % (valid or 7)
    logits.requires_grad_(True)

    def fn(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return token_logprobs_and_entropy(
            z, targets, with_entropy_grad=True, valid_vocab_size=valid, chunk_size=3
        )

    assert torch.autograd.gradcheck(fn, (logits,))


def test_entropy_detached_by_default() -> None:
    logits, targets = _data(4, 9, 1.0)
    logits.requires_grad_(True)
    logp, ent = token_logprobs_and_entropy(logits, targets)
    assert logp.grad_fn is not None
    assert ent.grad_fn is None
    assert not ent.requires_grad
    _, ent_grad = token_logprobs_and_entropy(logits, targets, with_entropy_grad=True)
    assert ent_grad.requires_grad


def test_chunking_invariance() -> None:
    tokens = 10
    logits, targets = _data(tokens, 64, 5.0, torch.float32)
    results = []
    for chunk in (1, 3, tokens, None):
        z = logits.clone().requires_grad_(True)
        logp, ent = token_logprobs_and_entropy(z, targets, with_entropy_grad=True, chunk_size=chunk)
        (logp.sum() + 0.5 * ent.sum()).backward()
        results.append((logp, ent, z.grad))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_valid_vocab_size_masks_padding() -> None:
    logits, targets = _data(11, 12, 3.0)
    targets = targets % 10
    logits[:, 10:] = 50.0  # huge padding logits must not leak into the softmax
    z = logits.clone().requires_grad_(True)
    logp, ent = token_logprobs_and_entropy(
        z, targets, with_entropy_grad=True, valid_vocab_size=10, chunk_size=4
    )
    (logp.sum() + ent.sum()).backward()
    ref_in = logits[:, :10].clone().requires_grad_(True)
    ref_logp, ref_ent = naive_token_logprobs_and_entropy(ref_in, targets)
    (ref_logp.sum() + ref_ent.sum()).backward()
    torch.testing.assert_close(logp, ref_logp, **F64)
    torch.testing.assert_close(ent, ref_ent, **F64)
    torch.testing.assert_close(z.grad[:, :10], ref_in.grad, **F64)
    assert torch.equal(z.grad[:, 10:], torch.zeros(11, 2, dtype=torch.float64))


@pytest.mark.parametrize(("bad", "valid"), [(10, 10), (12, None), (-1, None)])
def test_bad_target_raises(bad: int, valid: int | None) -> None:
    logits = torch.zeros(3, 12)
    with pytest.raises(ValueError, match="target id"):
        token_logprobs_and_entropy(logits, torch.tensor([0, bad, 1]), valid_vocab_size=valid)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="valid_vocab_size"):
        token_logprobs_and_entropy(
            torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), valid_vocab_size=5
        )
    with pytest.raises(ValueError, match="must be targets"):
        token_logprobs_and_entropy(torch.zeros(2, 4), torch.zeros(3, dtype=torch.long))


def test_batched_shapes_and_input_untouched() -> None:
    logits, targets = _data(12, 20, 2.0)
    logits3, targets3 = logits.reshape(3, 4, 20), targets.reshape(3, 4)
    before = logits3.clone()
    logp, ent = token_logprobs_and_entropy(logits3, targets3)
    assert logp.shape == ent.shape == (3, 4)
    ref_logp, ref_ent = token_logprobs_and_entropy(logits, targets)
    torch.testing.assert_close(logp.reshape(-1), ref_logp, atol=0, rtol=0)
    torch.testing.assert_close(ent.reshape(-1), ref_ent, atol=0, rtol=0)
    assert torch.equal(logits3, before)


def test_vocab_parallel_requires_a_group() -> None:
    with pytest.raises(ValueError, match="group is required"):
        vocab_parallel_token_logprobs_and_entropy(
            torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), vocab_start=0, group=None
        )


@pytest.mark.distributed
@pytest.mark.slow
def test_vocab_parallel_matches_unsharded(tmp_path: Path) -> None:
    worker = Path(__file__).with_name("_token_stats_dist_worker.py")
    run_torchrun(worker, 2, ["--out", str(tmp_path)])
    for rank in range(2):
        payload = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert payload["world"] == 2
        assert payload["cases"]
        assert all(case["ok"] for case in payload["cases"])
