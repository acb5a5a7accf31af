"""Next-token sampling shared by the in-process engines (native megatron, Hugging Face).

``sample_next(logits, params, generator)`` applies temperature, top-k and top-p to the
model's logits and draws one token per row; it returns the token and its log-probability
under the distribution it was drawn from. Greedy decoding (temperature 0) returns the
argmax and its log-probability under the model's own softmax (the limit distribution is a
point mass, whose log-prob 0 would carry no information).
"""

from __future__ import annotations

import torch

from nemo_red.rollout.base import SamplingParams


def _filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    threshold = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < threshold, float("-inf"))


def _filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    # Drop a token when the mass before it already reaches p (the first token always stays).
    mass_before = torch.cumsum(probs, dim=-1) - probs
    drop_sorted = mass_before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row of ``logits`` ``[B, V]``.

    Returns:
        ``(tokens [B] int64, logprobs [B] float32)``.
    """
    logits = logits.float()
    if params.greedy:
        tokens = logits.argmax(dim=-1)
        logprobs = torch.log_softmax(logits, dim=-1)
    else:
        scaled = _filter_top_p(
            _filter_top_k(logits / params.temperature, params.top_k), params.top_p
        )
        logprobs = torch.log_softmax(scaled, dim=-1)
        tokens = torch.multinomial(logprobs.exp(), 1, generator=generator)[:, 0]
    return tokens, logprobs.gather(-1, tokens[:, None])[:, 0]
