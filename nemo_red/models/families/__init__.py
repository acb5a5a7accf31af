"""Model families behind one seam: Qwen2 / Qwen2.5, Qwen3 and Llama 3.x on megatron-core.

A family (:class:`DecoderFamily`) gives its shape from a HF ``config.json``, its megatron
``TransformerConfig``, layer spec and ``GPTModel`` arguments, and its HF <-> megatron tensor
map. A :class:`ModelShape` names its family, so the actor, the rollout engines, the
conversion and the FLOPs count work from the shape alone. See ``registry.py`` for adding a
family.
"""

from nemo_red.models.families.base import DecoderFamily, Split, TensorMap, TensorRule
from nemo_red.models.families.hf_config import HFConfig
from nemo_red.models.families.registry import (
    family_for_hf_config,
    family_names,
    get_family,
    register_family,
    shape_from_hf_config,
)
from nemo_red.models.families.shape import Llama3RopeScaling, ModelShape

__all__ = [
    "DecoderFamily",
    "HFConfig",
    "Llama3RopeScaling",
    "ModelShape",
    "Split",
    "TensorMap",
    "TensorRule",
    "family_for_hf_config",
    "family_names",
    "get_family",
    "register_family",
    "shape_from_hf_config",
]
