"""Qwen2 state dicts: Hugging Face layout <-> megatron-core layout, with TP x PP sharding.

Layout facts (each is caught by the HF parity test if broken):

* QKV is fused per query group: for each of the G KV groups, ``[its q heads, k, v]``
  (weights and biases). A plain ``[q; k; v]`` concatenation gives wrong logits.
* ``linear_fc1 = cat([gate, up])``; under TP, gate and up are split separately and each
  rank holds ``cat([gate_r, up_r])``.
* QKV, fc1, the embedding and the output layer split on dim 0; ``linear_proj`` and
  ``linear_fc2`` on dim 1; norms are replicated.
* Pipeline stages hold consecutive layers, renumbered from 0; the embedding lives on the
  first stage, the final norm and the output layer on the last. With tied embeddings and
  more than one stage, the last stage keeps a copy of the embedding as its output layer.
* The vocabulary is padded with zero rows to a multiple of the TP size.

Everything here is pure tensor code on state dicts; reading and writing files is in
``checkpoint_io.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from nemo_red.models.qwen2 import Qwen2Shape, padded_vocab_size

Tensor = torch.Tensor


def _take(hf: Mapping[str, Tensor], key: str, shape: tuple[int, ...]) -> Tensor:
    """``hf[key]``, checked to exist and to have ``shape``."""
    if key not in hf:
        raise KeyError(f"HF checkpoint is missing tensor {key!r}")
    if tuple(hf[key].shape) != shape:
        raise ValueError(f"tensor {key!r} has shape {tuple(hf[key].shape)}, expected {shape}")
    return hf[key]


def fuse_qkv(q: Tensor, k: Tensor, v: Tensor, shape: Qwen2Shape) -> Tensor:
    """``[q; k; v]`` projections (weights ``[*, H]`` or biases) -> megatron's grouped layout."""
    groups, d = shape.num_kv_heads, shape.head_dim
    per_group = shape.num_heads // groups
    rest = q.shape[1:]
    q = q.reshape(groups, per_group * d, *rest)
    k = k.reshape(groups, d, *rest)
    v = v.reshape(groups, d, *rest)
    return torch.cat([q, k, v], dim=1).reshape(-1, *rest)


def split_qkv(qkv: Tensor, shape: Qwen2Shape) -> tuple[Tensor, Tensor, Tensor]:
    """Inverse of :func:`fuse_qkv` (for any number of whole groups)."""
    d = shape.head_dim
    per_group = shape.num_heads // shape.num_kv_heads
    rest = qkv.shape[1:]
    grouped = qkv.reshape(-1, (per_group + 2) * d, *rest)
    q, k, v = torch.split(grouped, [per_group * d, d, d], dim=1)
    return q.reshape(-1, *rest), k.reshape(-1, *rest), v.reshape(-1, *rest)


def _pad_rows(weight: Tensor, rows: int) -> Tensor:
    if weight.shape[0] == rows:
        return weight
    return torch.cat([weight, weight.new_zeros(rows - weight.shape[0], *weight.shape[1:])])


def stage_layers(shape: Qwen2Shape, pp_size: int, pp_rank: int) -> range:
    """Global indices of the layers of pipeline stage ``pp_rank``."""
    per_stage = shape.num_layers // pp_size
    return range(pp_rank * per_stage, (pp_rank + 1) * per_stage)


def hf_to_megatron(
    hf: Mapping[str, Tensor],
    shape: Qwen2Shape,
    tp_size: int = 1,
    tp_rank: int = 0,
    pp_size: int = 1,
    pp_rank: int = 0,
) -> dict[str, Tensor]:
    """The megatron state dict of one (TP rank, PP stage) from a HF Qwen2 state dict."""
    shape.check(tp_size, pp_size)
    h, ffn = shape.hidden_size, shape.intermediate_size
    vocab = padded_vocab_size(shape.vocab_size, tp_size)

    def shard(t: Tensor, dim: int) -> Tensor:
        return torch.chunk(t, tp_size, dim=dim)[tp_rank].clone()

    out: dict[str, Tensor] = {}
    embed = _take(hf, "model.embed_tokens.weight", (shape.vocab_size, h))
    if pp_rank == 0:
        out["embedding.word_embeddings.weight"] = shard(_pad_rows(embed, vocab), 0)
    sizes = [shape.num_heads * shape.head_dim] + [shape.num_kv_heads * shape.head_dim] * 2
    for local, layer in enumerate(stage_layers(shape, pp_size, pp_rank)):
        src, dst = f"model.layers.{layer}.", f"decoder.layers.{local}."
        for suffix, extra in (("weight", (h,)), ("bias", ())):
            q, k, v = (
                _take(hf, f"{src}self_attn.{n}_proj.{suffix}", (size, *extra))
                for n, size in zip("qkv", sizes, strict=True)
            )
            out[f"{dst}self_attention.linear_qkv.{suffix}"] = shard(fuse_qkv(q, k, v, shape), 0)
        proj = _take(hf, f"{src}self_attn.o_proj.weight", (h, h))
        out[dst + "self_attention.linear_proj.weight"] = shard(proj, 1)
        gate = _take(hf, f"{src}mlp.gate_proj.weight", (ffn, h))
        up = _take(hf, f"{src}mlp.up_proj.weight", (ffn, h))
        out[dst + "mlp.linear_fc1.weight"] = torch.cat([shard(gate, 0), shard(up, 0)])
        out[dst + "mlp.linear_fc2.weight"] = shard(
            _take(hf, f"{src}mlp.down_proj.weight", (h, ffn)), 1
        )
        norms = (
            ("input_layernorm", "input_layernorm"),
            ("post_attention_layernorm", "pre_mlp_layernorm"),
        )
        for hf_norm, mc_norm in norms:
            out[f"{dst}{mc_norm}.weight"] = _take(hf, f"{src}{hf_norm}.weight", (h,)).clone()
    if pp_rank == pp_size - 1:
        out["decoder.final_layernorm.weight"] = _take(hf, "model.norm.weight", (h,)).clone()
        if not shape.tie_word_embeddings:
            head = _take(hf, "lm_head.weight", (shape.vocab_size, h))
            out["output_layer.weight"] = shard(_pad_rows(head, vocab), 0)
        elif pp_size > 1:
            out["output_layer.weight"] = shard(_pad_rows(embed, vocab), 0)
    return out


def megatron_to_hf(
    shards: Sequence[Sequence[Mapping[str, Tensor]]], shape: Qwen2Shape
) -> dict[str, Tensor]:
    """The HF Qwen2 state dict from megatron shards indexed ``[pp_rank][tp_rank]``."""
    pp_size, tp_size = len(shards), len(shards[0])
    shape.check(tp_size, pp_size)
    out: dict[str, Tensor] = {}

    def cat(stage: int, key: str, dim: int) -> Tensor:
        try:
            return torch.cat([shards[stage][r][key] for r in range(tp_size)], dim=dim)
        except KeyError:
            raise KeyError(f"megatron shard (pp {stage}) is missing tensor {key!r}") from None

    embed = cat(0, "embedding.word_embeddings.weight", 0)[: shape.vocab_size]
    out["model.embed_tokens.weight"] = embed
    for stage in range(pp_size):
        for local, layer in enumerate(stage_layers(shape, pp_size, stage)):
            src, dst = f"decoder.layers.{local}.", f"model.layers.{layer}."
            for suffix in ("weight", "bias"):
                per_rank = [
                    split_qkv(shards[stage][r][f"{src}self_attention.linear_qkv.{suffix}"], shape)
                    for r in range(tp_size)
                ]
                for i, name in enumerate("qkv"):
                    out[f"{dst}self_attn.{name}_proj.{suffix}"] = torch.cat(
                        [p[i] for p in per_rank]
                    )
            out[f"{dst}self_attn.o_proj.weight"] = cat(
                stage, src + "self_attention.linear_proj.weight", 1
            )
            halves = [
                torch.chunk(shards[stage][r][src + "mlp.linear_fc1.weight"], 2)
                for r in range(tp_size)
            ]
            out[f"{dst}mlp.gate_proj.weight"] = torch.cat([g for g, _ in halves])
            out[f"{dst}mlp.up_proj.weight"] = torch.cat([u for _, u in halves])
            out[f"{dst}mlp.down_proj.weight"] = cat(stage, src + "mlp.linear_fc2.weight", 1)
            out[f"{dst}input_layernorm.weight"] = shards[stage][0][src + "input_layernorm.weight"]
            out[f"{dst}post_attention_layernorm.weight"] = shards[stage][0][
                src + "pre_mlp_layernorm.weight"
            ]
    out["model.norm.weight"] = shards[-1][0]["decoder.final_layernorm.weight"]
    if shape.tie_word_embeddings:
        out["lm_head.weight"] = embed
    else:
        out["lm_head.weight"] = cat(pp_size - 1, "output_layer.weight", 0)[: shape.vocab_size]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}
