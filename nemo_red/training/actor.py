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

The memory-saving features of the config's ``parallel`` section act here as follows.
Sequence parallelism pads every packed row to a multiple of the tensor-parallel size (the
output layer gathers the sequence back, so the vocab-parallel token statistics see whole
rows). A virtual pipeline makes this rank hold several model chunks (``actor.chunks``;
``actor.model`` is then a ``ModuleList`` of them; checkpoints keep them as Megatron-LM
does, ``model0``, ``model1``, ...) and runs megatron's interleaved 1F1B schedule, which
needs at least one micro-batch per pipeline stage (the fullest are split to get there). Overlapped
gradient reduction hands megatron the DDP ``no_sync`` contexts, so the reduce-scatters start
during the last micro-batch's backward pass; with overlapped weight gathering the updated
weights arrive during the next forward pass, and anything that reads them before one (the
HF export, checkpoints) gathers them first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from nemo_red.algorithms.loss import compute_loss, population_token_means, reduce_metrics
from nemo_red.algorithms.loss_inputs import GlobalNormalisers, LossBatch, StepContext
from nemo_red.algorithms.presets import LossSpec
from nemo_red.algorithms.token_stats import (
    token_logprobs_and_entropy,
    vocab_parallel_token_logprobs_and_entropy,
)
from nemo_red.models.families import ModelShape
from nemo_red.models.megatron_gpt import load_weights
from nemo_red.models.sdpa_attention import packed_row_params
from nemo_red.monitoring import names
from nemo_red.training.config import ParallelConfig
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
        model: this rank's megatron ``GPTModel`` (stage and TP shard), or its model chunks
            in order under a virtual pipeline. The actor wraps them for data parallelism;
            ``actor.model`` stays the bare model (weights, export): the one ``GPTModel``, or
            a ``ModuleList`` of the chunks.
        shape: the architecture (for the true vocabulary size).
        optim: optimizer and schedule settings.
        token_budget: max tokens per packed micro-batch.
        parallel: the layout and memory-saving features the model was built with (default:
            none of them).
    """

    def __init__(
        self,
        model: torch.nn.Module | Sequence[torch.nn.Module],
        shape: ModelShape,
        optim: OptimConfig,
        token_budget: int,
        parallel: ParallelConfig | None = None,
    ) -> None:
        from megatron.core import parallel_state as ps

        self.chunks = list(model) if isinstance(model, Sequence) else [model]
        self.model = self.chunks[0] if len(self.chunks) == 1 else torch.nn.ModuleList(self.chunks)
        self.shape = shape
        self.optim_config = optim
        self.token_budget = token_budget
        self.parallel = parallel or ParallelConfig(
            tp=ps.get_tensor_model_parallel_world_size(),
            pp=ps.get_pipeline_model_parallel_world_size(),
        )
        if len(self.chunks) != self.parallel.model_chunks:
            raise ValueError(
                f"{len(self.chunks)} model chunks for parallel.virtual_pp "
                f"{self.parallel.virtual_pp}"
            )
        schedule_config: TransformerConfig = self.chunks[0].config  # what the schedule reads
        self._schedule_config = schedule_config
        built_with_sp = bool(schedule_config.sequence_parallel)
        if built_with_sp != self.parallel.sequence_parallel:
            raise ValueError(
                f"the model was built with sequence_parallel={built_with_sp}, but the actor's "
                f"parallel.sequence_parallel is {self.parallel.sequence_parallel}"
            )
        self._ps = ps
        for chunk in self.chunks:
            config: TransformerConfig = chunk.config  # a megatron module's config
            config.calculate_per_token_loss = True  # our losses divide by global counts
            config.batch_p2p_sync = False
            config.variable_seq_lengths = False
            if len(self.chunks) > 1:
                # The interleaved schedule sends activations and gradients both ways at once;
                # batched, two stages exchange same-shaped tensors in one group whose sends
                # and receives pair up in issue order, crossing activations with gradients.
                # Unbatched, megatron orders them by rank parity (Megatron-LM's default here).
                config.batch_p2p_comm = False
        self.ddp_chunks, self.optimizer = build_optimizer(self.chunks, optim, self.parallel)
        if self.parallel.overlap_grad_reduce:
            no_sync = [ddp.no_sync for ddp in self.ddp_chunks]
            schedule_config.no_sync_func = no_sync[0] if len(no_sync) == 1 else no_sync
        self.scheduler = build_scheduler(self.optimizer, optim)
        self._weights_pending = False  # updated weights not yet gathered (overlap_param_gather)

    @property
    def ddp_model(self) -> torch.nn.Module:
        """The data-parallel wrapper of the model (of its first chunk under a virtual
        pipeline; all of them are ``ddp_chunks``)."""
        return self.ddp_chunks[0]

    @property
    def steps_done(self) -> int:
        """Optimizer updates done (skipped steps not counted): the LR schedule's position."""
        return int(self.scheduler.num_steps)

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The full policy in the HF layout, gathered over TP and PP (collective): what
        rollout engines are refit from (``nemo_red.rollout.base.PolicyWeights``)."""
        from nemo_red.training.weights import full_hf_state_dict

        return full_hf_state_dict(self)

    def gather_weights(self) -> None:
        """Completes the all-gather of the weights the last step updated, which
        ``overlap_param_gather`` defers to the next forward pass; for code that reads the
        weights without one. A no-op when no step has updated them since the last forward
        pass or gather."""
        if self._weights_pending:
            for ddp in self.ddp_chunks:
                ddp.start_param_sync(force_sync=True)
            self._weights_pending = False

    # ------------------------------------------------------------------ plumbing
    @property
    def is_last_stage(self) -> bool:
        return self._ps.is_pipeline_last_stage()

    def _micro_batches(self, batch: SequenceBatch) -> list[PackedMicroBatch]:
        shard = (self._ps.get_data_parallel_rank(), self._ps.get_data_parallel_world_size())
        parallel = self.parallel
        return pack_step(
            batch,
            self.token_budget,
            shard,
            row_multiple=parallel.tp if parallel.sequence_parallel else 1,
            min_micro_batches=parallel.pp if parallel.virtual_pp else 1,
        )

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

        if len(self.chunks) > 1:  # each chunk reads the micro-batches in its own order
            data: Any = [iter(micro) for _ in self.chunks]
            group = interleaved_group_size(len(micro), self.parallel.pp)
            self._schedule_config.microbatch_group_size_per_vp_stage = group
        else:
            data = iter(micro)
        outputs = get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=data,
            model=self.ddp_chunks,
            num_microbatches=len(micro),
            seq_length=micro[0].input_ids.shape[1],
            micro_batch_size=1,
            forward_only=forward_only,
        )
        self._weights_pending = False  # the forward pre-hooks gathered every bucket
        return outputs

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
        self,
        batch: SequenceBatch,
        spec: LossSpec,
        ctx: StepContext,
        measure_entropy: bool = False,
    ) -> dict[str, float]:
        """One optimizer step of ``spec`` on ``batch`` (which must carry ``old_logprobs``
        when a term of ``spec`` reads them: ``"old_logprobs" in spec.needs``).

        Returns the step's metrics (loss terms, clip fractions, ratios, grad norm, lr, and
        ``skipped`` = 1 when non-finite gradients made the step a no-op); with
        ``measure_entropy`` also ``entropy/h_rl`` and ``entropy/h_sft``, the mean token
        entropies of the online and offline responses in this step's forward pass (before
        the update, so the values ``compute_logprobs_and_entropy`` gives).
        """
        if "old_logprobs" in spec.needs and batch.old_logprobs is None:
            raise ValueError(
                f"loss {spec.name!r} needs batch.old_logprobs (see compute_logprobs_and_entropy)"
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
            if measure_entropy:
                metrics.update(_entropy_shares(loss_batch, norm))
            return loss, torch.tensor(mb.real_tokens, dtype=torch.int), metrics

        for ddp in self.ddp_chunks:
            ddp.zero_grad_buffer()
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

        finalize_model_grads(self.ddp_chunks)  # DP sum, tied-embedding sum across stages
        lr = self.optim_config.lr_at(self.steps_done)
        ok, grad_norm, _ = self.optimizer.step()  # at the lr the scheduler set
        self._weights_pending = self.parallel.overlap_param_gather
        if not ok:  # inf/NaN in some gradient, on any rank: no update
            return {names.GRAD_NORM: math.nan, names.LR: lr, names.SKIPPED: 1.0}
        self.scheduler.step(1)  # the next update's lr and weight decay
        return {names.GRAD_NORM: float(grad_norm), names.LR: lr, names.SKIPPED: 0.0}

    def model_sharded_state_dict(self, saved: dict[str, Any] | None = None) -> dict[str, Any]:
        """The model part of a checkpoint as Megatron-LM keeps it: ``{"model": ...}``, or
        ``{"model0": ..., "model1": ...}`` per virtual-pipeline chunk (each chunk's sharded
        keys name its layers by their global number, so the checkpoint reshards over any
        ``virtual_pp``). ``saved``: keyed as that checkpoint's tensors
        (:func:`nemo_red.models.dist_checkpoint.model_request`)."""
        from nemo_red.models.dist_checkpoint import model_request

        return {
            key: model_request(chunk, saved)
            for key, chunk in zip(self._chunk_keys(), self.chunks, strict=True)
        }

    def _chunk_keys(self) -> list[str]:
        """The checkpoint keys of the model chunks (Megatron-LM's for a model list)."""
        if len(self.chunks) == 1:
            return ["model"]
        return [f"model{v}" for v in range(len(self.chunks))]

    def sharded_state_dict(self, is_loading: bool = False) -> dict[str, Any]:
        """The model shard, optimizer state (``fully_reshardable``) and LR schedule position of
        this rank, for megatron's ``dist_checkpointing`` (resharded over TP, PP, DP and virtual
        pipeline chunks)."""
        from nemo_red.models.megatron_checkpointing import optimizer_sharded_state_dict

        self.gather_weights()  # the saved weights (or the ones a load replaces) are complete
        models = self.model_sharded_state_dict()
        return {
            **models,
            "optimizer": optimizer_sharded_state_dict(self.optimizer, models, is_loading),
            "scheduler": self.scheduler.state_dict(),
        }

    def reset_optimizer_state(self) -> None:
        """Starts AdamW afresh: zero first and second moments and step counts on this rank's
        shard, as in a new run (the fp32 main weights and the LR schedule stay)."""
        from nemo_red.models.megatron_checkpointing import distributed_optimizer

        for state in distributed_optimizer(self.optimizer).optimizer.state.values():
            for value in state.values():
                if torch.is_tensor(value):
                    value.zero_()

    def load_sharded_state_dict(self, state: dict[str, Any], schedule: bool = True) -> None:
        """Restores what ``dist_checkpointing.load`` read for :meth:`sharded_state_dict`.

        Args:
            state: the loaded state.
            schedule: restore the LR schedule's position too (False: it stays at 0).
        """
        from nemo_red.models.megatron_checkpointing import load_optimizer_state

        for key, chunk in zip(self._chunk_keys(), self.chunks, strict=True):
            load_weights(chunk, state[key])
        load_optimizer_state(self.optimizer, state["optimizer"])  # fp32 main weights, moments
        if schedule:
            self.scheduler.load_state_dict(state["scheduler"])
        else:
            self.scheduler.step(0)  # this run's lr and weight decay on the param groups


def interleaved_group_size(num_micro_batches: int, pp: int) -> int:
    """The micro-batches megatron's interleaved schedule runs through one model chunk
    before the next (``microbatch_group_size_per_vp_stage``): the smallest group of at least
    ``pp`` whose last, partial group is empty or also of at least ``pp`` (the schedule's
    rule), so ``pp`` itself whenever it divides the count.

    Raises:
        ValueError: with fewer than ``pp`` micro-batches.
    """
    if num_micro_batches < pp:
        raise ValueError(f"the interleaved schedule needs >= {pp} micro-batches")
    return next(
        g
        for g in range(pp, num_micro_batches + 1)
        if num_micro_batches % g == 0 or num_micro_batches % g >= pp
    )


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    count = int(mask.sum())
    return float((values * mask).sum() / count) if count else math.nan


def _entropy_shares(batch: LossBatch, norm: GlobalNormalisers) -> dict[str, torch.Tensor]:
    """``entropy/h_rl`` and ``entropy/h_sft`` shares of one micro-batch (see train_step)."""
    assert batch.entropy is not None  # _token_stats always measures it
    keys = {"online": names.H_RL, "offline": names.H_SFT}
    means = population_token_means(batch.entropy, batch, norm)
    return {keys[on]: value for on, value in means.items()}


def _loss_batch(
    batch: SequenceBatch, mb: PackedMicroBatch, logp: torch.Tensor, ent: torch.Tensor
) -> LossBatch:
    rows, width = mb.rows, mb.gather_index.shape[1]
    device = logp.device
    old = batch.old_logprobs

    def field(t: torch.Tensor) -> torch.Tensor:
        return t[rows].to(device)

    return LossBatch(
        logprobs=logp,
        old_logprobs=None if old is None else old[rows, :width].to(device=device, dtype=logp.dtype),
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
