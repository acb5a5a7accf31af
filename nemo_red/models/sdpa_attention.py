"""megatron's local-spec core attention, computed by torch's ``scaled_dot_product_attention``.

megatron-core's ``DotProductAttention`` (the local spec's core attention, used wherever
Transformer Engine is absent) materialises the ``[b, heads, s, s]`` scores, softmax and
probabilities in separate kernels. :class:`SDPADotProductAttention` keeps its constructor and
its ``forward`` contract (``[s, b, heads, head_dim]`` in, ``[s, b, heads * head_dim]`` out,
``attention_mask`` True = masked) and hands the work to ``F.scaled_dot_product_attention``.

Packed rows (the actor's micro-batches) attend block-diagonally causally: each sequence only
to itself. The row's sequence boundaries reach the attention in one of two ways:

* megatron's ``PackedSeqParams`` in the ``thd`` layout, built by :func:`packed_row_params`
  from the row's ``cu_seqlens`` (kept on the host, so reading them costs no device sync).
  This is how the actor runs: it builds no ``[s, s]`` mask at all, and megatron restarts the
  rotary positions at 0 for each sequence, so a packed sequence is computed as if alone;
* a block-diagonal causal mask, whose blocks are found by comparing it with its own first
  visible key per row (a plain causal mask is one block).

Either way each sequence is attended with ``is_causal=True`` (the flash kernel on a GPU), so
a packed row costs the sum of its sequences' squared lengths rather than the row's; runs of
one-token segments (the packing's padding) attend only to themselves, so their outputs are
their values. Any other mask (the samplers' decoding steps) goes to SDPA as a boolean mask.
Grouped-query heads are repeated as megatron does when autograd records the call (and on
CUDA), and read in place by SDPA (``enable_gqa``, the same outputs) on CPU when it does not:
sampling and log-probs.

Semantics that differ from megatron's, and why they do not matter here: a query row whose
every key is masked gets megatron's uniform attention over all keys there and plain
(unmasked) attention here, instead of SDPA's NaN; such rows are padding whose outputs no
loss reads. Softmax offsets, attention bias, dropout during training, query-key layer
scaling and sliding windows fall back to megatron's own code (with the packed row's mask
built from its boundaries).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType
from torch.nn import functional


class SDPADotProductAttention(DotProductAttention):
    """``DotProductAttention`` whose forward runs ``F.scaled_dot_product_attention``."""

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attn_mask_type: Any = None,
        attention_bias: torch.Tensor | None = None,
        packed_seq_params: PackedSeqParams | None = None,
    ) -> torch.Tensor:
        """``[sq, b, np, hn]`` queries, ``[sk, b, ng, hn]`` keys/values -> ``[sq, b, np*hn]``.

        With ``packed_seq_params`` from :func:`packed_row_params` (a packed row, ``thd``):
        ``[t, np, hn]`` queries and ``[t, ng, hn]`` keys/values -> ``[t, 1, np*hn]``;
        ``attention_mask`` is then not read.
        """
        segments = None
        if packed_seq_params is not None and packed_seq_params.qkv_format == "thd":
            segments = _packed_row_segments(packed_seq_params, query.shape[0], key.shape[0])
            query, key, value = (t.unsqueeze(1) for t in (query, key, value))
            attention_mask, packed_seq_params = None, None
        sq, b = query.shape[0], query.shape[1]
        dropout = self.attention_dropout.p if self.training else 0.0
        if (
            packed_seq_params is not None
            or attention_bias is not None
            or getattr(self, "softmax_offset", None) is not None
            or dropout > 0
            or self.config.apply_query_key_layer_scaling
            or getattr(self.config, "window_size", None) is not None
        ):
            if segments is not None:
                attention_mask = segments_mask(segments, sq, query.device)
            return super().forward(
                query, key, value, attention_mask, attn_mask_type, attention_bias, packed_seq_params
            )
        groups = self.num_attention_heads_per_partition // self.num_query_groups_per_partition
        # Without autograd, on CPU, SDPA reads the grouped heads itself (``enable_gqa``): the
        # same outputs, bit for bit, without copying keys and values per query head (a whole
        # KV cache per decoding step). Its backward sums the grouped heads' gradients in
        # another order, so training keeps megatron's repeat; on CUDA the masked (memory-
        # efficient) kernel has no GQA and would fall back to the math kernel.
        gqa = groups > 1 and not torch.is_grad_enabled() and query.device.type == "cpu"
        if groups > 1 and not gqa:
            key = key.repeat_interleave(groups, dim=2)
            value = value.repeat_interleave(groups, dim=2)
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, np, s, hn]
        if segments is None:
            segments = _causal_segments(attention_mask, sq, k.shape[2])
        causal_type = self.attn_mask_type == AttnMaskType.causal
        if segments is None and attention_mask is None and causal_type and sq > 1:
            segments = [Segment(0, sq, False)]  # megatron builds a causal mask for this
        if segments is not None:
            context = torch.cat(
                [self._causal(q, k, v, segment, gqa) for segment in segments], dim=2
            )
        else:
            context = functional.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=_may_attend(attention_mask),
                scale=self.softmax_scale,
                enable_gqa=gqa,
            )
        return context.permute(2, 0, 1, 3).reshape(sq, b, -1)

    def _causal(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segment: Segment, gqa: bool
    ) -> torch.Tensor:
        """Causal attention within one segment ``[b, np, end - start, hn]`` (``gqa``: ``k``
        and ``v`` have the grouped heads)."""
        start, end = segment.start, segment.end
        if segment.self_only:  # softmax over a single key is 1
            values = v[:, :, start:end]
            return values.repeat_interleave(q.shape[1] // v.shape[1], dim=1) if gqa else values
        return functional.scaled_dot_product_attention(
            q[:, :, start:end],
            k[:, :, start:end],
            v[:, :, start:end],
            is_causal=True,
            scale=self.softmax_scale,
            enable_gqa=gqa,
        )


class Segment(NamedTuple):
    """Tokens ``start:end`` of a row: one causal sequence, or (``self_only``) a run of
    one-token segments that each attend only to themselves."""

    start: int
    end: int
    self_only: bool


def packed_row_params(cu_seqlens: torch.Tensor, row_length: int) -> PackedSeqParams:
    """megatron's ``PackedSeqParams`` (``thd``) for one packed row of ``row_length`` tokens.

    Args:
        cu_seqlens: ``[n + 1]`` int32 on the host: 0, then the end of each of the row's n
            sequences. Tokens past ``cu_seqlens[-1]`` are padding; each attends to itself.
        row_length: S, the row's length with its padding.

    ``cu_seqlens_*`` are the sequences; ``cu_seqlens_*_padded`` add the padding as one more
    stretch so that they cover the row: megatron applies the rotary embedding per stretch of
    those, positions restarting at 0 (as for an unpacked sequence), and sizes its rotary
    table by ``max_seqlen_*``, the longest stretch. The attention reads the sequences.
    Everything stays on the host, so reading the boundaries costs no device sync.
    """
    if cu_seqlens.dim() != 1 or len(cu_seqlens) < 1 or int(cu_seqlens[0]) != 0:
        raise ValueError(f"cu_seqlens must be 1-D and start at 0, got {cu_seqlens.tolist()}")
    if bool((cu_seqlens[1:] <= cu_seqlens[:-1]).any()) or int(cu_seqlens[-1]) > row_length:
        raise ValueError(
            f"cu_seqlens must increase and end within the row of {row_length}, "
            f"got {cu_seqlens.tolist()}"
        )
    cu_seqlens = cu_seqlens.to(device="cpu", dtype=torch.int32)
    padded = cu_seqlens
    if int(cu_seqlens[-1]) < row_length:
        padded = torch.cat([cu_seqlens, torch.tensor([row_length], dtype=torch.int32)])
    longest = int((padded[1:] - padded[:-1]).max())
    return PackedSeqParams(
        qkv_format="thd",
        cu_seqlens_q=cu_seqlens,
        cu_seqlens_kv=cu_seqlens,
        cu_seqlens_q_padded=padded,
        cu_seqlens_kv_padded=padded,
        max_seqlen_q=longest,
        max_seqlen_kv=longest,
    )


def segments_mask(segments: list[Segment], length: int, device: Any = None) -> torch.Tensor:
    """megatron's ``[1, 1, s, s]`` mask (True = masked) of a row cut into ``segments``."""
    block = torch.empty(length, dtype=torch.long)
    for number, segment in enumerate(segments):
        if segment.self_only:  # every token its own segment: numbers no sequence uses
            block[segment.start : segment.end] = -1 - torch.arange(segment.start, segment.end)
        else:
            block[segment.start : segment.end] = number
    block = block.to(device)
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    return ~((block[:, None] == block[None, :]) & causal)[None, None]


def _packed_row_segments(params: PackedSeqParams, sq: int, sk: int) -> list[Segment]:
    """The segments of a packed row from :func:`packed_row_params`."""
    cu_q, cu_kv = params.cu_seqlens_q, params.cu_seqlens_kv
    if sq != sk or cu_q is None or (cu_kv is not None and not torch.equal(cu_q, cu_kv)):
        raise ValueError(
            "thd PackedSeqParams here describe one packed row of self-attention: equal "
            f"query and key boundaries (got {sq} queries, {sk} keys)"
        )
    bounds = cu_q.tolist()
    if bounds[-1] > sq:
        raise ValueError(f"cu_seqlens end at {bounds[-1]}, past the row of {sq} tokens")
    padded = params.cu_seqlens_q_padded
    if padded is not None and padded.tolist() not in (bounds, [*bounds, sq]):
        raise ValueError(
            "padding between packed sequences is not supported: cu_seqlens_q_padded "
            f"{padded.tolist()} must be cu_seqlens_q {bounds}, optionally followed by {sq}"
        )
    segments = _segments(bounds[:-1], bounds[-1]) if len(bounds) > 1 else []
    if bounds[-1] < sq:  # the padding: one run, not a start per token (this runs per layer)
        _append(segments, Segment(bounds[-1], sq, True))
    return segments


def _segments(starts: list[int], length: int) -> list[Segment]:
    """Segments starting at ``starts`` (increasing, first 0), consecutive one-token
    segments merged into one ``self_only`` run."""
    segments: list[Segment] = []
    for start, end in zip(starts, [*starts[1:], length], strict=True):
        _append(segments, Segment(start, end, end - start == 1))
    return segments


def _append(segments: list[Segment], segment: Segment) -> None:
    """Appends ``segment``, merging it into a ``self_only`` run it continues."""
    if segment.self_only and segments and segments[-1].self_only:
        segments[-1] = segments[-1]._replace(end=segment.end)
    else:
        segments.append(segment)


def _causal_segments(mask: torch.Tensor | None, sq: int, sk: int) -> list[Segment] | None:
    """The segments of a block-diagonal causal mask (True = masked, ``[1, 1, s, s]``), in
    order, consecutive one-token segments merged; ``None`` when ``mask`` is not one."""
    if mask is None or sq != sk or mask.shape[0] != 1 or mask.shape[1] != 1:
        return None
    allowed = ~mask[0, 0]
    index = torch.arange(sq, device=mask.device)
    first = allowed.int().argmax(dim=-1)  # each row's first visible key: its segment's start
    block = (index[None, :] >= first[:, None]) & (index[None, :] <= index[:, None])
    previous = torch.cat([first[:1], first[:-1]])
    if not (torch.equal(allowed, block) and bool(((first == index) | (first == previous)).all())):
        return None
    return _segments((first == index).nonzero().flatten().tolist(), sq)


def _may_attend(mask: torch.Tensor | None) -> torch.Tensor | None:
    """SDPA's boolean "may attend" mask from megatron's, fully masked rows opened."""
    if mask is None:
        return None
    allowed = ~mask
    return allowed | ~allowed.any(dim=-1, keepdim=True)
