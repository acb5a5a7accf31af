"""Sequences of one training step and their packing into padding-free micro-batches.

A step holds N responses (online rollouts and teacher traces), each the continuation of its
prompt. Packing puts several whole sequences into one row of a micro-batch; attention is
block-diagonal causal (each sequence sees only itself) and positions restart at 0 for each,
so a long teacher trace costs its own length, not the longest sequence's. Every micro-batch
row is padded to one common length so pipeline stages can exchange fixed-shape activations.
A row carries its sequence boundaries (``cu_seqlens``), not an ``[S, S]`` mask: the
attention reads them (``nemo_red.models.sdpa_attention.packed_row_params``), so a
micro-batch takes O(S) memory.

Conventions: response token j of a sequence sits at row position p = start + prompt_len + j;
its log-prob is read from the logits at p - 1 (the prediction of the next token).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class SequenceBatch:
    """The N responses of one optimizer step, with their per-sequence training fields.

    Attributes:
        tokens: N 1-D int64 tensors, prompt followed by response.
        prompt_lengths: ``[N]`` prompt length of each sequence (>= 1).
        is_offline: ``[N]`` bool, True for teacher traces.
        advantages: ``[N]`` sequence-level advantages.
        rewards: ``[N]`` rewards.
        group_accuracy: ``[N]`` beta of each sequence's group.
        old_logprobs: ``[N, T]`` log pi_old of response tokens (T = longest response), or
            None before they were measured.
        ref_logprobs: ``[N, T]`` reference log-probs for a KL term, or None.
    """

    tokens: list[Tensor]
    prompt_lengths: Tensor
    is_offline: Tensor
    advantages: Tensor
    rewards: Tensor
    group_accuracy: Tensor
    old_logprobs: Tensor | None = None
    ref_logprobs: Tensor | None = None

    def __post_init__(self) -> None:
        n = len(self.tokens)
        for name in ("prompt_lengths", "is_offline", "advantages", "rewards", "group_accuracy"):
            if tuple(getattr(self, name).shape) != (n,):
                raise ValueError(f"SequenceBatch.{name} must have shape ({n},)")
        lengths = torch.tensor([len(t) for t in self.tokens])
        if n and (torch.any(self.prompt_lengths < 1) or torch.any(lengths <= self.prompt_lengths)):
            raise ValueError("every sequence needs a prompt of >= 1 token and a response")
        for name in ("old_logprobs", "ref_logprobs"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (n, self.max_response_length):
                want = (n, self.max_response_length)
                raise ValueError(f"SequenceBatch.{name} must have shape (N, T) = {want}")

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def response_lengths(self) -> Tensor:
        """``[N]`` number of response tokens of each sequence."""
        return torch.tensor([len(t) for t in self.tokens]) - self.prompt_lengths

    @property
    def max_response_length(self) -> int:
        return int(self.response_lengths.max()) if len(self) else 0

    @property
    def response_mask(self) -> Tensor:
        """``[N, T]`` bool, True on response tokens."""
        return torch.arange(self.max_response_length)[None] < self.response_lengths[:, None]

    def with_fields(self, **changes: object) -> SequenceBatch:
        """A copy with some fields replaced."""
        return SequenceBatch(**{**self.__dict__, **changes})

    def select(self, rows: list[int]) -> SequenceBatch:
        """The sub-batch of ``rows``; response-padded fields are trimmed to its own width."""
        index = torch.tensor(rows, dtype=torch.long)
        tokens = [self.tokens[i] for i in rows]
        width = int((torch.tensor([len(t) for t in tokens]) - self.prompt_lengths[index]).max())
        fields = {}
        for key in ("prompt_lengths", "is_offline", "advantages", "rewards", "group_accuracy"):
            fields[key] = getattr(self, key)[index]
        for key in ("old_logprobs", "ref_logprobs"):
            value = getattr(self, key)
            fields[key] = None if value is None else value[index, :width]
        return SequenceBatch(tokens=tokens, **fields)


@dataclass(frozen=True)
class PackedMicroBatch:
    """Sequences packed into one row.

    Attributes:
        rows: indices (into the step's SequenceBatch) of the packed sequences, ``[n]``.
        input_ids: ``[1, S]`` token ids (0 on padding).
        position_ids: ``[1, S]`` positions, restarting at 0 for each sequence.
        cu_seqlens: ``[n + 1]`` int32: 0, then where each packed sequence ends. The tokens
            after the last are padding, each attending only to itself.
        targets: ``[S]`` the next token at each position (0 where unused).
        gather_index: ``[n, T]`` row positions whose logits predict each response token.
        response_mask: ``[n, T]`` bool, True on response tokens.
        real_tokens: tokens in the row that are not padding.
    """

    rows: Tensor
    input_ids: Tensor
    position_ids: Tensor
    cu_seqlens: Tensor
    targets: Tensor
    gather_index: Tensor
    response_mask: Tensor
    real_tokens: int


def plan_micro_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Groups sequence indices into micro-batches of at most ``token_budget`` tokens.

    First-fit decreasing over the lengths (a sequence longer than the budget gets a
    micro-batch of its own); deterministic for equal inputs.
    """
    if token_budget < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    loads: list[int] = []
    for i in order:
        for b, load in enumerate(loads):
            if load + lengths[i] <= token_budget:
                bins[b].append(i)
                loads[b] += lengths[i]
                break
        else:
            bins.append([i])
            loads.append(lengths[i])
    return [sorted(b) for b in bins]


def pack(batch: SequenceBatch, rows: list[int], seq_length: int, width: int) -> PackedMicroBatch:
    """Packs sequences ``rows`` of ``batch`` into one row of ``seq_length`` tokens.

    Args:
        batch: the step's sequences.
        rows: which sequences to pack (their total length must fit ``seq_length``).
        seq_length: S, the padded row length shared by all micro-batches of the step.
        width: T, the response width of ``gather_index`` (the step's longest response).
    """
    total = sum(len(batch.tokens[i]) for i in rows)
    if total > seq_length:
        raise ValueError(f"{total} tokens do not fit a row of {seq_length}")
    input_ids = torch.zeros(seq_length, dtype=torch.long)
    positions = torch.zeros(seq_length, dtype=torch.long)
    targets = torch.zeros(seq_length, dtype=torch.long)
    gather = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    start, ends = 0, [0]
    for k, i in enumerate(rows):
        tokens = batch.tokens[i].long()
        length, prompt = len(tokens), int(batch.prompt_lengths[i])
        span = slice(start, start + length)
        input_ids[span] = tokens
        positions[span] = torch.arange(length)
        targets[start : start + length - 1] = tokens[1:]
        n_resp = length - prompt
        gather[k, :n_resp] = torch.arange(start + prompt - 1, start + length - 1)
        mask[k, :n_resp] = True
        start += length
        ends.append(start)
    return PackedMicroBatch(
        rows=torch.tensor(rows, dtype=torch.long),
        input_ids=input_ids[None],
        position_ids=positions[None],
        cu_seqlens=torch.tensor(ends, dtype=torch.int32),
        targets=targets,
        gather_index=gather,
        response_mask=mask,
        real_tokens=total,
    )


def split_to_count(plan: list[list[int]], count: int) -> list[list[int]]:
    """``plan`` with its fullest micro-batches split in two until it has ``count`` of them.

    Raises:
        ValueError: when there are fewer than ``count`` sequences to spread.
    """
    plan = [list(micro) for micro in plan]
    while len(plan) < count:
        widest = max(range(len(plan)), key=lambda b: (len(plan[b]), -b), default=None)
        if widest is None or len(plan[widest]) < 2:
            raise ValueError(
                f"{sum(map(len, plan))} sequences on a data-parallel rank cannot fill the "
                f"{count} micro-batches the interleaved pipeline schedule needs (one per "
                "pipeline stage): give each step more sequences or use fewer stages"
            )
        micro = plan.pop(widest)
        plan[widest:widest] = [micro[::2], micro[1::2]]
    return plan


def pack_step(
    batch: SequenceBatch,
    token_budget: int,
    shard: tuple[int, int] = (0, 1),
    row_multiple: int = 1,
    min_micro_batches: int = 1,
) -> list[PackedMicroBatch]:
    """The packed micro-batches of one data-parallel rank.

    Sequences are dealt to data-parallel ranks round-robin in order of decreasing length
    (``shard = (rank, size)``), then packed with :func:`plan_micro_batches`; a rank with
    fewer than ``min_micro_batches`` splits its fullest ones (:func:`split_to_count`). All
    rows share the length of the longest packed row of the whole step, rounded up to a
    multiple of ``row_multiple`` (sequence parallelism splits rows over the tensor-parallel
    ranks), so every rank and pipeline stage agrees on the activation shape.
    """
    rank, size = shard
    lengths = [len(t) for t in batch.tokens]
    order = sorted(range(len(batch)), key=lambda i: (-lengths[i], i))
    plans_per_rank = []
    for r in range(size):
        theirs = sorted(order[r::size])
        plan = plan_micro_batches([lengths[i] for i in theirs], token_budget)
        plan = split_to_count(plan, min_micro_batches) if theirs else plan
        plans_per_rank.append([[theirs[j] for j in micro] for micro in plan])
    seq_length = max(
        (sum(lengths[i] for i in micro) for plan in plans_per_rank for micro in plan), default=1
    )
    seq_length = -(-seq_length // row_multiple) * row_multiple
    width = batch.max_response_length
    return [pack(batch, micro, seq_length, width) for micro in plans_per_rank[rank]]
