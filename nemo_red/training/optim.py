"""Learning-rate schedules, gradient synchronisation and clipping for the actor.

Gradients are synchronised with plain collectives so the same code runs on CPU (gloo) and
GPU: a SUM over data-parallel ranks (the loss already divides by step-wide counts, so a mean
would be wrong), plus the first/last-stage SUM of a tied embedding under pipeline
parallelism. The global grad norm counts tensor-parallel-replicated parameters once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist

SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and its schedule.

    Attributes:
        lr: peak learning rate (paper RL: 2e-6).
        min_lr: learning rate at the end of a linear or cosine decay.
        schedule: "constant", "linear" or "cosine" (after warm-up).
        warmup_steps: linear warm-up from 0 to ``lr``.
        total_steps: length of the decay (required by linear and cosine).
        weight_decay, betas, eps: AdamW.
        clip_grad: max global grad norm (0 disables clipping).
    """

    lr: float = 2e-6
    min_lr: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    total_steps: int = 0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad: float = 1.0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.schedule != "constant" and self.total_steps <= self.warmup_steps:
            raise ValueError(f"{self.schedule} decay needs total_steps > warmup_steps")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"need 0 <= min_lr <= lr and lr > 0, got {self.lr}, {self.min_lr}")

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return self.lr
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        if self.schedule == "linear":
            return self.lr + (self.min_lr - self.lr) * progress
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * progress))


def all_reduce_gradients(params: Iterable[torch.nn.Parameter], group: dist.ProcessGroup) -> None:
    """Sums the gradients of ``params`` over ``group`` (one flat buffer per dtype)."""
    if dist.get_world_size(group) == 1:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in params:
        if p.grad is not None:
            by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, group=group)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def global_grad_norm(
    params: Iterable[tuple[str, torch.nn.Parameter]],
    counted: Callable[[str, torch.nn.Parameter], bool],
    group: dist.ProcessGroup | None,
) -> torch.Tensor:
    """L2 norm of all gradients of the model, each parameter counted once.

    Args:
        params: named parameters of this rank's model shard.
        counted: ``counted(name, param) -> bool``, False for copies held elsewhere too.
        group: the model-parallel group to sum squares over (None: this rank only).
    """
    total = torch.zeros((), dtype=torch.float64)
    for name, p in params:
        if p.grad is not None and counted(name, p):
            total += p.grad.detach().double().pow(2).sum().cpu()
    if group is not None and dist.get_world_size(group) > 1:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        total = total.to(device)
        dist.all_reduce(total, group=group)
    return total.sqrt().cpu()
