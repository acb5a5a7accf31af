"""megatron's local-spec core attention, computed by torch's ``scaled_dot_product_attention``.

megatron-core's ``DotProductAttention`` (the local spec's core attention, used wherever
Transformer Engine is absent) materialises the ``[b, heads, s, s]`` scores, softmax and
probabilities in separate kernels. :class:`SDPADotProductAttention` keeps its constructor and
its ``forward`` contract (``[s, b, heads, head_dim]`` in, ``[s, b, heads * head_dim]`` out,
``attention_mask`` True = masked) and hands the work to ``F.scaled_dot_product_attention``:
a block-diagonal causal mask (the actor's packed micro-batches; a plain causal mask is one
block) is cut into its sequences, each attended with ``is_causal=True`` (the flash kernel on
a GPU), so a packed row costs the sum of its sequences' squared lengths rather than the
row's; runs of one-token segments (the packing's padding) attend only to themselves, so
their outputs are their values. Any other mask (the samplers' decoding steps) goes to SDPA
as a boolean mask. Grouped-query heads are repeated as megatron does.

Semantics that differ from megatron's, and why they do not matter here: a query row whose
every key is masked gets megatron's uniform attention over all keys there and plain
(unmasked) attention here, instead of SDPA's NaN; such rows are padding whose outputs no
loss reads. Softmax offsets, attention bias, dropout during training, query-key layer
scaling, sliding windows and packed-sequence params fall back to megatron's own code.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType
from torch.nn import functional


class SDPADotProductAttention(DotProductAttention):
    """``DotProductAttention`` whose forward runs ``F.scaled_dot_product_attention``."""

    def forward(  # type: ignore[override]
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attn_mask_type: Any = None,
        attention_bias: torch.Tensor | None = None,
        packed_seq_params: Any = None,
    ) -> torch.Tensor:
        """``[sq, b, np, hn]`` queries, ``[sk, b, ng, hn]`` keys/values -> ``[sq, b, np*hn]``."""
        dropout = self.attention_dropout.p if self.training else 0.0
        if (
            packed_seq_params is not None
            or attention_bias is not None
            or getattr(self, "softmax_offset", None) is not None
            or dropout > 0
            or self.config.apply_query_key_layer_scaling
            or getattr(self.config, "window_size", None) is not None
        ):
            return super().forward(
                query, key, value, attention_mask, attn_mask_type, attention_bias, packed_seq_params
            )
        groups = self.num_attention_heads_per_partition // self.num_query_groups_per_partition
        if groups > 1:
            key = key.repeat_interleave(groups, dim=2)
            value = value.repeat_interleave(groups, dim=2)
        sq, b = query.shape[0], query.shape[1]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, np, s, hn]
        segments = _causal_segments(attention_mask, sq, k.shape[2])
        if attention_mask is None and self.attn_mask_type == AttnMaskType.causal and sq > 1:
            segments = [Segment(0, sq, False)]  # megatron builds a causal mask for this
        if segments is not None:
            context = torch.cat([self._causal(q, k, v, segment) for segment in segments], dim=2)
        else:
            context = functional.scaled_dot_product_attention(
                q, k, v, attn_mask=_may_attend(attention_mask), scale=self.softmax_scale
            )
        return context.permute(2, 0, 1, 3).reshape(sq, b, -1)

    def _causal(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segment: Segment
    ) -> torch.Tensor:
        """Causal attention within one segment ``[b, np, end - start, hn]``."""
        start, end = segment.start, segment.end
        if segment.self_only:
            return v[:, :, start:end]  # softmax over a single key is 1
        return functional.scaled_dot_product_attention(
            q[:, :, start:end],
            k[:, :, start:end],
            v[:, :, start:end],
            is_causal=True,
            scale=self.softmax_scale,
        )


class Segment(NamedTuple):
    """Tokens ``start:end`` of a row: one causal sequence, or (``self_only``) a run of
    one-token segments that each attend only to themselves."""

    start: int
    end: int
    self_only: bool


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
    starts = (first == index).nonzero().flatten().tolist()
    segments: list[Segment] = []
    for start, end in zip(starts, [*starts[1:], sq], strict=True):
        if end - start > 1:
            segments.append(Segment(start, end, False))
        elif segments and segments[-1].self_only:
            segments[-1] = segments[-1]._replace(end=end)
        else:
            segments.append(Segment(start, end, True))
    return segments


def _may_attend(mask: torch.Tensor | None) -> torch.Tensor | None:
    """SDPA's boolean "may attend" mask from megatron's, fully masked rows opened."""
    if mask is None:
        return None
    allowed = ~mask
    return allowed | ~allowed.any(dim=-1, keepdim=True)
