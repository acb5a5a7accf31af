"""megatron's local-spec core attention, computed by torch's ``scaled_dot_product_attention``.

megatron-core's ``DotProductAttention`` (the local spec's core attention, used wherever
Transformer Engine is absent) materialises the ``[b, heads, s, s]`` scores, softmax and
probabilities in separate kernels. :class:`SDPADotProductAttention` keeps its constructor and
its ``forward`` contract (``[s, b, heads, head_dim]`` in, ``[s, b, heads * head_dim]`` out,
``attention_mask`` True = masked) and hands the work to ``F.scaled_dot_product_attention``:
a plain causal mask goes as ``is_causal=True`` (the flash kernel on a GPU), any other mask
(packed micro-batches are block-diagonal causal) as a boolean mask (the memory-efficient
kernel on a GPU, fused math on CPU). Grouped-query heads are repeated as megatron does.

Semantics that differ from megatron's, and why they do not matter here: a query row whose
every key is masked gets megatron's uniform attention over all keys there and plain
(unmasked) attention here, instead of SDPA's NaN; such rows are padding whose outputs no
loss reads. Softmax offsets, attention bias, dropout during training, query-key layer
scaling, sliding windows and packed-sequence params fall back to megatron's own code.
"""

from __future__ import annotations

from typing import Any

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
        allowed, causal = _sdpa_mask(attention_mask, sq, k.shape[2])
        if attention_mask is None and self.attn_mask_type == AttnMaskType.causal and sq > 1:
            causal = True  # megatron builds the default causal mask in this case
        context = functional.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, is_causal=causal, scale=self.softmax_scale
        )
        return context.permute(2, 0, 1, 3).reshape(sq, b, -1)


def _sdpa_mask(mask: torch.Tensor | None, sq: int, sk: int) -> tuple[torch.Tensor | None, bool]:
    """megatron's mask (True = masked, ``[b or 1, 1, sq, sk]``) as SDPA's arguments.

    Returns ``(None, True)`` for a plain causal mask, ``(None, False)`` for none, else the
    boolean "may attend" mask with fully masked rows opened (see the module docstring).
    """
    if mask is None:
        return None, False
    if sq == sk and mask.shape[0] == 1:
        causal = torch.ones(sq, sk, dtype=torch.bool, device=mask.device).triu_(1)
        if torch.equal(mask[0, 0], causal):
            return None, True
    allowed = ~mask
    return allowed | ~allowed.any(dim=-1, keepdim=True), False
