"""The actor's optimizer: megatron-core's DistributedOptimizer and its LR schedule.

The model is wrapped in megatron's ``DistributedDataParallel`` (gradients accumulate in
contiguous fp32 buffers) and stepped by its ``DistributedOptimizer``: AdamW on fp32 main
parameters, sharded over the data-parallel ranks (ZeRO-1), with bf16 model weights copied
from them after each step. So a bf16 run keeps every small update (at the paper's lr 2e-6 an
update is ~1/100 of a bf16 weight's rounding step and would vanish if AdamW stepped the bf16
weights directly). The same code runs on CPU through the patches in
``nemo_red.models.megatron_cpu``.

Gradients are SUMMED over data-parallel ranks: the losses already divide by the step's
global token / sequence counts, so megatron's averaging over ranks (and its per-token
rescaling) must stay off; ``calculate_per_token_loss`` on the model config does both. The
grad norm counts tensor-parallel replicas and the tied output layer once (megatron's
``get_grad_norm``). A constant loss scale of 1 makes the optimizer check gradients for
inf/NaN on every rank and skip such a step as one.

The learning rate and weight decay of each step are set on the param groups, honouring
megatron's per-group ``lr_mult`` / ``wd_mult`` (biases and norm weights get no weight decay,
as in Megatron-LM).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from nemo_red.training.config import OptimSection, ParallelConfig

if TYPE_CHECKING:
    from megatron.core.transformer import TransformerConfig


@dataclass(frozen=True)
class OptimConfig(OptimSection):
    """AdamW and its schedule (the config's ``trainer.optim``, with its defaults) plus the
    length of the decay, or one schedule per stage.

    Attributes:
        total_steps: optimizer updates the schedule decays over (required by linear and
            cosine).
        segments: ``(updates, schedule)`` per stage when the stages have schedules of their
            own (``TrainConfig.lr_segments``): each runs over its own updates, in order; the
            last holds beyond its end. Empty: one schedule over ``total_steps``.
    """

    total_steps: int = 0
    segments: tuple[tuple[int, OptimSection], ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.segments:
            for updates, section in self.segments:
                _check_decay(section, updates)
        else:
            _check_decay(self, self.total_steps)

    @property
    def betas(self) -> tuple[float, float]:
        """AdamW's ``(beta1, beta2)``."""
        return (self.adam_beta1, self.adam_beta2)

    @property
    def eps(self) -> float:
        """AdamW's epsilon."""
        return self.adam_eps

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based)."""
        if not self.segments:
            return scheduled_lr(self, step, self.total_steps)
        start = 0
        for updates, section in self.segments:
            if step < start + updates:
                return scheduled_lr(section, step - start, updates)
            start += updates
        updates, section = self.segments[-1]
        return scheduled_lr(section, step - (start - updates), updates)


def scheduled_lr(schedule: OptimSection, step: int, total: int) -> float:
    """The learning rate of update ``step`` (0-based) of ``schedule`` decaying over ``total``
    updates: linear warm-up to ``lr``, then constant, linear or cosine down to ``min_lr``."""
    if step < schedule.warmup_steps:
        return schedule.lr * (step + 1) / schedule.warmup_steps
    if schedule.schedule == "constant":
        return schedule.lr
    progress = min(1.0, (step - schedule.warmup_steps) / (total - schedule.warmup_steps))
    lr, low = schedule.lr, schedule.min_lr
    if schedule.schedule == "linear":
        return lr + (low - lr) * progress
    return low + 0.5 * (lr - low) * (1 + math.cos(math.pi * progress))


def _check_decay(schedule: OptimSection, total: int) -> None:
    if schedule.schedule != "constant" and total <= schedule.warmup_steps:
        raise ValueError(f"{schedule.schedule} decay needs total_steps > warmup_steps")


def build_optimizer(
    model: torch.nn.Module | list[torch.nn.Module],
    optim: OptimConfig,
    parallel: ParallelConfig | None = None,
) -> tuple[Any, Any]:
    """Wraps ``model`` (or each of its virtual-pipeline chunks) for data parallelism and
    builds megatron's distributed optimizer over them.

    ``model.config.calculate_per_token_loss`` must be set first (it turns off megatron's
    averaging of gradients over data-parallel ranks). ``parallel`` says whether gradient
    reduction and weight gathering overlap with the backward / next forward pass (default:
    neither).

    Returns:
        ``(ddp_model, optimizer)``: the wrapped model to run forward/backward through (a
        list of wrapped chunks when ``model`` is a list), and megatron's optimizer
        (``step() -> (ok, grad_norm, zeros)``).
    """
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    chunks = model if isinstance(model, list) else [model]
    configs: list[TransformerConfig] = [chunk.config for chunk in chunks]  # megatron modules'
    config = configs[0]
    if not all(c.calculate_per_token_loss for c in configs):
        raise ValueError("set model.config.calculate_per_token_loss before build_optimizer")
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        use_distributed_optimizer=True,
        overlap_grad_reduce=bool(parallel and parallel.overlap_grad_reduce),
        overlap_param_gather=bool(parallel and parallel.overlap_param_gather),
    )
    wrapped = [
        DistributedDataParallel(
            configs[index],
            ddp_config,
            chunk,
            # as Megatron-LM: a virtual pipeline buckets the first chunk's gradients only
            disable_bucketing=index > 0,
        )
        for index, chunk in enumerate(chunks)
    ]
    optimizer = get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam",
            lr=optim.lr_at(0),
            min_lr=optim.min_lr,
            weight_decay=optim.weight_decay,
            adam_beta1=optim.betas[0],
            adam_beta2=optim.betas[1],
            adam_eps=optim.eps,
            clip_grad=optim.clip_grad,
            bf16=config.bf16,
            params_dtype=config.params_dtype,
            loss_scale=1.0,
            use_distributed_optimizer=True,
        ),
        wrapped,
    )
    return (wrapped if isinstance(model, list) else wrapped[0]), optimizer


def set_step_hyperparameters(optimizer: Any, lr: float, weight_decay: float) -> None:
    """Sets this step's learning rate and weight decay on every param group."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
        group["weight_decay"] = weight_decay * group.get("wd_mult", 1.0)


def optimizer_state(optimizer: Any, model: torch.nn.Module) -> dict[str, Any]:
    """This rank's optimizer state: megatron's common state plus, per named parameter of
    ``model`` that has a shard here, the fp32 main shard and its Adam moments."""
    inner = _distributed_optimizer(optimizer)
    shards = {
        name: {
            k: v.detach().clone() for k, v in inner._get_main_param_and_optimizer_states(p).items()
        }
        for name, p in _owned_parameters(inner, model).items()
    }
    return {"common": optimizer.state_dict(), "shards": shards}


@torch.no_grad()
def load_optimizer_state(optimizer: Any, model: torch.nn.Module, state: dict[str, Any]) -> None:
    """Restores :func:`optimizer_state` (same layout; model weights loaded separately)."""
    inner = _distributed_optimizer(optimizer)
    optimizer.load_state_dict(state["common"])
    owned = _owned_parameters(inner, model)
    if set(owned) != set(state["shards"]):
        raise ValueError(
            "optimizer state does not match this rank's parameter shards: missing "
            f"{sorted(set(owned) - set(state['shards']))[:5]}, unexpected "
            f"{sorted(set(state['shards']) - set(owned))[:5]}"
        )
    for name, param in owned.items():
        inner._set_main_param_and_optimizer_states(param, state["shards"][name])
    # megatron's load_state_dict gives every parameter the same Adam ``step`` tensor; torch's
    # AdamW increments each parameter's in place, so a shared one would advance once per
    # parameter per step and break the bias correction.
    for param_state in inner.optimizer.state.values():
        if torch.is_tensor(param_state.get("step")):
            param_state["step"] = param_state["step"].clone()


def _owned_parameters(inner: Any, model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The named parameters of ``model`` with a shard in this rank's DistributedOptimizer."""
    return {
        name: param
        for name, param in model.named_parameters()
        if param in inner.model_param_group_index_map
    }


def _distributed_optimizer(optimizer: Any) -> Any:
    """The one DistributedOptimizer inside megatron's (possibly chained) optimizer."""
    inner = getattr(optimizer, "chained_optimizers", [optimizer])
    if len(inner) != 1 or not hasattr(inner[0], "model_param_group_index_map"):
        raise TypeError(f"expected one megatron DistributedOptimizer, got {type(optimizer)}")
    return inner[0]
