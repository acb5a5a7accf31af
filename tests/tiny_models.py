"""Random tiny causal LMs of each model family for tests (built from a config offline, no hub)."""

from __future__ import annotations

from typing import Any

import torch

# Llama 3.1's rope scaling (also DeepSeek-R1-Distill-Llama's).
LLAMA3_ROPE_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def random_model(
    model_type: str,
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
    """A transformers causal LM of ``model_type`` (``qwen2``, ``qwen3``, ``llama``)
    initialised from ``seed``, plus ``noise`` * N(0, 1) on every weight (larger weights than
    the default init make logits, and so layout bugs, visible)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        model_type,
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        rms_norm_eps=1e-6,
        rope_theta=config_extra.pop("rope_theta", 10000.0),
        max_position_embeddings=max_positions,
        tie_word_embeddings=tied,
        **config_extra,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    if noise:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(noise * torch.randn_like(p))
    return model


def random_qwen2(**kwargs: Any) -> Any:
    """A random tiny ``Qwen2ForCausalLM`` (see :func:`random_model`)."""
    return random_model("qwen2", **kwargs)
