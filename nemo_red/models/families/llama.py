"""Llama 3.x (and DeepSeek-R1-Distill-Llama): no biases, rope scaling ``llama3``."""

from __future__ import annotations

from nemo_red.models.families.base import DecoderFamily
from nemo_red.models.families.registry import register_family


@register_family
class LlamaFamily(DecoderFamily):
    name = "llama"
    model_types = ("llama",)
    architecture = "LlamaForCausalLM"
    rope_types = ("llama3",)
    refused_fields = (
        ("attention_bias", "attention biases"),
        ("mlp_bias", "MLP biases"),
    )
    default_max_positions = 2048

    def hf_config_extras(self) -> dict[str, object]:
        return {"attention_bias": False, "mlp_bias": False}
