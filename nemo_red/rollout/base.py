"""The rollout-engine protocol: sampling parameters, completions, request validation.

Every backend (``native`` megatron sampler, ``hf``, ``vllm``, ``trtllm``) implements
:class:`RolloutEngine`. Requests are validated before any compute: empty prompts, prompts
that leave no room in the context, stop ids outside the vocabulary and ``n < 1`` are
refused with a clear error.

Log-probs: each completion carries, per generated token, the log-probability of that token
under the distribution it was sampled from (the model's softmax after temperature, top-k
and top-p). At temperature 1 without truncation this is log pi_theta, the quantity the
actor recomputes; :func:`logprob_gap` measures the difference (the source of off-policy
drift between sampler and trainer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch

from nemo_red.monitoring import names

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample completions.

    Attributes:
        n: completions per prompt (>= 1).
        temperature: softmax temperature; 0 means greedy.
        top_p: nucleus sampling mass in (0, 1].
        top_k: keep the k most likely tokens (0: no limit).
        max_new_tokens: at most this many generated tokens per completion.
        stop_token_ids: generation of a completion ends after one of these tokens
            (the stop token is part of the completion).
        seed: makes sampling reproducible (None: from the global RNG).
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Completion:
    """One generated continuation of a prompt.

    Attributes:
        token_ids: ``[L]`` generated token ids (int64).
        logprobs: ``[L]`` float32 log-prob of each under the sampling distribution.
        finish_reason: "stop" (a stop token was generated) or "length".
    """

    token_ids: torch.Tensor
    logprobs: torch.Tensor
    finish_reason: FinishReason
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class PolicyWeights(Protocol):
    """A source of a policy's full weights in the Hugging Face layout (the training actor)."""

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor of the policy under its HF name (collective where the policy is
        sharded: every rank calls it and gets the full dict)."""
        ...


WeightSource = Mapping[str, torch.Tensor] | PolicyWeights


@runtime_checkable
class RolloutEngine(Protocol):
    """What the training loop needs from a generation backend."""

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        """``params.n`` completions for each prompt, in prompt order."""
        ...

    def update_weights(self, source: WeightSource) -> None:
        """Makes the engine sample from ``source``'s weights (a HF state dict or a
        :class:`PolicyWeights` provider such as the training actor)."""
        ...

    def sleep(self) -> None:
        """Frees memory (weights and caches may be dropped) between rollout phases."""
        ...

    def wake(self) -> None:
        """Restores what :meth:`sleep` freed."""
        ...

    def shutdown(self) -> None:
        """Releases every resource; the engine cannot be used afterwards."""
        ...


def validate_request(
    prompts: Sequence[Sequence[int]], params: SamplingParams, vocab_size: int, max_context: int
) -> list[torch.Tensor]:
    """Checks a request before any compute; returns the prompts as int64 tensors.

    Raises:
        ValueError: naming the offending prompt or stop id.
    """
    if len(prompts) == 0:
        raise ValueError("no prompts to generate from")
    bad_stops = [t for t in params.stop_token_ids if not 0 <= t < vocab_size]
    if bad_stops:
        raise ValueError(f"stop_token_ids {bad_stops} are outside the vocabulary [0, {vocab_size})")
    tensors = []
    for i, prompt in enumerate(prompts):
        ids = torch.as_tensor(list(prompt), dtype=torch.long)
        if ids.numel() == 0:
            raise ValueError(f"prompt {i} is empty")
        if ids.min() < 0 or ids.max() >= vocab_size:
            raise ValueError(f"prompt {i} has token ids outside the vocabulary [0, {vocab_size})")
        if ids.numel() >= max_context:
            raise ValueError(
                f"prompt {i} has {ids.numel()} tokens; the context holds {max_context}, "
                "leaving no room to generate"
            )
        tensors.append(ids)
    return tensors


def logprob_gap(
    engine_logprobs: torch.Tensor, actor_logprobs: torch.Tensor, mask: torch.Tensor
) -> dict[str, float]:
    """Max and mean |engine - actor| log-prob over ``mask`` (``[N, T]`` tensors).

    Logged every step by the training loop: the gap is the sampler/trainer mismatch that
    makes importance ratios drift from 1 before any update.
    """
    diff = (engine_logprobs.float() - actor_logprobs.float()).abs()[mask]
    if diff.numel() == 0:
        return {names.LOGPROB_GAP_MAX: 0.0, names.LOGPROB_GAP_MEAN: 0.0}
    return {names.LOGPROB_GAP_MAX: float(diff.max()), names.LOGPROB_GAP_MEAN: float(diff.mean())}


def hf_weights(source: WeightSource) -> dict[str, torch.Tensor]:
    """HF-layout weights from a state dict or a :class:`PolicyWeights` provider (collective
    for a sharded provider)."""
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, PolicyWeights):
        return source.hf_state_dict()
    raise TypeError(
        f"weights must be a HF state dict or a PolicyWeights provider, got {type(source).__name__}"
    )
