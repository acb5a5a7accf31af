"""RMSNorm for sequence-parallel layers on hosts without apex or Transformer Engine.

megatron's local spec falls back to ``WrappedTorchNorm`` (``torch.nn.RMSNorm``) without apex,
and that wrapper refuses ``sequence_parallel`` (megatron/core/transformer/torch_norm.py).
Under sequence parallelism each tensor-parallel rank normalises its own slice of the
sequence, so the norm weights' gradients are partial sums that megatron's
``finalize_model_grads`` all-reduces over the tensor-parallel group, for every parameter
marked ``sequence_parallel`` (as apex's ``FusedLayerNorm`` and TE's norms mark theirs).
:class:`SequenceParallelRMSNorm` is ``torch.nn.RMSNorm`` with its weight so marked; its
state dict is ``WrappedTorchNorm``'s (one ``weight``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch


class SequenceParallelRMSNorm(torch.nn.RMSNorm):
    """``torch.nn.RMSNorm`` built from megatron's norm arguments, its weight marked with the
    config's ``sequence_parallel``."""

    def __init__(self, config: Any, hidden_size: int, eps: float = 1e-5, **unused: Any) -> None:
        if config.normalization != "RMSNorm":
            raise ValueError(f"SequenceParallelRMSNorm is an RMSNorm, not {config.normalization}")
        super().__init__(hidden_size, eps=eps)
        self.weight.sequence_parallel = config.sequence_parallel  # type: ignore[attr-defined]


def sequence_parallel_spec(layer_spec: Any, config: Any, vp_stage: int | None = None) -> Any:
    """The spec to build a ``GPTModel``'s decoder from: ``layer_spec`` itself without
    sequence parallelism; with it, a block whose torch-fallback norms (the layers', their
    per-head q/k norms and the final one) are :class:`SequenceParallelRMSNorm` (q/k norms
    see the whole sequence; their gradients are summed over TP once either way, as
    ``qk_layernorm`` parameters)."""
    from megatron.core.transformer import transformer_block
    from megatron.core.transformer.torch_norm import WrappedTorchNorm

    if not config.sequence_parallel:
        return layer_spec

    def norm(module: Any) -> Any:
        return SequenceParallelRMSNorm if module is WrappedTorchNorm else module

    layer = layer_spec.submodules
    attention = layer.self_attention
    if hasattr(attention.submodules, "q_layernorm"):  # per-head q/k norms (Qwen3)
        attention = dataclasses.replace(
            attention,
            submodules=dataclasses.replace(
                attention.submodules,
                q_layernorm=norm(attention.submodules.q_layernorm),
                k_layernorm=norm(attention.submodules.k_layernorm),
            ),
        )
    layer = dataclasses.replace(
        layer_spec,
        submodules=dataclasses.replace(
            layer,
            self_attention=attention,
            input_layernorm=norm(layer.input_layernorm),
            pre_mlp_layernorm=norm(layer.pre_mlp_layernorm),
        ),
    )
    layers = transformer_block.get_num_layers_to_build(config, vp_stage=vp_stage)
    return transformer_block.TransformerBlockSubmodules(
        layer_specs=[layer] * layers, layer_norm=norm(transformer_block.LayerNormImpl)
    )
