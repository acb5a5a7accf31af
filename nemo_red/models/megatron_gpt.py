"""megatron-core ``GPTModel``s of any model family, and loading weights into them.

The model is built from its family (``nemo_red.models.families``): the family's
``TransformerConfig``, layer spec and rotary-embedding arguments. The vocabulary is padded
to a multiple of the tensor-parallel size; the padded logits are excluded from every
softmax by the token statistics (``valid_vocab_size``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from nemo_red.models.families import ModelShape, get_family

if TYPE_CHECKING:
    from nemo_red.training.config import ParallelConfig


def padded_vocab_size(vocab_size: int, tp_size: int) -> int:
    """The vocabulary rounded up to a multiple of the tensor-parallel size."""
    return -(-vocab_size // tp_size) * tp_size


def transformer_config(
    shape: ModelShape,
    tp_size: int = 1,
    pp_size: int = 1,
    dtype: torch.dtype = torch.float32,
    parallel: ParallelConfig | None = None,
    **fields: Any,
) -> Any:
    """The megatron ``TransformerConfig`` of ``shape``, built by its family, with the
    memory-saving features of ``parallel`` (sequence parallelism, recomputation, virtual
    pipeline; none when ``None``) and further ``TransformerConfig`` ``fields``."""
    from nemo_red.training.parallel import transformer_config_kwargs

    return get_family(shape.family).transformer_config(
        shape, tp_size, pp_size, dtype, **(transformer_config_kwargs(parallel) | fields)
    )


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
    shape: ModelShape,
    tp_size: int = 1,
    pp_size: int = 1,
    pre_process: bool = True,
    post_process: bool = True,
    dtype: torch.dtype = torch.float32,
    parallel: ParallelConfig | None = None,
    vp_stage: int | None = None,
    **fields: Any,
) -> Any:
    """A megatron-core ``GPTModel`` for one pipeline stage of ``shape`` (model chunk
    ``vp_stage`` of it under a virtual pipeline), with the memory-saving features of
    ``parallel``.

    Model-parallel state (``parallel_state.initialize_model_parallel``) must be initialised.
    ``fields`` are further ``TransformerConfig`` fields (see
    :meth:`~nemo_red.models.families.DecoderFamily.transformer_config`). Every parameter is
    ``dtype``, norm weights included (megatron's local-spec norms are created in fp32
    otherwise; Megatron-LM's Float16Module casts them the same way).
    """
    from megatron.core.models.gpt import GPTModel

    family = get_family(shape.family)
    config = transformer_config(shape, tp_size, pp_size, dtype, parallel, **fields)
    model = GPTModel(
        config=config,
        transformer_layer_spec=family.layer_spec(shape, config, vp_stage),
        vocab_size=padded_vocab_size(shape.vocab_size, tp_size),
        max_sequence_length=shape.max_position_embeddings,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=shape.tie_word_embeddings,
        **family.gpt_model_kwargs(shape),
        **({} if vp_stage is None else {"vp_stage": vp_stage}),
    )
    for param in model.parameters():
        param.data = param.data.to(dtype)
    return model
