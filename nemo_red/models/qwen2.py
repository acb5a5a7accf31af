"""Qwen2 / Qwen2.5 architecture: the HF config, and a megatron-core GPTModel built from it.

The megatron model uses the local layer spec with SDPA core attention on every host (no
Transformer Engine layers, see ``_layer_spec``); dropout is off; RMSNorm epsilon, rope
theta, GQA groups, QKV bias and tied embeddings come from the HF ``config.json``. The
vocabulary is padded to a multiple of the tensor-parallel size; the padded logits are
excluded from every softmax by the token statistics (``valid_vocab_size``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from nemo_red.training.config import ParallelConfig

SUPPORTED_ARCHITECTURES = ("Qwen2ForCausalLM",)


@dataclass(frozen=True)
class Qwen2Shape:
    """The architecture numbers of a Qwen2 / Qwen2.5 checkpoint (from its ``config.json``)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_hf_config(cls, config: dict[str, Any] | str | Path) -> Qwen2Shape:
        """Reads a HF config dict or ``config.json`` path; unsupported models fail clearly."""
        if isinstance(config, dict):
            source, values = "config", config
        else:
            source = str(config)
            path = Path(config)
            values = json.loads((path / "config.json" if path.is_dir() else path).read_text())
        architectures = values.get("architectures") or [values.get("model_type", "?")]
        if architectures[0] not in SUPPORTED_ARCHITECTURES and values.get("model_type") != "qwen2":
            raise ValueError(
                f"{source}: unsupported architecture {architectures[0]!r}; "
                f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        required = (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
        )
        missing = [k for k in required if k not in values]
        if missing:
            raise ValueError(f"{source}: missing fields {missing}")
        if values.get("rope_scaling"):
            raise ValueError(f"{source}: rope_scaling {values['rope_scaling']} is not supported")
        shape = cls(
            vocab_size=int(values["vocab_size"]),
            hidden_size=int(values["hidden_size"]),
            intermediate_size=int(values["intermediate_size"]),
            num_layers=int(values["num_hidden_layers"]),
            num_heads=int(values["num_attention_heads"]),
            num_kv_heads=int(values.get("num_key_value_heads") or values["num_attention_heads"]),
            rms_norm_eps=float(values.get("rms_norm_eps", 1e-6)),
            rope_theta=float(values.get("rope_theta", 10000.0)),
            max_position_embeddings=int(values.get("max_position_embeddings", 32768)),
            tie_word_embeddings=bool(values.get("tie_word_embeddings", False)),
        )
        shape.check()
        return shape

    def check(self, tp_size: int = 1, pp_size: int = 1) -> None:
        """Raises ValueError when the shape cannot be split over ``tp_size`` x ``pp_size``."""
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"{self.num_heads} heads not divisible by {self.num_kv_heads} KV heads"
            )
        if self.num_kv_heads % tp_size or self.num_heads % tp_size:
            raise ValueError(
                f"tensor-parallel size {tp_size} must divide the {self.num_heads} query heads "
                f"and the {self.num_kv_heads} KV heads"
            )
        if self.intermediate_size % tp_size:
            raise ValueError(f"tensor-parallel size {tp_size} must divide intermediate_size")
        if self.num_layers % pp_size:
            raise ValueError(f"pipeline size {pp_size} must divide the {self.num_layers} layers")

    def to_hf_config(self) -> dict[str, Any]:
        """A ``config.json`` dict that ``transformers`` loads as ``Qwen2ForCausalLM``."""
        return {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "torch_dtype": "float32",
        }


def padded_vocab_size(vocab_size: int, tp_size: int) -> int:
    """The vocabulary rounded up to a multiple of the tensor-parallel size."""
    return -(-vocab_size // tp_size) * tp_size


def transformer_config(
    shape: Qwen2Shape,
    tp_size: int = 1,
    pp_size: int = 1,
    dtype: torch.dtype = torch.float32,
    parallel: ParallelConfig | None = None,
) -> Any:
    """The megatron ``TransformerConfig`` of ``shape`` (dropout off, HF numerics), with the
    memory-saving features of ``parallel`` (sequence parallelism, recomputation, virtual
    pipeline; none when ``None``)."""
    from megatron.core.transformer.transformer_config import TransformerConfig

    from nemo_red.training.parallel import transformer_config_kwargs

    shape.check(tp_size, pp_size * (parallel.model_chunks if parallel else 1))
    return TransformerConfig(
        num_layers=shape.num_layers,
        hidden_size=shape.hidden_size,
        ffn_hidden_size=shape.intermediate_size,
        num_attention_heads=shape.num_heads,
        num_query_groups=shape.num_kv_heads,
        kv_channels=shape.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=shape.rms_norm_eps,
        gated_linear_unit=True,
        activation_func=torch.nn.functional.silu,
        add_bias_linear=False,
        add_qkv_bias=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tensor_model_parallel_size=tp_size,
        pipeline_model_parallel_size=pp_size,
        params_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        pipeline_dtype=dtype,
        use_cpu_initialization=not torch.cuda.is_available(),
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        **transformer_config_kwargs(parallel),
    )


def _layer_spec() -> Any:
    """megatron's local layer spec with SDPA core attention.

    Transformer Engine's spec is deliberately not used, even where TE is installed (the NGC
    image): it fuses the RMSNorm weights into the following linear layers
    (``linear_qkv.layer_norm_weight``), a layout the HF conversion does not write, and its
    causal attention would not see the block-diagonal masks of packed micro-batches.
    """
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    from nemo_red.models.sdpa_attention import SDPADotProductAttention

    spec = get_gpt_layer_local_spec(qk_layernorm=False, normalization="RMSNorm")
    spec.submodules.self_attention.submodules.core_attention = SDPADotProductAttention
    return spec


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copies ``state`` into ``model``, naming any key either side lacks.

    Tensors are copied in place into the model's own, so they take its dtypes. Only
    megatron's ``_extra_state`` entries may be absent from ``state``.

    Raises:
        KeyError: when a weight is missing from ``state`` or ``state`` has one the model has not.
    """
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("_extra_state")]
    if missing or result.unexpected_keys:
        raise KeyError(
            f"weights do not match the model: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


def build_gpt_model(
    shape: Qwen2Shape,
    tp_size: int = 1,
    pp_size: int = 1,
    pre_process: bool = True,
    post_process: bool = True,
    dtype: torch.dtype = torch.float32,
    parallel: ParallelConfig | None = None,
    vp_stage: int | None = None,
) -> Any:
    """A megatron-core ``GPTModel`` for one pipeline stage of ``shape`` (model chunk
    ``vp_stage`` of it under a virtual pipeline), with the memory-saving features of
    ``parallel``.

    Model-parallel state (``parallel_state.initialize_model_parallel``) must be initialised.
    Layers are megatron's local spec with SDPA core attention (see ``_layer_spec``).
    Every parameter is ``dtype``, norm weights included (megatron's local-spec norms are
    created in fp32 otherwise; Megatron-LM's Float16Module casts them the same way).
    """
    from megatron.core.models.gpt import GPTModel

    from nemo_red.models.norms import sequence_parallel_spec

    config = transformer_config(shape, tp_size, pp_size, dtype, parallel)
    model = GPTModel(
        config=config,
        transformer_layer_spec=sequence_parallel_spec(_layer_spec(), config, vp_stage),
        vocab_size=padded_vocab_size(shape.vocab_size, tp_size),
        max_sequence_length=shape.max_position_embeddings,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=shape.tie_word_embeddings,
        position_embedding_type="rope",
        rotary_base=int(shape.rope_theta),
        **({} if vp_stage is None else {"vp_stage": vp_stage}),
    )
    for param in model.parameters():
        param.data = param.data.to(dtype)
    return model
