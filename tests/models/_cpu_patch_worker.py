"""torchrun worker (2 ranks): each CPU patch is needed and, once applied, sufficient.

For every patch: with all the others applied, the megatron scenario it exists for must fail;
with all patches applied it must run. The scenario seeds megatron's model-parallel RNG,
recomputes a function through megatron's activation checkpointing on every rank, builds a
tied-embedding Qwen2 model with PP = 2 (the first-stage / last-stage embedding all-reduce),
wraps it in megatron's DistributedDataParallel with its DistributedOptimizer, runs one
forward-backward step through megatron's pipeline schedule and takes a clipped optimizer
step.
"""

import argparse
import json
import sys

import torch
import torch.distributed as dist


def scenario() -> None:
    """Recompute a checkpointed function, build a tied-embedding model with PP = 2, run one
    1F1B step and an optimizer step."""
    from megatron.core import parallel_state as ps
    from megatron.core import tensor_parallel
    from megatron.core.distributed import finalize_model_grads
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from nemo_red.models.families import ModelShape
    from nemo_red.models.megatron_gpt import build_gpt_model
    from nemo_red.training.optim import OptimConfig, build_optimizer

    ps.initialize_model_parallel(1, 2)
    try:
        tensor_parallel.model_parallel_cuda_manual_seed(3)
        # on every rank before any pipeline exchange, so a failure cannot strand the other
        x = torch.ones(3, requires_grad=True)
        tensor_parallel.checkpoint(lambda t: t * t, False, x).sum().backward()
        assert x.grad.tolist() == [2.0, 2.0, 2.0], x.grad
        shape = ModelShape("qwen2", 64, 32, 48, 2, 4, 2, 8, 1e-6, 10000.0, 32, True)
        first, last = ps.is_pipeline_first_stage(), ps.is_pipeline_last_stage()
        model = build_gpt_model(shape, 1, 2, pre_process=first, post_process=last)
        model.config.batch_p2p_sync = False
        model.config.calculate_per_token_loss = True
        ddp, optimizer = build_optimizer(
            model, OptimConfig(schedule="constant", lr=1e-3, clip_grad=1e-3)
        )
        causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)[None, None]

        def forward_step(data_iterator, model):
            ids = next(data_iterator)
            out = model(ids, torch.arange(5)[None], causal)
            return out, lambda o: (o.float().sum(), torch.tensor(5, dtype=torch.int), {})

        get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=iter([torch.randint(0, 64, (1, 5))]),
            model=[ddp],
            num_microbatches=1,
            seq_length=5,
            micro_batch_size=1,
        )
        finalize_model_grads([ddp])
        ok, grad_norm, _ = optimizer.step()
        assert ok, "the optimizer step was skipped"
        assert grad_norm > 1e-3, grad_norm  # so the gradients are clipped
    finally:
        ps.destroy_model_parallel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    from nemo_red.models.megatron_cpu import PATCHES, apply_cpu_patches, remove_cpu_patches

    report = {}
    for patch in PATCHES:
        apply_cpu_patches(skip=(patch.name,))
        try:
            scenario()
            report[patch.name] = "not needed"
        except Exception as err:  # the failure megatron raises without the patch
            report[patch.name] = f"needed: {type(err).__name__}: {str(err)[:120]}"
        remove_cpu_patches()
        dist.barrier()
    apply_cpu_patches()
    scenario()
    report["all_applied"] = "ok"
    if dist.get_rank() == 0:
        with open(args.out, "w") as handle:
            json.dump(report, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
