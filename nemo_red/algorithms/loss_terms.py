"""Per-token loss terms, registered by name, that presets compose into a loss.

A term is a pure function ``term(batch, params) -> TermOutput`` giving per-token losses
``[B, T]`` for every response; the composer (``loss.py``) keeps the rows of the term's
population (online or offline responses), multiplies by the term's coefficient and
aggregates with global normalisers. Each term has a frozen params dataclass, validated when
the preset is built.

Offline ratios rho_off (how a teacher token's gradient is re-weighted) are their own
registry: ``ratio(logprobs [B, T], group_accuracy [B], params) -> rho_off [B, T]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from nemo_red.algorithms.loss_inputs import LossBatch
from nemo_red.algorithms.registry import Registry


@dataclass(frozen=True)
class TermOutput:
    """What a term returns.

    Attributes:
        loss: ``[B, T]`` per-token loss (only the term's population is kept).
        token_stats: ``[B, T]`` quantities reported as their mean over the term's tokens.
        extreme_stats: ``[B, T]`` quantities reported by their min and max over those tokens.
    """

    loss: torch.Tensor
    token_stats: dict[str, torch.Tensor] = field(default_factory=dict)
    extreme_stats: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class LossTerm:
    """A registered term: its function, its params schema and the batch fields it needs."""

    fn: Callable[[LossBatch, Any], TermOutput]
    params: type
    needs: frozenset[str] = frozenset()


LOSS_TERMS: Registry[LossTerm] = Registry("loss term")
OFFLINE_RATIOS: Registry[Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]] = Registry(
    "offline ratio"
)


def register_term(name: str, params: type, needs: tuple[str, ...] = ()) -> Callable:
    """Decorator registering a term function with its params dataclass."""

    def decorator(fn: Callable[[LossBatch, Any], TermOutput]) -> Callable:
        LOSS_TERMS.add(name, LossTerm(fn=fn, params=params, needs=frozenset(needs)))
        return fn

    return decorator


def _per_token(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.dtype)[:, None].expand_as(like)


def _require(batch: LossBatch, name: str, term: str) -> torch.Tensor:
    value = getattr(batch, name)
    if value is None:
        raise ValueError(f"loss term {term!r} needs LossBatch.{name}, which is None")
    return value


# --------------------------------------------------------------------------- online terms


@dataclass(frozen=True)
class ClippedPGParams:
    """PPO/GRPO clipping. ``eps_high > eps_low`` is DAPO's clip-higher; ``dual_clip`` c > 1
    bounds the loss of negative-advantage tokens at c * |A| (Ye et al., 2020)."""

    eps_low: float = 0.2
    eps_high: float = 0.2
    dual_clip: float | None = None

    def __post_init__(self) -> None:
        if not (0 <= self.eps_low < 1 and self.eps_high >= 0):
            raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got {self}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1, got {self.dual_clip}")


@register_term("clipped_pg", ClippedPGParams, needs=("old_logprobs",))
def clipped_pg(batch: LossBatch, p: ClippedPGParams) -> TermOutput:
    """l = -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A), rho = pi_theta / pi_old
    (docs/design.md, Algorithm step 4), optionally dual-clipped for A < 0."""
    ratio = torch.exp(batch.logprobs - _require(batch, "old_logprobs", "clipped_pg"))
    adv = _per_token(batch.advantages, ratio)
    unclipped = -ratio * adv
    clipped = -torch.clamp(ratio, 1 - p.eps_low, 1 + p.eps_high) * adv
    loss = torch.maximum(unclipped, clipped)
    stats = {"clip_frac": (clipped > unclipped).float()}
    stats["clip_frac_low"] = ((clipped > unclipped) & (ratio < 1)).float()
    stats["clip_frac_high"] = ((clipped > unclipped) & (ratio > 1)).float()
    if p.dual_clip is not None:
        bound = -p.dual_clip * adv
        dual = (adv < 0) & (loss > bound)
        loss = torch.where(dual, bound, loss)
        stats["dual_clip_frac"] = dual.float()
    stats["ratio_mean"] = ratio.detach()
    return TermOutput(loss, stats, {"ratio": ratio.detach()})


@dataclass(frozen=True)
class NoParams:
    """A term without parameters."""


@register_term("pg", NoParams, needs=("old_logprobs",))
def pg(batch: LossBatch, p: NoParams) -> TermOutput:
    """Unclipped importance-weighted PG, l = -rho A (LUFFY's ``loss_remove_clip``)."""
    ratio = torch.exp(batch.logprobs - _require(batch, "old_logprobs", "pg"))
    loss = -ratio * _per_token(batch.advantages, ratio)
    return TermOutput(loss, {"ratio_mean": ratio.detach()}, {"ratio": ratio.detach()})


def sequence_mean_entropy(batch: LossBatch, term: str) -> torch.Tensor:
    """``[B]`` detached mean token entropy of each response (SRFT's H)."""
    entropy = _require(batch, "entropy", term).detach()
    masked = torch.where(batch.mask, entropy, torch.zeros((), dtype=entropy.dtype))
    return masked.sum(-1) / batch.mask.sum(-1).clamp(min=1)


@dataclass(frozen=True)
class SRFTRolloutParams:
    """SRFT's rollout advantage A' = correct_scale * exp(H) if correct else wrong_value."""

    correct_scale: float = 0.1
    wrong_value: float = -1.0
    correct_threshold: float = 0.5


@register_term("srft_rollout", SRFTRolloutParams, needs=("entropy",))
def srft_rollout(batch: LossBatch, p: SRFTRolloutParams) -> TermOutput:
    """SRFT on rollouts: l = -A' log pi_theta, A' from correctness and sequence entropy."""
    h = sequence_mean_entropy(batch, "srft_rollout")
    correct = batch.rewards > p.correct_threshold
    adv = torch.where(correct, p.correct_scale * torch.exp(h), torch.full_like(h, p.wrong_value))
    adv = _per_token(adv, batch.logprobs)
    return TermOutput(-adv * batch.logprobs, {"advantage_mean": adv.detach()})


# -------------------------------------------------------------------------- offline terms


@dataclass(frozen=True)
class OfflinePGParams:
    """The offline policy term l = -rho_off * A* (paper Eq. 11).

    Attributes:
        ratio: a registered offline ratio (``OFFLINE_RATIOS``).
        gamma: LUFFY's shaping constant for ``ratio="luffy"``.
        max_ratio: optional cap on rho_off (LUFFY's ``off_max_clip``); above it the token's
            ratio is held constant (no gradient).
    """

    ratio: str = "accuracy_shift"
    gamma: float = 0.1
    max_ratio: float | None = None

    def __post_init__(self) -> None:
        OFFLINE_RATIOS.get(self.ratio)
        if self.gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")
        if self.max_ratio is not None and self.max_ratio <= 0:
            raise ValueError(f"max_ratio must be > 0, got {self.max_ratio}")


@register_term("offline_pg", OfflinePGParams, needs=("old_logprobs",))
def offline_pg(batch: LossBatch, p: OfflinePGParams) -> TermOutput:
    """l = -rho_off A*: gradient rho_off A* grad log pi_theta for the teacher's tokens."""
    rho = OFFLINE_RATIOS.get(p.ratio)(batch.logprobs, batch.group_accuracy, p)
    stats: dict[str, torch.Tensor] = {}
    if p.max_ratio is not None:
        capped = rho > p.max_ratio
        rho = torch.where(capped, torch.full_like(rho, p.max_ratio), rho)
        stats["clip_frac"] = capped.float()
    loss = -rho * _per_token(batch.advantages, rho)
    stats["rho_off_mean"] = rho.detach()
    old = _require(batch, "old_logprobs", "offline_pg")
    stats["old_ratio_mean"] = torch.exp(batch.logprobs - old).detach()
    return TermOutput(loss, stats, {"rho_off": rho.detach()})


@OFFLINE_RATIOS.register("one")
def ratio_one(logprobs: torch.Tensor, beta: torch.Tensor, p: OfflinePGParams) -> torch.Tensor:
    """pi_off = pi_theta (detached): value 1, gradient grad log pi (Appendix H case ii)."""
    return torch.exp(logprobs - logprobs.detach())


@OFFLINE_RATIOS.register("pi_theta")
def ratio_pi_theta(logprobs: torch.Tensor, beta: torch.Tensor, p: OfflinePGParams) -> torch.Tensor:
    """pi_off = 1: rho_off = pi_theta ("GRPO-MixPolicy", RED's entropy-only ablation)."""
    return torch.exp(logprobs)


@OFFLINE_RATIOS.register("luffy")
def ratio_luffy(logprobs: torch.Tensor, beta: torch.Tensor, p: OfflinePGParams) -> torch.Tensor:
    """LUFFY's policy shaping f(pi) = pi / (pi + gamma), gradient through f."""
    pi = torch.exp(logprobs)
    return pi / (pi + p.gamma)


@OFFLINE_RATIOS.register("accuracy_shift")
def ratio_accuracy_shift(
    logprobs: torch.Tensor, beta: torch.Tensor, p: OfflinePGParams
) -> torch.Tensor:
    """RED's accuracy-aware shift (paper Eq. 8, 11): rho_off = pi_theta / sg(pi_off),
    pi_off = beta + (1 - beta) pi_theta. log pi_off is formed with logaddexp so that tiny
    pi_theta at beta = 0 stays exact (rho_off = 1) instead of 0 / 0."""
    beta = beta.to(logprobs.dtype)[:, None]
    log_beta = torch.log(beta)  # -inf at beta = 0: logaddexp then returns log pi_theta
    log_rest = torch.log1p(-beta) + logprobs  # -inf at beta = 1: pi_off = 1
    log_pi_off = torch.logaddexp(log_beta.expand_as(logprobs), log_rest).detach()
    return torch.exp(logprobs - log_pi_off)


@register_term("nll", NoParams)
def nll(batch: LossBatch, p: NoParams) -> TermOutput:
    """Plain SFT / behaviour cloning, l = -log pi_theta."""
    return TermOutput(-batch.logprobs, {"logprob_mean": batch.logprobs.detach()})


@register_term("nll_phi", NoParams)
def nll_phi(batch: LossBatch, p: NoParams) -> TermOutput:
    """CHORD-phi: l = -sg(phi) log pi_theta with phi = p (1 - p) per token."""
    pi = torch.exp(batch.logprobs.detach())
    phi = pi * (1 - pi)
    return TermOutput(-phi * batch.logprobs, {"phi_mean": phi})


# ------------------------------------------------------------------------ shared extras


@register_term("kl_k3", NoParams, needs=("ref_logprobs",))
def kl_k3(batch: LossBatch, p: NoParams) -> TermOutput:
    """k3 estimator of KL(pi_theta || pi_ref): exp(r) - r - 1 with r = log pi_ref - log pi."""
    log_ratio = _require(batch, "ref_logprobs", "kl_k3") - batch.logprobs
    kl = torch.exp(log_ratio) - log_ratio - 1
    return TermOutput(kl, {"kl_mean": kl.detach()})


@register_term("entropy_bonus", NoParams, needs=("entropy", "entropy_grad"))
def entropy_bonus(batch: LossBatch, p: NoParams) -> TermOutput:
    """l = -H per token (maximises entropy with a positive coefficient)."""
    entropy = _require(batch, "entropy", "entropy_bonus")
    return TermOutput(-entropy, {"entropy_mean": entropy.detach()})
