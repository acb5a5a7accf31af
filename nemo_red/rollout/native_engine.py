"""``native``: sampling from the megatron-core model itself, with megatron's static KV cache.

No weight copy: the engine holds the actor's own model, so after an optimizer step it
samples from the new weights at once (``update_weights`` with an actor is a no-op; with a HF
state dict it loads it). Prompts of a batch are left-padded to the longest one; padded keys
are masked and positions start at each prompt's first real token. Under tensor parallelism
every TP rank runs the same batch (megatron gathers the vocabulary-parallel logits) and
draws the same tokens (the seed is shared across the TP group). Pipeline parallelism is not
supported by this engine: use ``hf``, ``vllm`` or ``trtllm`` for PP > 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist

from nemo_red.models.conversion import hf_to_megatron
from nemo_red.models.families import ModelShape
from nemo_red.models.megatron_gpt import load_weights
from nemo_red.rollout.base import Completion, SamplingParams, validate_request
from nemo_red.rollout.decoding import generate_batched
from nemo_red.rollout.registry import EngineRequest, register_engine


class _MegatronDecode:
    """Prefill / decode calls of one batch against a megatron GPTModel."""

    def __init__(self, model: torch.nn.Module, vocab_size: int) -> None:
        self.model = model
        self.vocab_size = vocab_size
        self.context: Any = None
        self.length = 0

    def _forward(
        self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        logits = self.model(
            ids, positions, mask, inference_context=self.context, runtime_gather_output=True
        )
        return logits[:, -1, : self.vocab_size]

    def prefill(
        self, input_ids: torch.Tensor, pad: torch.Tensor, total_length: int
    ) -> torch.Tensor:
        from megatron.core.inference.contexts import StaticInferenceContext

        batch, length = input_ids.shape
        self.context = StaticInferenceContext(batch, total_length)
        self.length = length
        index = torch.arange(length, device=input_ids.device)
        positions = (index[None] - pad[:, None]).clamp(min=0)
        key_is_pad = index[None] < pad[:, None]  # [B, L]
        future = index[None, :] > index[:, None]  # [L, L]
        own = torch.eye(length, dtype=torch.bool, device=input_ids.device)
        mask = (future[None] | key_is_pad[:, None, :]) & ~own[None]  # pad rows see themselves
        logits = self._forward(input_ids, positions, mask[:, None])
        self.context.sequence_len_offset += length
        return logits

    def decode(self, tokens: torch.Tensor, pad: torch.Tensor, step: int) -> torch.Tensor:
        position = self.length + step
        keys = torch.arange(position + 1, device=tokens.device)
        mask = (keys[None] < pad[:, None])[:, None, None, :]  # [B, 1, 1, L + step + 1]
        positions = (position - pad)[:, None]
        logits = self._forward(tokens[:, None], positions, mask)
        self.context.sequence_len_offset += 1
        return logits


class NativeEngine:
    """Generates with the actor's megatron model (PP = 1; any TP).

    Args:
        model: the megatron ``GPTModel`` (the actor's, shared).
        shape: its architecture (true vocabulary size, context length).
        max_batch_size: completions decoded together.
    """

    def __init__(self, model: torch.nn.Module, shape: ModelShape, max_batch_size: int = 64) -> None:
        from megatron.core import parallel_state as ps

        if ps.get_pipeline_model_parallel_world_size() > 1:
            raise ValueError("the native engine needs PP = 1; use hf, vllm or trtllm with PP > 1")
        self.model: torch.nn.Module | None = model
        self.shape = shape
        self.max_batch_size = max_batch_size
        self._ps = ps

    @classmethod
    def from_actor(cls, actor: Any, max_batch_size: int = 64) -> NativeEngine:
        """The engine sampling from ``actor.model``."""
        return cls(actor.model, actor.shape, max_batch_size)

    def _shared_seed(self, params: SamplingParams) -> SamplingParams:
        if params.seed is not None or self._ps.get_tensor_model_parallel_world_size() == 1:
            return params
        seed = torch.randint(0, 2**62, (1,))
        group = self._ps.get_tensor_model_parallel_group()
        dist.broadcast(seed, src=self._ps.get_tensor_model_parallel_src_rank(), group=group)
        return SamplingParams(**{**params.__dict__, "seed": int(seed)})

    @torch.no_grad()
    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        """``params.n`` completions for each prompt (see :class:`RolloutEngine`)."""
        tensors = validate_request(
            prompts, params, self.shape.vocab_size, self.shape.max_position_embeddings
        )
        longest = max(len(t) for t in tensors)
        params = self._shared_seed(params)
        if longest + params.max_new_tokens > self.shape.max_position_embeddings:
            limit = self.shape.max_position_embeddings - longest
            params = SamplingParams(**{**params.__dict__, "max_new_tokens": limit})
        model = self._live_model()
        was_training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            backend = _MegatronDecode(model, self.shape.vocab_size)
            return generate_batched(backend, tensors, params, self.max_batch_size, device)
        finally:
            model.train(was_training)

    def update_weights(self, source: Any) -> None:
        """No-op for the actor it shares weights with; loads a HF state dict otherwise."""
        if not isinstance(source, Mapping):
            if getattr(source, "model", None) is not self._live_model():
                raise ValueError("the native engine can only follow the actor it was built from")
            return
        ps = self._ps
        state = hf_to_megatron(
            source,
            self.shape,
            ps.get_tensor_model_parallel_world_size(),
            ps.get_tensor_model_parallel_rank(),
        )
        load_weights(self._live_model(), state)

    def sleep(self) -> None:
        """No-op: the KV cache lives only during ``generate`` and the weights are the actor's."""

    def wake(self) -> None:
        """No-op (see :meth:`sleep`)."""

    def shutdown(self) -> None:
        """Drops the reference to the model."""
        self.model = None

    def _live_model(self) -> torch.nn.Module:
        if self.model is None:
            raise RuntimeError("NativeEngine was shut down")
        return self.model


@register_engine("native", follows_policy=True)
def _build(request: EngineRequest) -> NativeEngine:
    """Samples with the training actor's own megatron model (training only)."""
    return NativeEngine.from_actor(request.policy, max_batch_size=request.max_batch_size)
