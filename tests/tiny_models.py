"""Random tiny Qwen2 models for tests (built from a config offline, no hub)."""

from __future__ import annotations

from typing import Any

import torch


def random_qwen2(
    *,
    vocab: int = 61,
    hidden: int = 32,
    layers: int = 4,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 48,
    max_positions: int = 64,
    tied: bool = False,
    noise: float = 0.0,
    seed: int = 0,
    **config_extra: Any,
) -> Any:
    """A ``Qwen2ForCausalLM`` initialised from ``seed``, plus ``noise`` * N(0, 1) on every weight
    (larger weights than the default init make logits, and so layout bugs, visible)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        max_position_embeddings=max_positions,
        tie_word_embeddings=tied,
        **config_extra,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    if noise:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(noise * torch.randn_like(p))
    return model
