"""The megatron-core actor: log-probs, entropies and RED training steps under TP x PP x DP.

It keeps NeMo-Aligner's actor contract: a forward step returns ``(parallel_logits,
loss_func)`` and ``loss_func(parallel_logits)`` returns the loss and its metrics, driven by
megatron's ``get_forward_backward_func`` (so pipeline schedules such as 1F1B work).

Each step's sequences are packed into padding-free micro-batches of at most
``token_budget`` tokens (see ``packing.py``) and dealt to data-parallel ranks. Losses use
the step's global normalisers, so the gradient does not depend on this split. The model
runs wrapped in megatron's ``DistributedDataParallel`` and steps with its
``DistributedOptimizer`` (fp32 main weights sharded over data-parallel ranks, see
``optim.py``); ``finalize_model_grads`` sums gradients over data-parallel ranks and the tied
embedding's over the first and last pipeline stages. Departure from a stock megatron
trainer: gradients are summed, not averaged, over ranks, because the losses already divide
by step-wide counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from nemo_red.algorithms.loss import compute_loss, reduce_metrics
from nemo_red.algorithms.loss_inputs import GlobalNormalisers, LossBatch, StepContext
from nemo_red.algorithms.presets import LossSpec
from nemo_red.algorithms.token_stats import (
    token_logprobs_and_entropy,
    vocab_parallel_token_logprobs_and_entropy,
)
from nemo_red.models.qwen2 import Qwen2Shape, load_weights
from nemo_red.models.sdpa_attention import packed_row_params
from nemo_red.monitoring import names
from nemo_red.training.optim import OptimConfig, build_optimizer, build_scheduler
from nemo_red.training.packing import PackedMicroBatch, SequenceBatch, pack_step

if TYPE_CHECKING:
    from megatron.core.transformer import TransformerConfig


@dataclass(frozen=True)
class StepStats:
    """Per-step token statistics measured before the update (for the entropy regulator)."""

    logprobs: torch.Tensor  # [N, T]
    entropy: torch.Tensor  # [N, T]
    h_rl: float  # mean entropy over online response tokens (nan if none)
    h_sft: float  # mean entropy over offline response tokens (nan if none)


class MegatronActor:
    """One pipeline stage of the policy on this rank, with its optimizer.

    Args:
        model: this rank's megatron ``GPTModel`` (stage and TP shard). The actor wraps it
            for data parallelism; ``actor.model`` stays the bare model (weights, export).
        shape: the architecture (for the true vocabulary size).
        optim: optimizer and schedule settings.
        token_budget: max tokens per packed micro-batch.
    """

    def __init__(
        self, model: torch.nn.Module, shape: Qwen2Shape, optim: OptimConfig, token_budget: int
    ) -> None:
        from megatron.core import parallel_state as ps

        self.model = model
        self.shape = shape
        self.optim_config = optim
        self.token_budget = token_budget
        self._ps = ps
        config: TransformerConfig = model.config  # a megatron module's config
        config.calculate_per_token_loss = True  # our losses divide by global counts
        config.batch_p2p_sync = False
        config.variable_seq_lengths = False
        self.ddp_model, self.optimizer = build_optimizer(model, optim)
        self.scheduler = build_scheduler(self.optimizer, optim)

    @property
    def steps_done(self) -> int:
        """Optimizer updates done (skipped steps not counted): the LR schedule's position."""
        return int(self.scheduler.num_steps)

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The full policy in the HF layout, gathered over TP and PP (collective): what
        rollout engines are refit from (``nemo_red.rollout.base.PolicyWeights``)."""
        from nemo_red.training.weights import full_hf_state_dict

        return full_hf_state_dict(self)

    # ------------------------------------------------------------------ plumbing
    @property
    def is_last_stage(self) -> bool:
        return self._ps.is_pipeline_last_stage()

    def _micro_batches(self, batch: SequenceBatch) -> list[PackedMicroBatch]:
        shard = (self._ps.get_data_parallel_rank(), self._ps.get_data_parallel_world_size())
        return pack_step(batch, self.token_budget, shard)

    def _token_stats(
        self, logits: torch.Tensor, mb: PackedMicroBatch, with_entropy_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[n, T]`` log-probs and entropies of the response tokens of ``mb``."""
        logits = logits[0]  # [S, V / tp]
        targets = mb.targets.to(logits.device)
        tp = self._ps.get_tensor_model_parallel_world_size()
        if tp == 1:
            logp, ent = token_logprobs_and_entropy(
                logits,
                targets,
                with_entropy_grad=with_entropy_grad,
                valid_vocab_size=self.shape.vocab_size,
            )
        else:
            logp, ent = vocab_parallel_token_logprobs_and_entropy(
                logits,
                targets,
                vocab_start=self._ps.get_tensor_model_parallel_rank() * logits.shape[-1],
                group=self._ps.get_tensor_model_parallel_group(),
                with_entropy_grad=with_entropy_grad,
                valid_vocab_size=self.shape.vocab_size,
            )
        index = mb.gather_index.to(logp.device)
        return logp[index], ent[index]

    def _run(self, micro: list[PackedMicroBatch], loss_func: Any, forward_only: bool) -> list:
        from megatron.core.pipeline_parallel import get_forward_backward_func

        def forward_step(data_iterator: Any, model: torch.nn.Module) -> tuple:
            mb = next(data_iterator)
            device = next(model.parameters()).device
            output = model(
                mb.input_ids.to(device),
                mb.position_ids.to(device),
                None,  # the packed row's boundaries instead of an [S, S] mask
                packed_seq_params=packed_row_params(mb.cu_seqlens, mb.input_ids.shape[1]),
            )
            return output, partial(loss_func, mb)

        return get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=iter(micro),
            model=[self.ddp_model],
            num_microbatches=len(micro),
            seq_length=micro[0].input_ids.shape[1],
            micro_batch_size=1,
            forward_only=forward_only,
        )

    def _share_from_last_stage(self, obj: Any) -> Any:
        """``obj`` of the last pipeline stage, on every stage."""
        if self._ps.get_pipeline_model_parallel_world_size() == 1:
            return obj
        holder = [obj]
        src = self._ps.get_pipeline_model_parallel_last_rank()
        dist.broadcast_object_list(
            holder, src=src, group=self._ps.get_pipeline_model_parallel_group()
        )
        return holder[0]

    # ------------------------------------------------------------------ public API
    @torch.no_grad()
    def compute_logprobs_and_entropy(self, batch: SequenceBatch) -> StepStats:
        """Forward only: per-token log-probs and entropies of every response token.

        Returns them on every rank, ``[N, T]`` with zeros past each response, plus the mean
        entropies H_rl (online tokens) and H_sft (offline tokens).
        """
        self.model.eval()
        micro = self._micro_batches(batch)

        def loss_func(mb: PackedMicroBatch, logits: torch.Tensor) -> tuple:
            logp, ent = self._token_stats(logits, mb, with_entropy_grad=False)
            stats = {"rows": mb.rows, "logprobs": logp.cpu(), "entropy": ent.cpu()}
            return logits.new_zeros(()), torch.tensor(mb.real_tokens, dtype=torch.int), stats

        outputs = self._run(micro, loss_func, forward_only=True)
        n, t = len(batch), batch.max_response_length
        logprobs, entropy = torch.zeros(n, t), torch.zeros(n, t)
        if self.is_last_stage:
            for out in outputs:
                logprobs[out["rows"]] = out["logprobs"].float()
                entropy[out["rows"]] = out["entropy"].float()
        stacked = torch.stack([logprobs, entropy])
        device = "cuda" if torch.cuda.is_available() else "cpu"
        stacked = stacked.to(device)
        dist.all_reduce(stacked, group=self._ps.get_data_parallel_group())
        if self._ps.get_pipeline_model_parallel_world_size() > 1:
            dist.all_reduce(stacked, group=self._ps.get_pipeline_model_parallel_group())
        logprobs, entropy = stacked.cpu()
        mask = batch.response_mask
        return StepStats(
            logprobs=logprobs * mask,
            entropy=entropy * mask,
            h_rl=_masked_mean(entropy, mask & ~batch.is_offline[:, None]),
            h_sft=_masked_mean(entropy, mask & batch.is_offline[:, None]),
        )

    def train_step(
        self, batch: SequenceBatch, spec: LossSpec, ctx: StepContext
    ) -> dict[str, float]:
        """One optimizer step of ``spec`` on ``batch`` (which must carry ``old_logprobs``).

        Returns the step's metrics (loss terms, clip fractions, ratios, grad norm, lr, and
        ``skipped`` = 1 when non-finite gradients made the step a no-op).
        """
        if batch.old_logprobs is None:
            raise ValueError(
                "train_step needs batch.old_logprobs (see compute_logprobs_and_entropy)"
            )
        if "ref_logprobs" in spec.needs and batch.ref_logprobs is None:
            raise ValueError(f"loss {spec.name!r} needs batch.ref_logprobs")
        self.model.train()
        micro = self._micro_batches(batch)
        norm = GlobalNormalisers.from_batches(
            [(batch.response_mask, batch.is_offline)], batch.max_response_length
        )
        entropy_grad = "entropy_grad" in spec.needs

        def loss_func(mb: PackedMicroBatch, logits: torch.Tensor) -> tuple:
            logp, ent = self._token_stats(logits, mb, with_entropy_grad=entropy_grad)
            loss_batch = _loss_batch(batch, mb, logp, ent)
            loss, metrics = compute_loss(spec, loss_batch, norm, ctx)
            return loss, torch.tensor(mb.real_tokens, dtype=torch.int), metrics

        self.ddp_model.zero_grad_buffer()
        self.optimizer.zero_grad()
        outputs = self._run(micro, loss_func, forward_only=False)
        metrics = self._reduce_metrics(outputs if self.is_last_stage else [])
        return {**metrics, **self._optimizer_step()}

    # ------------------------------------------------------------------ internals
    def _reduce_metrics(self, local: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        local = [{k: v.detach().cpu() for k, v in m.items()} for m in local]
        gathered: list[Any] = [None] * self._ps.get_data_parallel_world_size()
        dist.all_gather_object(gathered, local, group=self._ps.get_data_parallel_group())
        merged = (
            reduce_metrics([m for part in gathered for m in part]) if self.is_last_stage else None
        )
        return self._share_from_last_stage(merged)

    def _optimizer_step(self) -> dict[str, float]:
        from megatron.core.distributed import finalize_model_grads

        finalize_model_grads([self.ddp_model])  # DP sum, tied-embedding sum across stages
        lr = self.optim_config.lr_at(self.steps_done)
        ok, grad_norm, _ = self.optimizer.step()  # at the lr the scheduler set
        if not ok:  # inf/NaN in some gradient, on any rank: no update
            return {names.GRAD_NORM: math.nan, names.LR: lr, names.SKIPPED: 1.0}
        self.scheduler.step(1)  # the next update's lr and weight decay
        return {names.GRAD_NORM: float(grad_norm), names.LR: lr, names.SKIPPED: 0.0}

    def sharded_state_dict(self, is_loading: bool = False) -> dict[str, Any]:
        """The model shard, optimizer state (``fully_reshardable``) and LR schedule position of
        this rank, for megatron's ``dist_checkpointing`` (resharded over TP, PP and DP)."""
        from nemo_red.models.dist_checkpoint import model_request
        from nemo_red.models.megatron_checkpointing import optimizer_sharded_state_dict

        model = model_request(self.model)
        return {
            "model": model,
            "optimizer": optimizer_sharded_state_dict(self.optimizer, model, is_loading),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_sharded_state_dict(self, state: dict[str, Any], schedule: bool = True) -> None:
        """Restores what ``dist_checkpointing.load`` read for :meth:`sharded_state_dict`.

        Args:
            state: the loaded state.
            schedule: restore the LR schedule's position too (False: it stays at 0).
        """
        from nemo_red.models.megatron_checkpointing import load_optimizer_state

        load_weights(self.model, state["model"])
        load_optimizer_state(self.optimizer, state["optimizer"])  # fp32 main weights, moments
        if schedule:
            self.scheduler.load_state_dict(state["scheduler"])
        else:
            self.scheduler.step(0)  # this run's lr and weight decay on the param groups


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    count = int(mask.sum())
    return float((values * mask).sum() / count) if count else math.nan


def _loss_batch(
    batch: SequenceBatch, mb: PackedMicroBatch, logp: torch.Tensor, ent: torch.Tensor
) -> LossBatch:
    rows, width = mb.rows, mb.gather_index.shape[1]
    device = logp.device
    assert batch.old_logprobs is not None  # train_step refuses a batch without them

    def field(t: torch.Tensor) -> torch.Tensor:
        return t[rows].to(device)

    return LossBatch(
        logprobs=logp,
        old_logprobs=batch.old_logprobs[rows, :width].to(device=device, dtype=logp.dtype),
        mask=mb.response_mask.to(device),
        is_offline=field(batch.is_offline),
        advantages=field(batch.advantages).to(logp.dtype),
        rewards=field(batch.rewards).to(logp.dtype),
        group_accuracy=field(batch.group_accuracy).to(logp.dtype),
        entropy=ent,
        ref_logprobs=None
        if batch.ref_logprobs is None
        else batch.ref_logprobs[rows, :width].to(device=device, dtype=logp.dtype),
    )
