"""The inputs of a loss call: one micro-batch, the step's global normalisers, the step context.

Shapes: ``B`` responses (online rollouts and offline teacher traces mixed, in any order),
``T`` response tokens (right-padded; ``mask`` marks the real ones).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class LossBatch:
    """One micro-batch of responses.

    Attributes:
        logprobs: ``[B, T]`` log pi_theta of each response token (differentiable).
        old_logprobs: ``[B, T]`` log pi_old, measured before the first update of the
            iteration (detached); None where no term of the loss reads it (e.g. SFT's
            NLL: see ``LossSpec.needs``).
        mask: ``[B, T]`` bool, True on response tokens.
        is_offline: ``[B]`` bool, True for teacher traces.
        advantages: ``[B]`` sequence-level advantages (broadcast to tokens by the terms).
        rewards: ``[B]`` rewards in [0, 1].
        group_accuracy: ``[B]`` beta, the online accuracy of each response's group.
        entropy: ``[B, T]`` per-token entropy of pi_theta; needed by entropy-aware terms,
            differentiable when an entropy bonus is used.
        ref_logprobs: ``[B, T]`` log pi_ref of a frozen reference, for the KL term.
    """

    logprobs: torch.Tensor
    old_logprobs: torch.Tensor | None
    mask: torch.Tensor
    is_offline: torch.Tensor
    advantages: torch.Tensor
    rewards: torch.Tensor
    group_accuracy: torch.Tensor
    entropy: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None

    def __post_init__(self) -> None:
        b, t = self.logprobs.shape
        for name in ("old_logprobs", "mask", "entropy", "ref_logprobs"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (b, t):
                raise ValueError(f"LossBatch.{name} has shape {tuple(value.shape)}, want {(b, t)}")
        for name in ("is_offline", "advantages", "rewards", "group_accuracy"):
            value = getattr(self, name)
            if tuple(value.shape) != (b,):
                raise ValueError(f"LossBatch.{name} has shape {tuple(value.shape)}, want {(b,)}")
        if self.mask.dtype != torch.bool or self.is_offline.dtype != torch.bool:
            raise ValueError("LossBatch.mask and LossBatch.is_offline must be bool tensors")

    def population(self, on: str) -> torch.Tensor:
        """``[B]`` bool: the responses a term on ``on`` ("online", "offline", "all") covers."""
        if on == "online":
            return ~self.is_offline
        if on == "offline":
            return self.is_offline
        if on == "all":
            return torch.ones_like(self.is_offline)
        raise ValueError(f"unknown population {on!r}; valid: online, offline, all")

    def select(self, rows: torch.Tensor) -> LossBatch:
        """The micro-batch made of ``rows`` (an index or bool tensor over ``B``)."""
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        # Each field is a tensor, or None where it is optional.
        selected: dict[str, Any] = {k: None if v is None else v[rows] for k, v in fields.items()}
        return LossBatch(**selected)


POPULATIONS = ("online", "offline", "all")


@dataclass(frozen=True)
class GlobalNormalisers:
    """Counts over the whole optimizer step: every micro-batch on every data-parallel rank.

    Losses divide by these, never by a micro-batch's own count, so the loss and its gradient
    do not depend on the micro-batch size or the parallel layout (docs/design.md, Algorithm step 7).
    """

    sequences: dict[str, float]
    tokens: dict[str, float]
    max_response_length: int

    @classmethod
    def from_batches(
        cls,
        batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
        max_response_length: int,
        all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> GlobalNormalisers:
        """Counts from ``(mask [B, T], is_offline [B])`` pairs of all local micro-batches.

        Args:
            batches: the local micro-batches' masks and offline flags.
            max_response_length: L_max of the seq-sum aggregation.
            all_reduce: sums a tensor over data-parallel ranks (identity when None).
        """
        counts = torch.zeros(6, dtype=torch.float64)
        for mask, is_offline in batches:
            lengths = mask.sum(-1).to(torch.float64)
            off = is_offline.to(torch.float64)
            counts += torch.stack(
                [
                    (1 - off).sum(),
                    off.sum(),
                    torch.tensor(float(off.numel()), dtype=torch.float64),
                    (lengths * (1 - off)).sum(),
                    (lengths * off).sum(),
                    lengths.sum(),
                ]
            )
        if all_reduce is not None:
            counts = all_reduce(counts)
        values = counts.tolist()
        return cls(
            sequences=dict(zip(POPULATIONS, values[:3], strict=True)),
            tokens=dict(zip(POPULATIONS, values[3:], strict=True)),
            max_response_length=max_response_length,
        )


@dataclass(frozen=True)
class StepContext:
    """Per-iteration scalars the loss coefficients read.

    Attributes:
        step: the training iteration t (drives the CHORD mu schedule).
        entropy_weight: w(t) from the :class:`EntropyRegulator` (1 when unused).
    """

    step: int = 0
    entropy_weight: float = 1.0
