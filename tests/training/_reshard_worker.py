"""Worker: training checkpoints resumed under other layouts continue like uninterrupted runs.

Every layout trains the same tied-embedding tiny Qwen2 on the same batches (the RED preset,
AdamW with a linear LR decay, the entropy regulator). ``--phase save`` (under torchrun, 2
ranks) runs, one layout after another in the same processes: TP1 x DP2 and PP2 for 4 steps
with a checkpoint at step 2 (their uninterrupted runs), TP2 for 4 steps, then resumes the
TP1 x DP2 checkpoint under TP2 x DP1 and the PP2 checkpoint under PP1 x DP2 for the last 2
steps. ``--phase single`` (a world of one) runs 4 steps and resumes the TP1 x DP2
checkpoint (DP2 -> DP1, world size 2 -> 1). Rank 0 writes each run's full parameters
(HF layout), metrics, regulator state and LR per step. With ``--models``, model
checkpoints are first read under TP2 and PP2 and compared with the HF weights they were
written from.
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.distributed as dist

STEPS, SAVE_AT = 4, 2


def run(tp: int, pp: int, ckpt: Path, save: bool, resume: bool) -> dict:
    """Trains (or resumes and finishes) the 4-step run under TP ``tp`` x PP ``pp``."""
    from megatron.core import parallel_state as ps
    from megatron.core import tensor_parallel

    from nemo_red.algorithms import EntropyRegulator, StepContext, get_preset
    from nemo_red.models.conversion import hf_to_megatron
    from nemo_red.models.families import ModelShape
    from nemo_red.models.megatron_gpt import build_gpt_model
    from nemo_red.training.actor import MegatronActor
    from nemo_red.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from nemo_red.training.optim import OptimConfig
    from nemo_red.training.parallel import seed_everything
    from nemo_red.training.weights import full_hf_state_dict
    from tests.tiny_models import random_qwen2
    from tests.training._actor_worker import make_batch

    ps.destroy_model_parallel()
    ps.initialize_model_parallel(tp, pp)
    seed_everything(1)
    tensor_parallel.model_parallel_cuda_manual_seed(1)
    hf = random_qwen2(vocab=64, tied=True, noise=0.05)  # no TP pads 64 differently
    shape = ModelShape.from_hf_config(hf.config.to_dict())
    first, last = ps.is_pipeline_first_stage(), ps.is_pipeline_last_stage()
    model = build_gpt_model(shape, tp, pp, pre_process=first, post_process=last)
    tp_rank, pp_rank = ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_rank()
    model.load_state_dict(hf_to_megatron(hf.state_dict(), shape, tp, tp_rank, pp, pp_rank))
    optim = OptimConfig(lr=1e-3, clip_grad=1.0, schedule="linear", total_steps=10, min_lr=1e-4)
    actor = MegatronActor(model, shape, optim, token_budget=24)
    regulator = EntropyRegulator(window=1, clip_low=0.0, clip_high=7.0)
    history, start, at_checkpoint = [], 0, None
    if resume:
        meta = load_checkpoint(latest_checkpoint(ckpt), actor, regulator)
        start, history = meta["data"]["next_step"], meta["extra"]["history"]
        at_checkpoint = full_hf_state_dict(actor)
    for step in range(start, STEPS):
        batch = make_batch(61, seed=step)
        stats = actor.compute_logprobs_and_entropy(batch)
        batch = batch.with_fields(old_logprobs=stats.logprobs)
        w = regulator.update(stats.h_rl, stats.h_sft).weight
        metrics = actor.train_step(
            batch, get_preset("red"), StepContext(step=step, entropy_weight=w)
        )
        history.append({"h_rl": stats.h_rl, "h_sft": stats.h_sft, "w": w, **metrics})
        if save and step + 1 == SAVE_AT:
            extra = {"history": history}
            save_checkpoint(ckpt, step + 1, actor, regulator, {"next_step": step + 1}, extra)
            at_checkpoint = full_hf_state_dict(actor)
    params = full_hf_state_dict(actor)
    return {
        "history": history,
        "params": params,
        "at_checkpoint": at_checkpoint,
        "regulator": regulator.state_dict(),
    }


def load_model_checkpoints(directories: list[Path], hf_dir: Path) -> dict:
    """The largest difference to the HF weights of each model checkpoint read under TP2 and
    under PP2 (every TP shard and stage gathered back to the HF layout)."""
    from types import SimpleNamespace

    from megatron.core import parallel_state as ps

    from nemo_red.models.checkpoint_io import load_hf_state_dict, megatron_hf_config
    from nemo_red.models.dist_checkpoint import load_model
    from nemo_red.models.families import ModelShape
    from nemo_red.models.megatron_gpt import build_gpt_model
    from nemo_red.training.weights import full_hf_state_dict

    want = load_hf_state_dict(hf_dir)
    found = {}
    for tp, pp in ((2, 1), (1, 2)):
        ps.destroy_model_parallel()
        ps.initialize_model_parallel(tp, pp)
        for directory in directories:
            shape = ModelShape.from_hf_config(megatron_hf_config(directory))
            first, last = ps.is_pipeline_first_stage(), ps.is_pipeline_last_stage()
            model = build_gpt_model(shape, tp, pp, pre_process=first, post_process=last)
            load_model(model, directory)
            bare = SimpleNamespace(chunks=[model], shape=shape, gather_weights=lambda: None)
            got = full_hf_state_dict(bare)
            diff = max(float((got[k] - want[k]).abs().max()) for k in want)
            found[f"{directory.name} tp{tp} pp{pp}"] = (sorted(got) == sorted(want), diff)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", choices=("save", "single"), required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--models", type=Path, nargs="*", default=[], help="read under TP2, PP2")
    parser.add_argument("--hf", type=Path, help="the HF model the --models were written from")
    args = parser.parse_args()
    from nemo_red.training.parallel import ParallelLayout, init_distributed, shutdown_distributed

    init_distributed(ParallelLayout(), seed=1)
    out = {}
    dp2, pp2 = args.dir / "ckpt_tp1_dp2", args.dir / "ckpt_pp2"
    if args.models:
        out["model_loads"] = load_model_checkpoints(args.models, args.hf)
    if args.phase == "save":
        out["tp1_dp2"] = run(1, 1, dp2, save=True, resume=False)
        out["pp2"] = run(1, 2, pp2, save=True, resume=False)
        out["tp2"] = run(2, 1, args.dir / "unused", save=False, resume=False)
        out["tp1_dp2_to_tp2"] = run(2, 1, dp2, save=False, resume=True)
        out["pp2_to_pp1_dp2"] = run(1, 1, pp2, save=False, resume=True)
    else:
        out["single"] = run(1, 1, args.dir / "unused", save=False, resume=False)
        out["tp1_dp2_to_single"] = run(1, 1, dp2, save=False, resume=True)
    if dist.get_rank() == 0:
        torch.save(out, args.dir / f"{args.phase}.pt")
    shutdown_distributed()


if __name__ == "__main__":
    sys.exit(main())
