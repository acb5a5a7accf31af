"""Token-loss aggregation modes, all with global normalisers (docs/design.md, Algorithm step 7).

Each mode maps masked per-token losses ``[B, T]`` of one micro-batch to that micro-batch's
share of the step loss. Summing the shares of all micro-batches (and data-parallel ranks)
gives the step loss, whatever the split, because every denominator is a step-wide count.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from nemo_red.algorithms.loss_inputs import GlobalNormalisers
from nemo_red.algorithms.registry import Registry

Aggregation = Callable[[torch.Tensor, torch.Tensor, GlobalNormalisers, str], torch.Tensor]

AGGREGATIONS: Registry[Aggregation] = Registry("aggregation mode")


def _masked(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))


@AGGREGATIONS.register("seq_mean_token_mean")
def seq_mean_token_mean(
    token_loss: torch.Tensor, mask: torch.Tensor, norm: GlobalNormalisers, population: str
) -> torch.Tensor:
    """Paper Eq. 12: mean over each response's tokens, then mean over the step's responses.

    Args:
        token_loss: ``[B, T]`` per-token losses.
        mask: ``[B, T]`` bool, the tokens this term covers (whole responses).
        norm: the step's global counts.
        population: which responses count in the denominator ("online", "offline", "all").
    """
    lengths = mask.sum(-1).clamp(min=1)
    per_sequence = _masked(token_loss, mask).sum(-1) / lengths
    return per_sequence.sum() / max(norm.sequences[population], 1.0)


@AGGREGATIONS.register("token_mean")
def token_mean(
    token_loss: torch.Tensor, mask: torch.Tensor, norm: GlobalNormalisers, population: str
) -> torch.Tensor:
    """DAPO: sum over all tokens of the step / number of tokens of the step."""
    return _masked(token_loss, mask).sum() / max(norm.tokens[population], 1.0)


@AGGREGATIONS.register("seq_sum_lmax")
def seq_sum_lmax(
    token_loss: torch.Tensor, mask: torch.Tensor, norm: GlobalNormalisers, population: str
) -> torch.Tensor:
    """Dr.GRPO / LUFFY: each response's token sum / L_max, then mean over responses."""
    denominator = max(norm.sequences[population], 1.0) * max(norm.max_response_length, 1)
    return _masked(token_loss, mask).sum() / denominator
