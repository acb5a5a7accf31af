"""Fused per-token log-probability and entropy from logits, plain and vocab-parallel.

With ``p = softmax(z)``: ``logp = z[target] - lse`` and ``H = -sum p log p = lse - S``,
``S = sum p z``, computed together in ONE pass over row chunks of the logits: forward makes
no ``[T, V]`` temporary, backward only the gradient itself. Math is in float32 (float64 for
float64 logits); low-precision logits are promoted one chunk at a time.

Sums use the shifted logits ``d = z - m`` (``m`` the row max): ``lse = m + log s``,
``s = sum exp(d)``, ``H = log s - sum(exp(d) d) / s``, so ``H`` is never a difference of two
large numbers. Backward saves the logits (by reference), ``lse`` and ``H``, and uses
``log p = z - lse``: ``dlogp/dz = onehot - p`` and ``dH/dz = -p (z - S) = -p (log p + H)``.

Vocab-parallel: each rank reduces its shard against its own row maxima; one MAX all-reduce of
all row maxima ``[T]`` and one SUM all-reduce of the rescaled partial sums ``[3, T]`` give the
global statistics; backward is local. Both variants run the same autograd function.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

# Logits per chunk by default (64 MiB per fp32 scratch buffer). On an idle CPU, cache-sized
# chunks (~1M) ran up to 2x faster, but they are much slower when the cores are shared: every
# chunk is ~8 parallel regions, each waiting for all threads.
_DEFAULT_CHUNK_ELEMENTS = 1 << 24


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunk_partials(z: Tensor, idx: Tensor, scratch: Tensor, out: Tensor) -> None:
    """Row statistics of one chunk, relative to the chunk's own row maxima ``m``.

    Args:
        z: Logits chunk ``[c, W]`` (any float dtype, ``W >= 1``, possibly a strided view).
        idx: Local column of the target per row ``[c]`` int64, in ``[0, W)``.
        scratch: ``[2, c, W]`` in the compute dtype (overwritten).
        out: ``[4, c]`` in the compute dtype, receives ``m``, ``s = sum exp(z - m)``,
            ``sum exp(z - m) * (z - m)`` and ``z[idx] - m``.
    """
    d, e = scratch
    out[0] = z.amax(dim=-1)
    torch.sub(z, out[0].unsqueeze(-1), out=d)  # low-precision z is promoted element by element
    torch.exp(d, out=e)
    out[1] = e.sum(dim=-1)
    out[2] = e.mul_(d).sum(dim=-1)
    out[3] = d.gather(-1, idx.unsqueeze(-1)).squeeze(-1)


def _local_index(targets: Tensor, vocab_start: int, width: int) -> tuple[Tensor, Tensor]:
    """Local column of each target ``[T]`` (clamped into the shard) and whether it is owned."""
    local = targets - vocab_start
    owned = (local >= 0) & (local < width)
    return local.clamp(0, max(width - 1, 0)), owned


def _global_stats(
    logits: Tensor, targets: Tensor, geometry: tuple[int, int, int], group: dist.ProcessGroup | None
) -> tuple[Tensor, Tensor, Tensor]:
    """One chunked pass over ``logits[:, :width]`` plus (with a group) two all-reduces.

    Args:
        logits: Logits (shard) ``[T, V]``; targets: global target ids ``[T]`` int64.
        geometry: ``(vocab_start, width, chunk)``: global id of local column 0, number of
            valid (non-padding) local columns ``0 <= width <= V``, rows per chunk.
        group: Process group over which the vocabulary is sharded, or None.

    Returns:
        ``logp``, ``H`` and ``lse``, each ``[T]`` in the compute dtype.
    """
    (vocab_start, width, chunk), rows = geometry, logits.shape[0]
    cdt, dev = _compute_dtype(logits.dtype), logits.device
    idx, owned = _local_index(targets, vocab_start, width)
    part = torch.zeros(4, rows, dtype=cdt, device=dev)  # m, s, sum e*d, z[target] - m
    part[0] = float("-inf") if width == 0 else 0.0
    # scratch allocated once and reused: fresh chunk-sized allocations page-fault on every chunk
    scratch = torch.empty(2, min(chunk, rows), width, dtype=cdt, device=dev)
    for r0 in range(0, rows if width else 0, chunk):
        r1 = min(r0 + chunk, rows)
        _chunk_partials(logits[r0:r1, :width], idx[r0:r1], scratch[:, : r1 - r0], part[:, r0:r1])
    m, s, sed, tsh = part
    if group is not None:
        row_max = m.clone()
        dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=group)
        summed = torch.zeros(3, rows, dtype=cdt, device=dev)
        if width:  # an all-padding shard adds zeros (and its -inf max must not make NaNs)
            delta = m - row_max  # <= 0: rescales this shard's sums to the global max
            scale = torch.exp(delta)
            summed[0] = s * scale
            summed[1] = scale * (sed + delta * s)
            summed[2] = torch.where(owned, tsh + delta, 0.0)
        dist.all_reduce(summed, op=dist.ReduceOp.SUM, group=group)
        m, (s, sed, tsh) = row_max, summed
    log_s = s.log()
    return tsh - log_s, log_s - sed / s, m + log_s


def _chunk_grad(
    z: Tensor, lse: Tensor, coef: Tensor, idx: Tensor, out: Tensor, p: Tensor | None
) -> None:
    """Write ``onehot(idx) * t - p * (a + b * log p)`` of one chunk into ``out``.

    With ``a = g_logp + g_H * H``, ``b = g_H``, ``t = g_logp`` (0 where the target is not in
    this shard) this is ``g_logp * (onehot - p) - g_H * p * (log p + H)``.

    Args:
        z: Logits chunk ``[c, W]``; lse: global log-sum-exp ``[c]``.
        coef: Rows ``a``, ``b``, ``t`` ``[3, c]``; idx: local target column ``[c]``.
        out: Result ``[c, W]`` in the compute dtype (may be a strided view of the gradient).
        p: Scratch ``[c, W]`` in the compute dtype, or None when ``b`` is 0 (saves a pass).
    """
    a, b, t = (row.unsqueeze(-1) for row in coef)
    torch.sub(z, lse.unsqueeze(-1), out=out)  # log p
    if p is None:
        out.exp_().mul_(-a)
    else:
        torch.exp(out, out=p)
        out.mul_(-b).sub_(a).mul_(p)
    out.scatter_add_(-1, idx.unsqueeze(-1), t)


class _TokenStats(torch.autograd.Function):
    """Autograd function behind both public variants (see the module docstring)."""

    # ``ctx`` is Any, as in torch's own signatures: it carries our ``geometry`` and, in
    # backward, ``saved_tensors`` (which ``FunctionCtx`` does not declare).
    @staticmethod
    def forward(
        ctx: Any,
        logits: Tensor,
        targets: Tensor,
        geometry: tuple[int, int, int],
        group: dist.ProcessGroup | None,
        with_entropy_grad: bool,
    ) -> tuple[Tensor, Tensor]:
        logp, entropy, lse = _global_stats(logits, targets, geometry, group)
        ctx.save_for_backward(logits, targets, lse, entropy)
        ctx.geometry = geometry  # (vocab_start, width, chunk)
        ctx.set_materialize_grads(False)
        if not with_entropy_grad:
            ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any,
        g_logp: Tensor | None,
        g_ent: Tensor | None,
    ) -> tuple[Tensor | None, ...]:
        if g_logp is None and g_ent is None:
            return None, None, None, None, None
        logits, targets, lse, entropy = ctx.saved_tensors
        vocab_start, width, chunk = ctx.geometry
        rows, cdt = logits.shape[0], lse.dtype
        g_logp = torch.zeros_like(lse) if g_logp is None else g_logp.to(cdt)
        g_h = torch.zeros_like(lse) if g_ent is None else g_ent.to(cdt)
        idx, owned = _local_index(targets, vocab_start, width)
        coef = torch.stack([g_logp + g_h * entropy, g_h, torch.where(owned, g_logp, 0.0)])
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        grad[:, width:].zero_()  # padding columns (all of an all-padding shard)
        cast = grad.dtype != cdt  # low precision: compute in a scratch, then cast
        n_scratch = int(g_ent is not None) + int(cast)
        scratch = torch.empty(n_scratch, min(chunk, rows), width, dtype=cdt, device=grad.device)
        for r0 in range(0, rows if width else 0, chunk):
            sl = slice(r0, min(r0 + chunk, rows))
            out = grad[sl, :width]
            c = out.shape[0]
            work = scratch[-1, :c] if cast else out
            p = scratch[0, :c] if g_ent is not None else None
            _chunk_grad(logits[sl, :width], lse[sl], coef[:, sl], idx[sl], work, p)
            if cast:
                out.copy_(work)
        return grad, None, None, None, None


def _apply(
    logits: Tensor,
    targets: Tensor,
    vocab_start: int,
    group: dist.ProcessGroup | None,
    with_entropy_grad: bool,
    valid_vocab_size: int | None,
    chunk_size: int | None,
) -> tuple[Tensor, Tensor]:
    """Validate, flatten ``[..., V]`` / ``[...]`` to ``[T, V]`` / ``[T]``, run, reshape back."""
    if not logits.is_floating_point() or logits.dim() < 1:
        raise TypeError(f"logits must be a floating tensor [..., V], got {logits.dtype}")
    if tuple(logits.shape[:-1]) != tuple(targets.shape):
        raise ValueError(f"logits {tuple(logits.shape)} must be targets {tuple(targets.shape)}+[V]")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise TypeError(f"targets must be an integer tensor, got {targets.dtype}")
    shard = logits.shape[-1]
    total = shard * (1 if group is None else dist.get_world_size(group))
    valid = total if valid_vocab_size is None else valid_vocab_size
    if not 0 < valid <= total or vocab_start < 0:
        raise ValueError(f"need 0 < valid_vocab_size <= {total} and vocab_start >= 0")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    flat_targets = targets.reshape(-1).long()
    bad = (flat_targets < 0) | (flat_targets >= valid)
    if bool(bad.any()):  # one reduction, one host sync
        raise ValueError(f"target id {flat_targets[bad][0].item()} outside [0, {valid})")
    width = min(max(valid - vocab_start, 0), shard)
    chunk = chunk_size or max(1, _DEFAULT_CHUNK_ELEMENTS // shard)
    flat_logits = logits.reshape(-1, shard)
    logp, entropy = _TokenStats.apply(
        flat_logits, flat_targets, (vocab_start, width, chunk), group, with_entropy_grad
    )
    return logp.reshape(targets.shape), entropy.reshape(targets.shape)


def token_logprobs_and_entropy(
    logits: Tensor,
    targets: Tensor,
    *,
    with_entropy_grad: bool = False,
    valid_vocab_size: int | None = None,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Log-probability of each target and entropy of each token's distribution, fused.

    Args:
        logits: ``[..., V]`` logits, any float dtype (not copied to fp32 as a whole).
        targets: ``[...]`` integer target ids in ``[0, valid_vocab_size)``.
        with_entropy_grad: If False (default) the entropy is returned detached.
        valid_vocab_size: Columns ``>= valid_vocab_size`` are padding and are excluded from
            the softmax (their gradient is 0). Defaults to ``V``.
        chunk_size: Rows per chunk; default such that a chunk holds ~16M logits.

    Returns:
        ``(logprobs, entropy)``, each of shape ``[...]``, float32 (float64 for float64 logits).

    Raises:
        ValueError: On a target outside ``[0, valid_vocab_size)`` or mismatched shapes.
    """
    return _apply(logits, targets, 0, None, with_entropy_grad, valid_vocab_size, chunk_size)


def vocab_parallel_token_logprobs_and_entropy(
    logits_shard: Tensor,
    targets: Tensor,
    *,
    vocab_start: int,
    group: dist.ProcessGroup,
    with_entropy_grad: bool = False,
    valid_vocab_size: int | None = None,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """``token_logprobs_and_entropy`` with the vocabulary sharded over a process group.

    Every rank of ``group`` calls this with its own equally wide shard and the same
    ``targets``, ``valid_vocab_size`` and ``chunk_size``; all ranks get the same values, and
    each gets its shard's slice of the gradient. Forward does two all-reduces (MAX on
    ``[T]``, SUM on ``[3, T]``); backward does no communication.

    Args:
        logits_shard: ``[..., V_shard]`` logits of global ids ``[vocab_start, +V_shard)``.
        targets: ``[...]`` global target ids in ``[0, valid_vocab_size)``.
        vocab_start: Global id of this shard's first column.
        group: Tensor-parallel process group the vocabulary is split over.
        with_entropy_grad: If False (default) the entropy is returned detached.
        valid_vocab_size: Global ids ``>= valid_vocab_size`` are padding (masked out of the
            softmax, zero gradient). Defaults to ``V_shard * group size``.
        chunk_size: Rows per chunk; default such that a chunk holds ~16M logits.

    Returns:
        ``(logprobs, entropy)``, each ``[...]``, float32 (float64 for float64 logits).
    """
    if group is None:  # a None group would silently mean the default (world) group
        raise ValueError("group is required; use token_logprobs_and_entropy without one")
    return _apply(
        logits_shard, targets, vocab_start, group, with_entropy_grad, valid_vocab_size, chunk_size
    )


def naive_token_logprobs_and_entropy(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Unfused reference: ``log_softmax`` + gather, and ``-sum(softmax * log_softmax)``.

    Args:
        logits: ``[..., V]`` logits (computed in float32, float64 stays float64).
        targets: ``[...]`` integer target ids.

    Returns:
        ``(logprobs, entropy)``, each ``[...]``, both differentiable.
    """
    z = logits.to(_compute_dtype(logits.dtype))
    logq = torch.log_softmax(z, dim=-1)
    logp = logq.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    entropy = -(torch.softmax(z, dim=-1) * logq).sum(dim=-1)
    return logp, entropy
