"""The architecture numbers of a dense decoder checkpoint, whatever its family.

A :class:`ModelShape` names its family (``shape.family``, a name in the family registry),
so code that holds a shape (the actor, the engines, the conversion, the FLOPs count) can
ask the family for everything architecture-specific without knowing which one it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Llama3RopeScaling:
    """Llama 3.x's ``rope_scaling`` (``rope_type: llama3``): low frequencies divided by
    ``factor``, high ones kept, a smooth ramp between the two wavelength bounds."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int

    def to_hf(self) -> dict[str, Any]:
        """The ``rope_scaling`` entry of a HF ``config.json``."""
        return {
            "rope_type": "llama3",
            "factor": self.factor,
            "low_freq_factor": self.low_freq_factor,
            "high_freq_factor": self.high_freq_factor,
            "original_max_position_embeddings": self.original_max_position_embeddings,
        }


@dataclass(frozen=True)
class ModelShape:
    """What the model code needs of a HF ``config.json``.

    Attributes:
        family: the registered family (``nemo_red.models.families``), e.g. ``qwen2``.
        head_dim: per-head width; ``hidden_size / num_heads`` unless the config says
            otherwise (Qwen3-0.6B: 1024 / 16 heads, head_dim 128).
        rope_scaling: Llama 3.x's rope scaling, or None for plain rotary embeddings.
    """

    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    rope_scaling: Llama3RopeScaling | None = None

    def __post_init__(self) -> None:
        sizes = {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
        }
        small = {k: v for k, v in sizes.items() if v < 1}
        if small:
            raise ValueError(f"model shape: sizes must be >= 1, got {small}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model shape: {self.num_heads} heads not divisible by {self.num_kv_heads} KV heads"
            )
        if self.rms_norm_eps <= 0 or self.rope_theta <= 0:
            raise ValueError(
                f"model shape: rms_norm_eps ({self.rms_norm_eps}) and rope_theta "
                f"({self.rope_theta}) must be > 0"
            )

    @property
    def q_size(self) -> int:
        """Width of all query heads (the attention output's input width)."""
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        """Width of the keys (or of the values) of all KV heads."""
        return self.num_kv_heads * self.head_dim

    @classmethod
    def from_hf_config(cls, config: Any) -> ModelShape:
        """The shape of a HF config (dict, ``config.json`` path or model directory), read by
        its family; unsupported architectures and features fail naming the config field."""
        from nemo_red.models.families.registry import shape_from_hf_config

        return shape_from_hf_config(config)

    def to_hf_config(self) -> dict[str, Any]:
        """A ``config.json`` dict that ``transformers`` loads as this family's model."""
        from nemo_red.models.families.registry import get_family

        return get_family(self.family).to_hf_config(self)

    def check(self, tp_size: int = 1, pp_size: int = 1) -> None:
        """Raises ValueError when the shape cannot be split over ``tp_size`` x ``pp_size``."""
        if self.num_kv_heads % tp_size or self.num_heads % tp_size:
            raise ValueError(
                f"tensor-parallel size {tp_size} must divide the {self.num_heads} query heads "
                f"and the {self.num_kv_heads} KV heads"
            )
        if self.intermediate_size % tp_size:
            raise ValueError(f"tensor-parallel size {tp_size} must divide intermediate_size")
        if self.num_layers % pp_size:
            raise ValueError(f"pipeline size {pp_size} must divide the {self.num_layers} layers")
