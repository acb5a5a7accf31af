"""Coefficients that multiply a loss term, registered by name.

``coefficient(batch, ctx, params) -> float | Tensor [B]``: a scalar for the whole term or one
weight per response. They carry the step-dependent parts of the presets: RED's entropy
weight w(t), CHORD's mu schedule, SRFT's entropy-aware demonstration weight.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from nemo_red.algorithms.loss_inputs import LossBatch, StepContext
from nemo_red.algorithms.loss_terms import sequence_mean_entropy
from nemo_red.algorithms.registry import Registry


@dataclass(frozen=True)
class Coefficient:
    """A registered coefficient: its function, params schema and the batch fields it needs."""

    fn: Callable[[LossBatch, StepContext, Any], float | torch.Tensor]
    params: type
    needs: frozenset[str] = frozenset()


COEFFICIENTS: Registry[Coefficient] = Registry("loss coefficient")


@dataclass(frozen=True)
class ConstantParams:
    """A fixed coefficient."""

    value: float = 1.0


def constant(batch: LossBatch, ctx: StepContext, p: ConstantParams) -> float:
    """The fixed ``value``."""
    return p.value


@dataclass(frozen=True)
class EntropyWeightParams:
    """w(t) from the entropy regulator (no parameters here: the regulator has them)."""


def entropy_regulated(batch: LossBatch, ctx: StepContext, p: EntropyWeightParams) -> float:
    """RED's dynamic entropy weight w(t) (paper Eq. 13), read from the step context."""
    return ctx.entropy_weight


@dataclass(frozen=True)
class ChordMuParams:
    """CHORD's mu schedule: linear warm-up 0 -> peak, cosine decay peak -> valley, then flat.

    ``complement=True`` gives 1 - mu (the coefficient of the GRPO part). A constant mu is
    ``warmup_steps=0, decay_steps=0, peak=valley=mu``.
    """

    warmup_steps: int = 200
    decay_steps: int = 400
    peak: float = 0.5
    valley: float = 0.02
    complement: bool = False

    def __post_init__(self) -> None:
        if self.warmup_steps < 0 or self.decay_steps < 0:
            raise ValueError(f"schedule lengths must be >= 0, got {self}")
        if not (0 <= self.valley <= 1 and 0 <= self.peak <= 1):
            raise ValueError(f"peak and valley must lie in [0, 1], got {self}")


def chord_mu_at(step: int, p: ChordMuParams) -> float:
    """mu(step) of :class:`ChordMuParams` (``complement`` ignored)."""
    if step < p.warmup_steps:
        return p.peak * step / p.warmup_steps
    decay_step = step - p.warmup_steps
    if decay_step < p.decay_steps:
        cosine = 0.5 * (1 + math.cos(math.pi * decay_step / p.decay_steps))
        return p.valley + (p.peak - p.valley) * cosine
    return p.valley


def chord_mu(batch: LossBatch, ctx: StepContext, p: ChordMuParams) -> float:
    """mu(t) or 1 - mu(t) of CHORD's L = (1 - mu) L_GRPO + mu L_SFT."""
    mu = chord_mu_at(ctx.step, p)
    return 1 - mu if p.complement else mu


@dataclass(frozen=True)
class SRFTDemoParams:
    """SRFT's demonstration weight scale * exp(-H), H the response's mean token entropy."""

    scale: float = 0.5


def srft_entropy(batch: LossBatch, ctx: StepContext, p: SRFTDemoParams) -> torch.Tensor:
    """``[B]`` weights scale * exp(-H) (detached)."""
    return p.scale * torch.exp(-sequence_mean_entropy(batch, "srft_entropy"))


COEFFICIENTS.add("constant", Coefficient(constant, ConstantParams))
COEFFICIENTS.add("entropy_regulated", Coefficient(entropy_regulated, EntropyWeightParams))
COEFFICIENTS.add("chord_mu", Coefficient(chord_mu, ChordMuParams))
COEFFICIENTS.add("srft_entropy", Coefficient(srft_entropy, SRFTDemoParams, frozenset({"entropy"})))
