"""Qwen2 / Qwen2.5 (and DeepSeek-R1-Distill-Qwen): QKV bias, no q/k norm, plain rope."""

from __future__ import annotations

from nemo_red.models.families.base import DecoderFamily
from nemo_red.models.families.registry import register_family


@register_family
class Qwen2Family(DecoderFamily):
    name = "qwen2"
    model_types = ("qwen2",)
    architecture = "Qwen2ForCausalLM"
    qkv_bias = True

    def hf_config_extras(self) -> dict[str, object]:
        return {"use_sliding_window": False}
