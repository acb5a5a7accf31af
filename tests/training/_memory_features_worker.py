"""torchrun worker (2 ranks): two RED steps of a tiny tied Qwen2 actor per parallel variant.

Each variant (a ``parallel`` config section) re-creates megatron's model-parallel groups,
builds the same random HF model into its layout, trains two steps on the same batches and
records the history, the full parameters in HF layout (gathered from every shard and
chunk) and evidence that the feature is in effect: core-attention calls per training step
(recomputation repeats them in the backward pass), the sequence length a decoder layer sees
(sequence parallelism splits it over TP), the model chunks and schedule (virtual pipeline),
and the DDP settings (overlap). The virtual-pipeline and overlapped-gathering variants also
save a checkpoint after the first step, which a fresh actor resumes; ``pp2_from_vpp2``
resumes the virtual pipeline's checkpoint without one (megatron reshards the chunks).
Rank 0 writes everything to ``--out``.
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.distributed as dist

VARIANTS = {
    "dp2": {},
    "dp2_overlap": {"overlap_grad_reduce": True, "overlap_param_gather": True},
    "dp2_full_uniform": {"recompute": "full", "recompute_method": "uniform"},
    "dp2_selective": {"recompute": "selective"},
    "tp2": {"tp": 2},
    "tp2_sp": {"tp": 2, "sequence_parallel": True},
    "tp2_sp_full_block": {
        "tp": 2,
        "sequence_parallel": True,
        "recompute": "full",
        "recompute_method": "block",
        "recompute_num_layers": 2,
    },
    "pp2": {"pp": 2},
    # a Qwen3 (per-head q/k norms, untied): sequence parallelism reaches every family
    "qwen3_tp2": {"family": "qwen3", "tp": 2},
    "qwen3_tp2_sp": {"family": "qwen3", "tp": 2, "sequence_parallel": True},
    "pp2_vpp2": {"pp": 2, "virtual_pp": 2},
    "pp2_vpp2_selective_overlap": {
        "pp": 2,
        "virtual_pp": 2,
        "recompute": "selective",
        "overlap_grad_reduce": True,
    },
    # the plain PP2 layout, resuming pp2_vpp2's checkpoint of its first step
    "pp2_from_vpp2": {"pp": 2, "resume_from": "pp2_vpp2"},
}


TOKEN_BUDGET = 24  # 3 micro-batches a step without DP: the interleaved schedule groups all 3


class AttentionCalls:
    """Counts the core-attention forward calls of the SDPA attention (recomputed ones too)."""

    def __init__(self) -> None:
        from nemo_red.models.sdpa_attention import SDPADotProductAttention

        self.count = 0
        real = SDPADotProductAttention.forward

        def counted(module, *args, **kwargs):
            self.count += 1
            return real(module, *args, **kwargs)

        SDPADotProductAttention.forward = counted


def build_actor(parallel, hf, shape):
    from megatron.core import parallel_state as ps

    from nemo_red.models.conversion import hf_to_megatron
    from nemo_red.models.megatron_gpt import build_gpt_model, load_weights
    from nemo_red.training.actor import MegatronActor
    from nemo_red.training.optim import OptimConfig

    tp, pp, chunks = parallel.tp, parallel.pp, parallel.model_chunks
    tp_rank, pp_rank = ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_rank()
    models = []
    for v in range(chunks):
        stage = v * pp + pp_rank
        model = build_gpt_model(
            shape,
            tp,
            pp,
            pre_process=stage == 0,
            post_process=stage == pp * chunks - 1,
            parallel=parallel,
            vp_stage=None if parallel.virtual_pp is None else v,
        )
        load_weights(model, hf_to_megatron(hf.state_dict(), shape, tp, tp_rank, pp * chunks, stage))
        models.append(model)
    optim = OptimConfig(lr=1e-3, clip_grad=1.0, schedule="linear", total_steps=10, min_lr=1e-4)
    return MegatronActor(models if chunks > 1 else models[0], shape, optim, TOKEN_BUDGET, parallel)


def train_step(actor, regulator, step: int) -> dict:
    from nemo_red.algorithms import StepContext, get_preset
    from tests.training._actor_worker import make_batch

    batch = make_batch(61, seed=step)
    stats = actor.compute_logprobs_and_entropy(batch)
    batch = batch.with_fields(old_logprobs=stats.logprobs)
    w = regulator.update(stats.h_rl, stats.h_sft).weight
    metrics = actor.train_step(batch, get_preset("red"), StepContext(step=step, entropy_weight=w))
    return {"h_rl": stats.h_rl, "h_sft": stats.h_sft, "w": w, **metrics}


def run_variant(name: str, options: dict, hf, shape, calls: AttentionCalls, ckpt: Path) -> dict:
    from megatron.core import parallel_state as ps
    from megatron.core import tensor_parallel
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from nemo_red.algorithms import EntropyRegulator
    from nemo_red.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from nemo_red.training.config import ParallelConfig
    from nemo_red.training.parallel import seed_everything
    from nemo_red.training.weights import full_hf_state_dict

    resume_from = options.pop("resume_from", None)
    parallel = ParallelConfig(**options)
    ps.initialize_model_parallel(
        parallel.tp, parallel.pp, virtual_pipeline_model_parallel_size=parallel.virtual_pp
    )
    seed_everything(1)
    tensor_parallel.model_parallel_cuda_manual_seed(1)
    actor = build_actor(parallel, hf, shape)
    regulator = EntropyRegulator(window=1, clip_low=0.0, clip_high=7.0)
    seen_lengths: list[int] = []
    layer = actor.chunks[0].decoder.layers[0]

    def record(module, args, kwargs):
        seen_lengths.append((args[0] if args else kwargs["hidden_states"]).shape[0])

    hook = layer.register_forward_pre_hook(record, with_kwargs=True)
    history, train_calls = [], []
    for step in range(2):
        saves = parallel.virtual_pp or parallel.overlap_param_gather
        if step == 1 and (saves or resume_from):  # resume the first step's checkpoint
            if resume_from is None:
                save_checkpoint(ckpt, 1, actor, regulator, {"next_step": 1}, {})
            hook.remove()
            actor = build_actor(parallel, hf, shape)
            regulator = EntropyRegulator(window=1, clip_low=0.0, clip_high=7.0)
            source = ckpt if resume_from is None else ckpt.with_name(resume_from)
            load_checkpoint(latest_checkpoint(source), actor, regulator)
        before = calls.count
        history.append(train_step(actor, regulator, step))
        train_calls.append(calls.count - before)
    hook.remove()
    params = full_hf_state_dict(actor)
    ddp = actor.ddp_chunks[0].ddp_config
    evidence = {
        "attention_calls": train_calls,  # logprob forward + train forward (+ recompute)
        "decoder_seq_lengths": sorted(set(seen_lengths)),
        "chunks": len(actor.chunks),
        "schedule": get_forward_backward_func().__name__,
        "overlap_grad_reduce": ddp.overlap_grad_reduce,
        "overlap_param_gather": ddp.overlap_param_gather,
        "tp": ps.get_tensor_model_parallel_world_size(),
        "pp": ps.get_pipeline_model_parallel_world_size(),
    }
    ps.destroy_model_parallel()
    dist.barrier()
    return {"history": history, "params": params, "evidence": evidence}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    from nemo_red.models.families import ModelShape
    from nemo_red.models.megatron_cpu import apply_cpu_patches
    from tests.tiny_models import random_model, random_qwen2

    apply_cpu_patches()
    models = {
        "qwen2": random_qwen2(tied=True, noise=0.05),
        "qwen3": random_model("qwen3", noise=0.05),
    }
    calls = AttentionCalls()
    results = {}
    ckpt = Path(args.out).with_suffix(".ckpt")
    for name in args.variants.split(","):
        options = dict(VARIANTS[name])
        hf = models[options.pop("family", "qwen2")]
        shape = ModelShape.from_hf_config(hf.config.to_dict())
        results[name] = run_variant(name, options, hf, shape, calls, ckpt / name)
    if dist.get_rank() == 0:
        torch.save(results, args.out)
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
