"""State dicts: Hugging Face layout <-> megatron-core layout, with TP x PP sharding.

The tensors of each family and how each is split come from the family's tensor map
(``DecoderFamily.tensor_map``, found from ``shape.family``); this module applies a map.
Layout facts (each is caught by the HF parity test if broken):

* QKV is fused per query group: for each of the G KV groups, ``[its q heads, k, v]``
  (weights and biases). A plain ``[q; k; v]`` concatenation gives wrong logits.
* ``linear_fc1 = cat([gate, up])``; under TP, gate and up are split separately and each
  rank holds ``cat([gate_r, up_r])``.
* QKV, fc1, the embedding and the output layer split on dim 0; ``linear_proj`` and
  ``linear_fc2`` on dim 1; norms (q/k norms included) are replicated.
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

from nemo_red.models.families import ModelShape, Split, TensorRule, get_family
from nemo_red.models.megatron_gpt import padded_vocab_size

Tensor = torch.Tensor


def _take(hf: Mapping[str, Tensor], key: str, shape: tuple[int, ...]) -> Tensor:
    """``hf[key]``, checked to exist and to have ``shape``."""
    if key not in hf:
        raise KeyError(f"HF checkpoint is missing tensor {key!r}")
    if tuple(hf[key].shape) != shape:
        raise ValueError(f"tensor {key!r} has shape {tuple(hf[key].shape)}, expected {shape}")
    return hf[key]


def fuse_qkv(q: Tensor, k: Tensor, v: Tensor, shape: ModelShape) -> Tensor:
    """``[q; k; v]`` projections (weights ``[*, H]`` or biases) -> megatron's grouped layout."""
    groups, d = shape.num_kv_heads, shape.head_dim
    per_group = shape.num_heads // groups
    rest = q.shape[1:]
    q = q.reshape(groups, per_group * d, *rest)
    k = k.reshape(groups, d, *rest)
    v = v.reshape(groups, d, *rest)
    return torch.cat([q, k, v], dim=1).reshape(-1, *rest)


def split_qkv(qkv: Tensor, shape: ModelShape) -> tuple[Tensor, Tensor, Tensor]:
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


def stage_layers(shape: ModelShape, pp_size: int, pp_rank: int) -> range:
    """Global indices of the layers of pipeline stage ``pp_rank``."""
    per_stage = shape.num_layers // pp_size
    return range(pp_rank * per_stage, (pp_rank + 1) * per_stage)


def _to_megatron(
    rule: TensorRule, tensors: list[Tensor], shape: ModelShape, tp_size: int, tp_rank: int
) -> Tensor:
    """This TP rank's megatron tensor of ``rule`` from its HF ``tensors``."""

    def shard(t: Tensor, dim: int) -> Tensor:
        return torch.chunk(t, tp_size, dim=dim)[tp_rank].clone()

    if rule.split is Split.QKV:
        q, k, v = tensors
        return shard(fuse_qkv(q, k, v, shape), 0)
    if rule.split is Split.GATE_UP:
        return torch.cat([shard(t, 0) for t in tensors])
    if rule.split is Split.COLUMN:
        return shard(tensors[0], 0)
    if rule.split is Split.ROW:
        return shard(tensors[0], 1)
    return tensors[0].clone()


def _to_hf(rule: TensorRule, per_rank: list[Tensor], shape: ModelShape) -> list[Tensor]:
    """The HF tensors of ``rule`` from its megatron tensor on every TP rank."""
    if rule.split is Split.QKV:
        parts = [split_qkv(t, shape) for t in per_rank]
        return [torch.cat([p[i] for p in parts]) for i in range(3)]
    if rule.split is Split.GATE_UP:
        halves = [torch.chunk(t, 2) for t in per_rank]
        return [torch.cat([h[i] for h in halves]) for i in range(2)]
    if rule.split is Split.COLUMN:
        return [torch.cat(per_rank, dim=0)]
    if rule.split is Split.ROW:
        return [torch.cat(per_rank, dim=1)]
    return [per_rank[0]]


def hf_to_megatron(
    hf: Mapping[str, Tensor],
    shape: ModelShape,
    tp_size: int = 1,
    tp_rank: int = 0,
    pp_size: int = 1,
    pp_rank: int = 0,
) -> dict[str, Tensor]:
    """The megatron state dict of one (TP rank, PP stage) from a HF state dict."""
    shape.check(tp_size, pp_size)
    tensor_map = get_family(shape.family).tensor_map(shape)
    h = shape.hidden_size
    vocab = padded_vocab_size(shape.vocab_size, tp_size)

    def vocab_shard(t: Tensor) -> Tensor:
        return torch.chunk(_pad_rows(t, vocab), tp_size)[tp_rank].clone()

    out: dict[str, Tensor] = {}
    embed = _take(hf, tensor_map.embedding, (shape.vocab_size, h))
    if pp_rank == 0:
        out["embedding.word_embeddings.weight"] = vocab_shard(embed)
    for local, layer in enumerate(stage_layers(shape, pp_size, pp_rank)):
        src, dst = tensor_map.hf_layer_prefix.format(layer), f"decoder.layers.{local}."
        for rule in tensor_map.layer:
            tensors = [
                _take(hf, src + name, size)
                for name, size in zip(rule.hf, rule.hf_shapes, strict=True)
            ]
            out[dst + rule.megatron] = _to_megatron(rule, tensors, shape, tp_size, tp_rank)
    if pp_rank == pp_size - 1:
        out["decoder.final_layernorm.weight"] = _take(hf, tensor_map.final_norm, (h,)).clone()
        if not shape.tie_word_embeddings:
            head = _take(hf, tensor_map.output_layer, (shape.vocab_size, h))
            out["output_layer.weight"] = vocab_shard(head)
        elif pp_size > 1:
            out["output_layer.weight"] = vocab_shard(embed)
    return out


def megatron_to_hf(
    shards: Sequence[Sequence[Mapping[str, Tensor]]], shape: ModelShape
) -> dict[str, Tensor]:
    """The HF state dict from megatron shards indexed ``[pp_rank][tp_rank]``."""
    pp_size, tp_size = len(shards), len(shards[0])
    shape.check(tp_size, pp_size)
    tensor_map = get_family(shape.family).tensor_map(shape)
    out: dict[str, Tensor] = {}

    def per_rank(stage: int, key: str) -> list[Tensor]:
        try:
            return [shards[stage][r][key] for r in range(tp_size)]
        except KeyError:
            raise KeyError(f"megatron shard (pp {stage}) is missing tensor {key!r}") from None

    embed = torch.cat(per_rank(0, "embedding.word_embeddings.weight"))[: shape.vocab_size]
    out[tensor_map.embedding] = embed
    for stage in range(pp_size):
        for local, layer in enumerate(stage_layers(shape, pp_size, stage)):
            src, dst = f"decoder.layers.{local}.", tensor_map.hf_layer_prefix.format(layer)
            for rule in tensor_map.layer:
                tensors = _to_hf(rule, per_rank(stage, src + rule.megatron), shape)
                out |= {dst + name: t for name, t in zip(rule.hf, tensors, strict=True)}
    out[tensor_map.final_norm] = per_rank(pp_size - 1, "decoder.final_layernorm.weight")[0]
    if shape.tie_word_embeddings:
        out[tensor_map.output_layer] = embed
    else:
        head = torch.cat(per_rank(pp_size - 1, "output_layer.weight"))
        out[tensor_map.output_layer] = head[: shape.vocab_size]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}
