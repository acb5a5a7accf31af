"""torchrun worker: two RED training steps of a tiny actor (Qwen2 unless ``--family``) under a
given TP x PP layout.

Every rank builds the same random HF model and the same step batch (seeded), trains, and
rank 0 writes the losses, metrics and the full parameters in HF layout (gathered from every
TP rank and pipeline stage), so layouts can be compared with a single process.
"""

import argparse
import os
import sys

import torch
import torch.distributed as dist

# per family: its tiny model's config extras (Qwen3 with head_dim != hidden / heads)
FAMILY_EXTRAS = {"qwen2": {}, "qwen3": {"head_dim": 12}}


def make_batch(vocab: int, seed: int = 0):
    from nemo_red.training.packing import SequenceBatch

    g = torch.Generator().manual_seed(seed)
    n = 8
    prompt = torch.randint(2, 5, (n,), generator=g)
    resp = torch.randint(1, 7, (n,), generator=g)
    tokens = [
        torch.randint(0, vocab, (int(p + r),), generator=g)
        for p, r in zip(prompt, resp, strict=True)
    ]
    return SequenceBatch(
        tokens=tokens,
        prompt_lengths=prompt,
        is_offline=torch.tensor([False, False, False, True] * 2),
        advantages=torch.randn(n, generator=g),
        rewards=torch.randint(0, 2, (n,), generator=g).float(),
        group_accuracy=torch.rand(n, generator=g),
    )


def _kill_during_save(step: int) -> None:
    """Makes the checkpoint of ``step`` die by SIGKILL after its first file is written."""
    import os
    import signal

    from nemo_red.training import checkpoint

    real_save = checkpoint._save

    def save(obj, path):
        record = real_save(obj, path)
        if f"step_{step:06d}.tmp" in str(path):
            os.kill(os.getpid(), signal.SIGKILL)
        return record

    checkpoint._save = save


class InPlaceWrites:
    """megatron's ``AsyncCallsQueue`` with each request's writes run when it is scheduled
    (megatron's background writer needs CUDA); its finalisation (the checkpoint's
    publication) waits for ``maybe_finalize_async_calls``, as on a GPU."""

    def __init__(self) -> None:
        self.pending = []

    def schedule_async_request(self, request) -> None:
        request = request.freeze()
        args = list(request.async_fn_args)
        if request.preload_fn:
            args[1] = request.preload_fn()
        if request.async_fn is not None:
            request.async_fn(*args, **request.async_fn_kwargs)
        self.pending.append(request)

    def maybe_finalize_async_calls(self, blocking: bool = False) -> None:
        dist.barrier()
        while self.pending:
            for finalize in self.pending.pop(0).finalize_fns:
                finalize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--pp", type=int, default=1)
    parser.add_argument("--tied", action="store_true")
    parser.add_argument("--family", default="qwen2", choices=sorted(FAMILY_EXTRAS))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--token-budget", type=int, default=24)
    parser.add_argument("--preset", default="red")
    parser.add_argument("--ckpt", help="checkpoint root: resume from it, save into it")
    parser.add_argument("--save-every", type=int, default=0)
    parser.add_argument("--stop-after", type=int, default=0, help="exit after N steps (0: all)")
    parser.add_argument("--kill-during-save-at", type=int, default=0, help="SIGKILL mid-save")
    parser.add_argument("--fresh-at", type=int, default=-1, help="fresh AdamW before step N")
    parser.add_argument("--async-save", action="store_true", help="CheckpointWriter, deferred")
    parser.add_argument(
        "--exit-before-publishing", action="store_true", help="exit with a save unpublished"
    )
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--lr", type=float, default=1e-3, help="constant when not 1e-3")
    parser.add_argument("--nan-step", type=int, default=-1, help="a NaN advantage at step N")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from nemo_red.algorithms import EntropyRegulator, StepContext, get_preset
    from nemo_red.training.parallel import ParallelLayout, init_distributed, shutdown_distributed

    init_distributed(ParallelLayout(args.tp, args.pp), seed=1)
    from megatron.core import parallel_state as ps

    from nemo_red.models.conversion import hf_to_megatron
    from nemo_red.models.families import ModelShape
    from nemo_red.models.megatron_checkpointing import distributed_optimizer
    from nemo_red.models.megatron_gpt import build_gpt_model
    from nemo_red.training.actor import MegatronActor
    from nemo_red.training.checkpoint import CheckpointWriter, latest_checkpoint, load_checkpoint
    from nemo_red.training.optim import OptimConfig, main_parameters
    from nemo_red.training.weights import full_hf_state_dict
    from tests.tiny_models import random_model

    hf = random_model(args.family, tied=args.tied, noise=0.05, **FAMILY_EXTRAS[args.family])
    config = hf.config
    shape = ModelShape.from_hf_config(config.to_dict())
    tp_rank, pp_rank = ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_rank()
    first, last = ps.is_pipeline_first_stage(), ps.is_pipeline_last_stage()
    dtype = getattr(torch, args.dtype)
    model = build_gpt_model(
        shape, args.tp, args.pp, pre_process=first, post_process=last, dtype=dtype
    )
    state = hf_to_megatron(hf.state_dict(), shape, args.tp, tp_rank, args.pp, pp_rank)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()})
    initial = {k: v.detach().clone() for k, v in model.named_parameters()}
    if args.lr == 1e-3:
        optim = OptimConfig(lr=1e-3, clip_grad=1.0, schedule="linear", total_steps=10, min_lr=1e-4)
    else:
        optim = OptimConfig(schedule="constant", lr=args.lr, clip_grad=1.0)
    actor = MegatronActor(model, shape, optim, token_budget=args.token_budget)
    regulator = EntropyRegulator(window=1, clip_low=0.0, clip_high=7.0)
    spec = get_preset(args.preset)
    if args.kill_during_save_at:
        _kill_during_save(args.kill_during_save_at)
    history, start = [], 0
    writer = None
    if args.ckpt:
        queue = InPlaceWrites() if args.async_save else None
        writer = CheckpointWriter(args.ckpt, keep=2, queue=queue)
    if args.ckpt and latest_checkpoint(args.ckpt) is not None:
        meta = load_checkpoint(latest_checkpoint(args.ckpt), actor, regulator)
        start, history = meta["data"]["next_step"], meta["extra"]["history"]
    for step in range(start, args.steps):
        if args.stop_after and step - start == args.stop_after:
            break
        batch = make_batch(61, seed=step)
        if step == args.fresh_at:
            actor.reset_optimizer_state()
            before = main_parameters(actor.optimizer, model)
        if step == args.nan_step:  # row 0 lands on one data-parallel rank only
            batch.advantages[0] = float("nan")
        stats = actor.compute_logprobs_and_entropy(batch)
        batch = batch.with_fields(old_logprobs=stats.logprobs)
        w = regulator.update(stats.h_rl, stats.h_sft).weight
        metrics = actor.train_step(batch, spec, StepContext(step=step, entropy_weight=w))
        history.append({"h_rl": stats.h_rl, "h_sft": stats.h_sft, "w": w, **metrics})
        if step == args.fresh_at:
            after = main_parameters(actor.optimizer, model)
            history[-1]["update"] = {k: after[k] - before[k] for k in after}
        if writer is not None and args.save_every and (step + 1) % args.save_every == 0:
            writer.save(step + 1, actor, regulator, {"next_step": step + 1}, {"history": history})
        elif writer is not None and not args.exit_before_publishing:
            writer.poll()
    if args.exit_before_publishing:
        dist.barrier()
        os._exit(0)  # as a kill: the last save is written, not published
    if writer is not None:
        writer.wait()

    params = full_hf_state_dict(actor)
    if dist.get_rank() == 0:
        result = {"history": history, "params": params, "regulator": regulator.state_dict()}
        if dist.get_world_size() == 1:  # this rank holds every shard: compare main weights
            result["initial"] = initial
            result["model"] = {k: v.detach().clone() for k, v in model.named_parameters()}
            result["main"] = main_parameters(actor.optimizer, model)
            inner = distributed_optimizer(actor.optimizer).optimizer
            result["adam_steps"] = sorted({float(st["step"]) for st in inner.state.values()})
        torch.save(result, args.out)
    shutdown_distributed()


if __name__ == "__main__":
    sys.exit(main())
