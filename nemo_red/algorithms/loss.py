"""The loss composer: one call per micro-batch, sum of the spec's terms.

``compute_loss(spec, batch, norm, ctx) -> (loss, metrics)`` returns this micro-batch's share
of the step loss. Because every denominator is a global count (:class:`GlobalNormalisers`),
summing the losses (and metrics) of all micro-batches and data-parallel ranks gives the step
values, independent of how the step was split. Metric keys ending in ``_min`` / ``_max`` are
reduced with min / max instead; :func:`reduce_metrics` applies the rule.

No ``.item()`` is called here: metrics are tensors, so the caller decides when to sync.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from nemo_red.algorithms.aggregation import AGGREGATIONS
from nemo_red.algorithms.coefficients import COEFFICIENTS
from nemo_red.algorithms.loss_inputs import GlobalNormalisers, LossBatch, StepContext
from nemo_red.algorithms.loss_terms import LOSS_TERMS
from nemo_red.algorithms.presets import LossSpec, TermSpec


def _stat(values: torch.Tensor) -> torch.Tensor:
    """Detached, in at least fp32 (bf16 statistics would be too coarse to log)."""
    return values.detach().to(torch.promote_types(values.dtype, torch.float32))


def _token_mean_share(
    values: torch.Tensor, mask: torch.Tensor, norm: GlobalNormalisers, on: str
) -> torch.Tensor:
    values = _stat(values)
    masked = torch.where(mask, values, values.new_zeros(()))
    return masked.sum() / max(norm.tokens[on], 1.0)


def population_token_means(
    values: torch.Tensor, batch: LossBatch, norm: GlobalNormalisers
) -> dict[str, torch.Tensor]:
    """This micro-batch's share of the step's token mean of ``values`` ``[B, T]`` over the
    online and over the offline response tokens (summed over micro-batches by
    :func:`reduce_metrics`); a population without tokens in the step is left out."""
    return {
        on: _token_mean_share(values, batch.mask & batch.population(on)[:, None], norm, on)
        for on in ("online", "offline")
        if norm.tokens[on] > 0
    }


def _extremes(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    values = _stat(values)
    inf = values.new_tensor(float("inf"))
    return torch.where(mask, values, inf).min(), torch.where(mask, values, -inf).max()


def _coefficient(term: TermSpec, batch: LossBatch, ctx: StepContext) -> torch.Tensor:
    coefficient = COEFFICIENTS.get(term.coefficient).fn(batch, ctx, term.coef_params)
    coefficient = torch.as_tensor(coefficient, dtype=batch.logprobs.dtype)
    return coefficient[:, None] if coefficient.ndim == 1 else coefficient


def compute_loss(
    spec: LossSpec, batch: LossBatch, norm: GlobalNormalisers, ctx: StepContext
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """This micro-batch's share of the step loss of ``spec``.

    Args:
        spec: the loss (a preset, possibly modified).
        batch: one micro-batch.
        norm: counts over the whole step (all micro-batches, all data-parallel ranks).
        ctx: step scalars (iteration, entropy weight w(t)).

    Returns:
        ``(loss, metrics)``: a scalar with gradient, and detached scalar tensors:
        ``loss/<term>`` (each term's contribution), ``<population>/<stat>`` token means and
        ``<population>/<stat>_min|_max`` extremes, ``coef/<term>`` token-mean coefficients.
    """
    aggregate = AGGREGATIONS.get(spec.aggregation)
    total = batch.logprobs.new_zeros(())
    metrics: dict[str, torch.Tensor] = {}
    for term in spec.terms:
        output = LOSS_TERMS.get(term.term).fn(batch, term.term_params)
        coefficient = _coefficient(term, batch, ctx)
        mask = batch.mask & batch.population(term.on)[:, None]
        population = "all" if spec.normaliser == "joint" else term.on
        contribution = aggregate(coefficient * output.loss, mask, norm, population)
        total = total + contribution
        metrics[f"loss/{term.term}"] = contribution.detach()
        metrics[f"coef/{term.term}"] = _token_mean_share(
            coefficient.expand_as(mask), mask, norm, term.on
        )
        for name, values in output.token_stats.items():
            metrics[f"{term.on}/{name}"] = _token_mean_share(values, mask, norm, term.on)
        for name, values in output.extreme_stats.items():
            low, high = _extremes(values, mask)
            metrics[f"{term.on}/{name}_min"] = low
            metrics[f"{term.on}/{name}_max"] = high
    metrics["loss/total"] = total.detach()
    return total, metrics


def reduce_metrics(per_micro_batch: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Step metrics from micro-batch metrics: sum, or min / max for ``_min`` / ``_max`` keys.

    Extremes over micro-batches without tokens of a population (+-inf) are dropped.
    """
    reduced: dict[str, torch.Tensor] = {}
    for metrics in per_micro_batch:
        for key, value in metrics.items():
            if key not in reduced:
                reduced[key] = value.detach().clone()
            elif key.endswith("_min"):
                reduced[key] = torch.minimum(reduced[key], value)
            elif key.endswith("_max"):
                reduced[key] = torch.maximum(reduced[key], value)
            else:
                reduced[key] = reduced[key] + value
    return {k: float(v) for k, v in reduced.items() if torch.isfinite(v)}
