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

The learning rate and weight decay of each step are set on the param groups by megatron's
``OptimizerParamScheduler`` (:func:`build_scheduler`), honouring megatron's per-group
``lr_mult`` / ``wd_mult`` (biases and norm weights get no weight decay, as in Megatron-LM).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from nemo_red.models.megatron_checkpointing import distributed_optimizer
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


def build_scheduler(optimizer: Any, optim: OptimConfig) -> Any:
    """megatron's ``OptimizerParamScheduler`` for ``optim`` (see :class:`_RedParamScheduler`)."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    class _RedParamScheduler(OptimizerParamScheduler):
        """megatron's scheduler with this project's learning-rate curve.

        megatron's scheduler sets each step's learning rate and weight decay on the param
        groups (with their ``wd_mult``) and checkpoints its position (``num_steps``, here the
        number of optimizer updates done). Its own curves count one step differently from
        :meth:`OptimConfig.lr_at`: its warm-up reaches ``lr`` at step ``warmup_steps`` (ours
        at ``warmup_steps - 1``) and its linear / cosine decay starts one step after the
        warm-up, so ``get_lr`` is :meth:`OptimConfig.lr_at` and the learning rates of a run
        are those of earlier versions. The schedule's settings come from the config on
        resume (``override_opt_param_scheduler``), so a resume with another ``lr`` or
        ``total_steps`` (``--allow-config-change``) uses them.
        """

        def get_lr(self, param_group: dict) -> float:
            return optim.lr_at(self.num_steps) * param_group.get("lr_mult", 1.0)

    return _RedParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=optim.lr,
        min_lr=optim.min_lr,
        lr_warmup_steps=optim.warmup_steps,
        lr_decay_steps=max(optim.total_steps, optim.warmup_steps + 1),
        lr_decay_style={"cosine": "cosine", "linear": "linear"}.get(optim.schedule, "constant"),
        start_wd=optim.weight_decay,
        end_wd=optim.weight_decay,
        wd_incr_steps=1,
        wd_incr_style="constant",
        use_checkpoint_opt_param_scheduler=False,
        override_opt_param_scheduler=True,
    )


def main_parameters(optimizer: Any, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The fp32 main parameter shard of each named parameter of ``model`` held by this rank
    (a whole parameter on a single data-parallel rank; for inspection in tests)."""
    inner = distributed_optimizer(optimizer)
    main = {}
    for name, param in model.named_parameters():
        if param in inner.model_param_group_index_map:
            group, order = inner.model_param_group_index_map[param]
            main[name] = inner.optimizer.param_groups[group]["params"][order].detach().clone()
    return main
