"""Qwen3 (dense): per-head q/k RMSNorm, no QKV bias, ``head_dim`` from the config."""

from __future__ import annotations

from nemo_red.models.families.base import DecoderFamily
from nemo_red.models.families.registry import register_family


@register_family
class Qwen3Family(DecoderFamily):
    name = "qwen3"
    model_types = ("qwen3",)
    architecture = "Qwen3ForCausalLM"
    qk_norm = True
    refused_fields = (("attention_bias", "attention biases"),)

    def hf_config_extras(self) -> dict[str, object]:
        return {"use_sliding_window": False, "attention_bias": False}
