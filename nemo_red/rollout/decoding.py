"""The batched autoregressive loop shared by the in-process engines.

An engine supplies a :class:`DecodeBackend` (prefill and one-token decode over a KV cache);
this module does the rest the same way for every backend: n copies per prompt, batches of
prompts of similar length (left padding only up to the longest prompt of a batch), stop
tokens, length limits, per-token log-probs, reproducible seeding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from nemo_red.rollout.base import Completion, SamplingParams
from nemo_red.rollout.sampling import sample_next


class DecodeBackend(Protocol):
    """Model calls of one generation batch. Logits are ``[B, V]`` over the true vocabulary."""

    def prefill(
        self, input_ids: torch.Tensor, pad: torch.Tensor, total_length: int
    ) -> torch.Tensor:
        """Runs the left-padded prompts ``[B, L]`` (``pad[b]`` leading pad tokens) and returns
        the next-token logits; ``total_length`` bounds prompt + generated tokens."""
        ...

    def decode(self, tokens: torch.Tensor, pad: torch.Tensor, step: int) -> torch.Tensor:
        """Feeds one new token per row (``[B]``) at sequence position ``L + step`` of the
        padded batch and returns the next-token logits."""
        ...


def generate_batched(
    backend: DecodeBackend,
    prompts: Sequence[torch.Tensor],
    params: SamplingParams,
    max_batch_size: int,
    device: torch.device | str = "cpu",
) -> list[list[Completion]]:
    """``params.n`` completions for each prompt, in prompt order."""
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device=device).manual_seed(params.seed)
    rows = [(i, j) for i in range(len(prompts)) for j in range(params.n)]
    rows.sort(key=lambda r: (len(prompts[r[0]]), r))  # similar lengths share a batch
    results: dict[tuple[int, int], Completion] = {}
    for start in range(0, len(rows), max_batch_size):
        chunk = rows[start : start + max_batch_size]
        batch = [prompts[i] for i, _ in chunk]
        for key, completion in zip(
            chunk, _generate_one_batch(backend, batch, params, generator, device), strict=True
        ):
            results[key] = completion
    return [[results[(i, j)] for j in range(params.n)] for i in range(len(prompts))]


def _generate_one_batch(
    backend: DecodeBackend,
    prompts: list[torch.Tensor],
    params: SamplingParams,
    generator: torch.Generator | None,
    device: torch.device | str,
) -> list[Completion]:
    longest = max(len(p) for p in prompts)
    pad = torch.tensor([longest - len(p) for p in prompts], device=device)
    input_ids = torch.zeros(len(prompts), longest, dtype=torch.long, device=device)
    for b, prompt in enumerate(prompts):
        input_ids[b, longest - len(prompt) :] = prompt.to(device)
    stop = torch.tensor(params.stop_token_ids, dtype=torch.long, device=device)
    tokens_out, logprobs_out = [], []
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    stopped = torch.zeros_like(finished)
    logits = backend.prefill(input_ids, pad, longest + params.max_new_tokens)
    for step in range(params.max_new_tokens):
        tokens, logprobs = sample_next(logits, params, generator)
        tokens_out.append(tokens)
        logprobs_out.append(logprobs)
        hit_stop = torch.isin(tokens, stop) & ~finished
        stopped |= hit_stop
        finished |= hit_stop
        if bool(finished.all()) or step + 1 == params.max_new_tokens:
            break
        logits = backend.decode(tokens, pad, step)
    return _completions(torch.stack(tokens_out, 1), torch.stack(logprobs_out, 1), stop, stopped)


def _completions(
    tokens: torch.Tensor, logprobs: torch.Tensor, stop: torch.Tensor, stopped: torch.Tensor
) -> list[Completion]:
    out = []
    for b in range(tokens.shape[0]):
        length = tokens.shape[1]
        if stopped[b]:
            length = int(torch.nonzero(torch.isin(tokens[b], stop))[0]) + 1
        out.append(
            Completion(
                token_ids=tokens[b, :length].cpu(),
                logprobs=logprobs[b, :length].float().cpu(),
                finish_reason="stop" if stopped[b] else "length",
            )
        )
    return out
