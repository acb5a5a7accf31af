"""``hf``: a ``transformers`` causal LM of any model family, refit in memory from the actor.

The engine owns its own copy of the weights (on its own device and dtype); ``update_weights``
takes them in the HF layout, as a state dict or from a ``PolicyWeights`` provider (the
training actor gathers its shards), and loads them in place, so no checkpoint round trip is
needed. Decoding uses transformers' KV cache with
left padding masked out. ``sleep`` moves the weights to CPU memory and frees the GPU cache;
``wake`` moves them back (both are no-ops on a CPU engine).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nemo_red.rollout.base import Completion, SamplingParams, hf_weights, validate_request
from nemo_red.rollout.decoding import generate_batched
from nemo_red.rollout.registry import EngineRequest, register_engine

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class _HFDecode:
    def __init__(self, model: torch.nn.Module, vocab_size: int) -> None:
        self.model = model
        self.vocab_size = vocab_size
        self.cache: Any = None
        self.attention: torch.Tensor | None = None

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.model(
            input_ids=ids,
            attention_mask=self.attention,
            position_ids=positions,
            past_key_values=self.cache,
            use_cache=True,
        )
        self.cache = out.past_key_values
        return out.logits[:, -1, : self.vocab_size]

    def prefill(
        self, input_ids: torch.Tensor, pad: torch.Tensor, total_length: int
    ) -> torch.Tensor:
        from transformers import DynamicCache

        self.cache = DynamicCache()
        index = torch.arange(input_ids.shape[1], device=input_ids.device)
        self.attention = (index[None] >= pad[:, None]).long()
        positions = (index[None] - pad[:, None]).clamp(min=0)
        return self._forward(input_ids, positions)

    def decode(self, tokens: torch.Tensor, pad: torch.Tensor, step: int) -> torch.Tensor:
        ones = torch.ones(len(tokens), 1, dtype=torch.long, device=tokens.device)
        assert self.attention is not None  # prefill comes first
        self.attention = torch.cat([self.attention, ones], dim=1)
        positions = (self.attention.shape[1] - 1 - pad)[:, None]
        return self._forward(tokens[:, None], positions)


class HFEngine:
    """Generates with a transformers causal LM (``AutoModelForCausalLM``: any family).

    Args:
        model: e.g. a ``Qwen2ForCausalLM`` (see :meth:`from_pretrained` and :meth:`from_config`).
        max_batch_size: completions decoded together.
    """

    def __init__(self, model: PreTrainedModel, max_batch_size: int = 64) -> None:
        self.model: PreTrainedModel | None = model.eval()
        self.max_batch_size = max_batch_size
        self.device = next(model.parameters()).device
        self.vocab_size = int(model.config.vocab_size)
        self.max_context = int(model.config.max_position_embeddings)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: torch.dtype = torch.float32,
        device: str = "cpu",
        **kwargs: Any,
    ) -> HFEngine:
        """An engine on a HF checkpoint directory."""
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
        return cls(model, **kwargs)

    @classmethod
    def from_config(
        cls, config: dict, dtype: torch.dtype = torch.float32, device: str = "cpu", **kwargs: Any
    ) -> HFEngine:
        """An engine with uninitialised weights of a HF config (refit it before use); the
        config's ``model_type`` picks the transformers model class."""
        from transformers import AutoConfig, AutoModelForCausalLM

        if not config.get("model_type"):
            raise ValueError("the hf engine's config has no model_type (which model to build)")
        values = {k: v for k, v in config.items() if k != "model_type"}
        hf_config = AutoConfig.for_model(config["model_type"], **values)
        model = AutoModelForCausalLM.from_config(hf_config).to(dtype=dtype, device=device)
        return cls(model, **kwargs)

    @torch.no_grad()
    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        """``params.n`` completions for each prompt (see :class:`RolloutEngine`)."""
        tensors = validate_request(prompts, params, self.vocab_size, self.max_context)
        room = self.max_context - max(len(t) for t in tensors)
        if params.max_new_tokens > room:
            params = SamplingParams(**{**params.__dict__, "max_new_tokens": room})
        backend = _HFDecode(self._live_model(), self.vocab_size)
        return generate_batched(backend, tensors, params, self.max_batch_size, self.device)

    @torch.no_grad()
    def update_weights(self, source: Any) -> None:
        """Loads the actor's current weights (or a HF state dict) in place."""
        state = hf_weights(source)
        own = self._live_model().state_dict()
        unknown = sorted(set(state) - set(own))
        missing = sorted(set(own) - set(state))
        if unknown or missing:
            raise KeyError(
                f"weight update does not match the model: unknown {unknown[:5]}, "
                f"missing {missing[:5]}"
            )
        for name, tensor in state.items():
            own[name].copy_(tensor)

    def sleep(self) -> None:
        """Moves the weights to CPU memory and frees the GPU cache (no-op on CPU)."""
        if self.device.type == "cuda":
            self._live_model().to("cpu")
            torch.cuda.empty_cache()

    def wake(self) -> None:
        """Moves the weights back to the engine's device."""
        self._live_model().to(self.device)

    def shutdown(self) -> None:
        """Releases the model."""
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _live_model(self) -> PreTrainedModel:
        if self.model is None:
            raise RuntimeError("HFEngine was shut down")
        return self.model


@register_engine("hf", holds_memory=True)
def _build(request: EngineRequest) -> HFEngine:
    """A transformers model: loaded from ``request.hf_dir``, or built from the config and
    refit from ``request.policy``."""
    dtype = getattr(torch, request.dtype)
    device, batch = request.device, request.max_batch_size
    if request.policy is None:
        if request.hf_dir is None:
            raise ValueError("the hf engine needs a HF directory or a policy to follow")
        return HFEngine.from_pretrained(
            request.hf_dir, dtype=dtype, device=device, max_batch_size=batch
        )
    engine = HFEngine.from_config(
        request.hf_config, dtype=dtype, device=device, max_batch_size=batch
    )
    engine.update_weights(request.policy)
    return engine
