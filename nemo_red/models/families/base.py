"""A model family: a dense decoder architecture (Qwen2, Qwen3, Llama, ...) on megatron-core.

:class:`DecoderFamily` is what a family gives the rest of the project:

* its shape from a HF ``config.json`` (:meth:`~DecoderFamily.shape_from_hf_config`), with
  clear errors naming the field for what it does not support, and the way back
  (:meth:`~DecoderFamily.to_hf_config`);
* its megatron ``TransformerConfig`` (:meth:`~DecoderFamily.transformer_config`, the one
  place it is built), layer spec and ``GPTModel`` arguments;
* its HF <-> megatron tensor map (:meth:`~DecoderFamily.tensor_map`), which
  ``conversion.py`` applies under any TP x PP layout.

The families here differ only by a few switches (QKV bias, per-head q/k RMSNorm, which
rope scalings they take, which config fields they refuse), set as class attributes by each
family's module. Every model uses megatron's local layer spec with SDPA core attention
(see :meth:`~DecoderFamily.layer_spec`); dropout is off; the vocabulary is padded to a
multiple of the tensor-parallel size.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import torch

from nemo_red.models.families.hf_config import HFConfig
from nemo_red.models.families.shape import Llama3RopeScaling, ModelShape

# megatron-core (0.16 - 0.19) fixes these llama3 rope-scaling parameters
# (RotaryEmbedding._apply_scaling); only the factor is an argument (GPTModel's
# rope_scaling_factor). Configs with other values are refused.
MEGATRON_LLAMA3_FIXED = {
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


class Split(Enum):
    """How one megatron tensor is made from HF tensors and split over TP ranks."""

    QKV = "qkv"  # [q; k; v] fused per query group, then split on dim 0
    GATE_UP = "gate_up"  # gate and up each split on dim 0, then cat per rank
    COLUMN = "column"  # split on dim 0
    ROW = "row"  # split on dim 1
    REPLICATED = "replicated"  # every TP rank holds the whole tensor


@dataclass(frozen=True)
class TensorRule:
    """One megatron tensor of a decoder layer and the HF tensors it is made of.

    Names are relative to the layer: ``model.layers.{i}.`` (HF), ``decoder.layers.{j}.``
    (megatron, ``j`` local to the pipeline stage). ``hf_shapes`` are checked on import.
    """

    megatron: str
    hf: tuple[str, ...]
    hf_shapes: tuple[tuple[int, ...], ...]
    split: Split


@dataclass(frozen=True)
class TensorMap:
    """A family's HF <-> megatron tensor names: per layer, plus the embedding, the final
    norm and the output layer (split on the vocabulary, padded to a multiple of TP)."""

    layer: tuple[TensorRule, ...]
    embedding: str = "model.embed_tokens.weight"
    final_norm: str = "model.norm.weight"
    output_layer: str = "lm_head.weight"
    hf_layer_prefix: str = "model.layers.{}."


class DecoderFamily:
    """A dense decoder family; subclasses set the class attributes (see the module doc)."""

    name: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]  # HF ``model_type`` values it reads
    architecture: ClassVar[str]  # HF ``architectures[0]`` it writes
    qkv_bias: ClassVar[bool] = False
    qk_norm: ClassVar[bool] = False
    rope_types: ClassVar[tuple[str, ...]] = ()  # rope scalings it takes besides "default"
    refused_fields: ClassVar[tuple[tuple[str, str], ...]] = ()  # (field, why) must be falsy
    default_max_positions: ClassVar[int] = 32768

    # ------------------------------------------------------------------ HF config
    def shape_from_hf_config(self, config: HFConfig) -> ModelShape:
        """The shape of ``config``; raises ValueError naming the field it cannot take."""
        config.refuse_moe()
        config.require(
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
        )
        act = config.values.get("hidden_act", "silu")
        if act != "silu":
            raise config.error(f"hidden_act {act!r} is not supported (only silu)")
        config.refuse_sliding_window()
        for name, why in self.refused_fields:
            config.refuse_true(name, why)
        heads = config.get_int("num_attention_heads")
        hidden = config.get_int("hidden_size")
        theta, rope_type, params, field = config.rope()
        return ModelShape(
            family=self.name,
            vocab_size=config.get_int("vocab_size"),
            hidden_size=hidden,
            intermediate_size=config.get_int("intermediate_size"),
            num_layers=config.get_int("num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=config.get_int("num_key_value_heads", heads),
            head_dim=config.get_int("head_dim", hidden // heads),
            rms_norm_eps=config.get_float("rms_norm_eps", 1e-6),
            rope_theta=theta,
            max_position_embeddings=config.get_int(
                "max_position_embeddings", self.default_max_positions
            ),
            tie_word_embeddings=bool(config.values.get("tie_word_embeddings", False)),
            rope_scaling=self._rope_scaling(config, rope_type, params, field),
        )

    def _rope_scaling(
        self, config: HFConfig, rope_type: str, params: dict[str, Any], field: str
    ) -> Llama3RopeScaling | None:
        if rope_type == "default":
            return None
        if rope_type not in self.rope_types:
            supported = ", ".join(("default", *self.rope_types))
            raise config.error(
                f"{field} {rope_type!r} is not supported by the {self.name} family "
                f"(supported: {supported})"
            )
        prefix = field.rsplit(".", 1)[0]
        if "factor" not in params:
            raise config.error(f"{prefix}.factor is missing for rope type {rope_type!r}")
        for key, fixed in MEGATRON_LLAMA3_FIXED.items():
            value = params.get(key, fixed)
            if float(value) != float(fixed):
                raise config.error(
                    f"{prefix}.{key} = {value!r} is not supported: megatron-core's llama3 "
                    f"rope scaling fixes it at {fixed}"
                )
        return Llama3RopeScaling(
            factor=float(params["factor"]),
            low_freq_factor=float(params.get("low_freq_factor", 1.0)),
            high_freq_factor=float(params.get("high_freq_factor", 4.0)),
            original_max_position_embeddings=int(
                params.get("original_max_position_embeddings", 8192)
            ),
        )

    def to_hf_config(self, shape: ModelShape) -> dict[str, Any]:
        """A ``config.json`` dict that ``transformers`` loads as this family's model."""
        config: dict[str, Any] = {
            "architectures": [self.architecture],
            "model_type": self.model_types[0],
            "vocab_size": shape.vocab_size,
            "hidden_size": shape.hidden_size,
            "intermediate_size": shape.intermediate_size,
            "num_hidden_layers": shape.num_layers,
            "num_attention_heads": shape.num_heads,
            "num_key_value_heads": shape.num_kv_heads,
            "head_dim": shape.head_dim,
            "rms_norm_eps": shape.rms_norm_eps,
            "rope_theta": shape.rope_theta,
            "max_position_embeddings": shape.max_position_embeddings,
            "tie_word_embeddings": shape.tie_word_embeddings,
            "hidden_act": "silu",
            "torch_dtype": "float32",
        }
        if shape.rope_scaling is not None:
            config["rope_scaling"] = shape.rope_scaling.to_hf()
        return config | self.hf_config_extras()

    def hf_config_extras(self) -> dict[str, Any]:
        """Family fields of :meth:`to_hf_config` that pin what the family refuses."""
        return {}

    # ------------------------------------------------------------------ megatron
    def transformer_config(
        self,
        shape: ModelShape,
        tp_size: int = 1,
        pp_size: int = 1,
        dtype: torch.dtype = torch.float32,
        **parallel: Any,
    ) -> Any:
        """The megatron ``TransformerConfig`` of ``shape`` (dropout off, HF numerics).

        ``parallel`` are further ``TransformerConfig`` fields (parallelism and memory
        settings such as ``sequence_parallel``, ``recompute_granularity`` or
        ``virtual_pipeline_model_parallel_size``; see
        ``nemo_red.training.parallel.transformer_config_kwargs``), applied last. Under a
        virtual pipeline the layers are split over ``pp_size`` x virtual stages.
        """
        from megatron.core.transformer.transformer_config import TransformerConfig

        shape.check(tp_size, pp_size * (parallel.get("virtual_pipeline_model_parallel_size") or 1))
        fields: dict[str, Any] = {
            "num_layers": shape.num_layers,
            "hidden_size": shape.hidden_size,
            "ffn_hidden_size": shape.intermediate_size,
            "num_attention_heads": shape.num_heads,
            "num_query_groups": shape.num_kv_heads,
            "kv_channels": shape.head_dim,
            "normalization": "RMSNorm",
            "layernorm_epsilon": shape.rms_norm_eps,
            "gated_linear_unit": True,
            "activation_func": torch.nn.functional.silu,
            "add_bias_linear": False,
            "add_qkv_bias": self.qkv_bias,
            # also makes finalize_model_grads sum the q/k-norm gradients over TP ranks
            "qk_layernorm": self.qk_norm,
            "hidden_dropout": 0.0,
            "attention_dropout": 0.0,
            "tensor_model_parallel_size": tp_size,
            "pipeline_model_parallel_size": pp_size,
            "params_dtype": dtype,
            "bf16": dtype == torch.bfloat16,
            "pipeline_dtype": dtype,
            "use_cpu_initialization": not torch.cuda.is_available(),
            "bias_activation_fusion": False,
            "bias_dropout_fusion": False,
            "masked_softmax_fusion": False,
            "persist_layer_norm": False,
            "apply_rope_fusion": False,
            "gradient_accumulation_fusion": False,
        }
        return TransformerConfig(**(fields | parallel))

    def layer_spec(self, shape: ModelShape, config: Any = None, vp_stage: int | None = None) -> Any:
        """megatron's local layer spec with SDPA core attention; given the model's
        ``config`` with ``sequence_parallel`` on, the decoder block spec (model chunk
        ``vp_stage``) whose torch-fallback norms mark their weights sequence-parallel
        (``nemo_red.models.norms.sequence_parallel_spec``).

        Transformer Engine's spec is deliberately not used, even where TE is installed (the
        NGC image): it fuses the RMSNorm weights into the following linear layers
        (``linear_qkv.layer_norm_weight``), a layout the HF conversion does not write, and
        its causal attention would not see the block-diagonal masks of packed micro-batches.
        """
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

        from nemo_red.models.norms import sequence_parallel_spec
        from nemo_red.models.sdpa_attention import SDPADotProductAttention

        spec = get_gpt_layer_local_spec(qk_layernorm=self.qk_norm, normalization="RMSNorm")
        spec.submodules.self_attention.submodules.core_attention = SDPADotProductAttention
        return spec if config is None else sequence_parallel_spec(spec, config, vp_stage)

    def gpt_model_kwargs(self, shape: ModelShape) -> dict[str, Any]:
        """The rotary-embedding arguments of megatron's ``GPTModel``."""
        kwargs: dict[str, Any] = {
            "position_embedding_type": "rope",
            "rotary_base": int(shape.rope_theta),
        }
        if shape.rope_scaling is not None:
            kwargs |= {"rope_scaling": True, "rope_scaling_factor": shape.rope_scaling.factor}
        return kwargs

    # ------------------------------------------------------------------ tensor map
    def tensor_map(self, shape: ModelShape) -> TensorMap:
        """The HF <-> megatron names of the family's tensors (see ``conversion.py``)."""
        h, f, d = shape.hidden_size, shape.intermediate_size, shape.head_dim
        q, kv = shape.q_size, shape.kv_size
        qkv_names = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
        rules = [
            TensorRule(
                "self_attention.linear_qkv.weight",
                tuple(f"{n}.weight" for n in qkv_names),
                ((q, h), (kv, h), (kv, h)),
                Split.QKV,
            )
        ]
        if self.qkv_bias:
            rules.append(
                TensorRule(
                    "self_attention.linear_qkv.bias",
                    tuple(f"{n}.bias" for n in qkv_names),
                    ((q,), (kv,), (kv,)),
                    Split.QKV,
                )
            )
        if self.qk_norm:
            rules += [
                TensorRule(
                    f"self_attention.{n}_layernorm.weight",
                    (f"self_attn.{n}_norm.weight",),
                    ((d,),),
                    Split.REPLICATED,
                )
                for n in "qk"
            ]
        rules += [
            TensorRule(
                "self_attention.linear_proj.weight",
                ("self_attn.o_proj.weight",),
                ((h, q),),
                Split.ROW,
            ),
            TensorRule(
                "mlp.linear_fc1.weight",
                ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
                ((f, h), (f, h)),
                Split.GATE_UP,
            ),
            TensorRule("mlp.linear_fc2.weight", ("mlp.down_proj.weight",), ((h, f),), Split.ROW),
            TensorRule(
                "input_layernorm.weight", ("input_layernorm.weight",), ((h,),), Split.REPLICATED
            ),
            TensorRule(
                "pre_mlp_layernorm.weight",
                ("post_attention_layernorm.weight",),
                ((h,),),
                Split.REPLICATED,
            ),
        ]
        return TensorMap(layer=tuple(rules))
