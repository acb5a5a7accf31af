"""Worker (a world of one): each fix that megatron's torch_dist checkpoints need here is
needed, and all of them together suffice.

For every fix of ``megatron_checkpointing.OPTIMIZER_FIXES`` and every CPU patch of
``megatron_cpu.SAVE_PATCHES``, the scenario it exists for runs once without it (it must
fail) and once with everything applied (it must pass). Writes a JSON report.

The optimizer scenario: a model whose gradient buffer has several buckets (so padding
between them) takes one AdamW step and is saved with its DistributedOptimizer state
(``fully_reshardable``); a fresh model and optimizer load it, and both take one more step.
The loaded fp32 main weights and moments must equal the saved ones, and after the step both
must agree, with Adam's step count 2 on every parameter.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist


def _build(seed: int):
    from megatron.core import tensor_parallel
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    from nemo_red.models.families import ModelShape
    from nemo_red.models.megatron_gpt import build_gpt_model

    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)
    model = build_gpt_model(ModelShape("qwen2", 64, 32, 48, 2, 4, 2, 8, 1e-6, 10000.0, 32, False))
    model.config.calculate_per_token_loss = True
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        use_distributed_optimizer=True,
        overlap_grad_reduce=True,  # megatron buckets only then
        bucket_size=3000,
    )
    ddp = DistributedDataParallel(model.config, ddp_config, model)
    assert len(ddp.buffers[0].buckets) > 1, "the scenario needs several buckets"
    optimizer = get_megatron_optimizer(
        OptimizerConfig(optimizer="adam", lr=1e-2, loss_scale=1.0, use_distributed_optimizer=True),
        [ddp],
    )
    return model, ddp, optimizer


def _step(ddp, optimizer, seed: int) -> None:
    from megatron.core.distributed import finalize_model_grads

    ddp.zero_grad_buffer()
    optimizer.zero_grad()
    ids = torch.randint(0, 64, (1, 6), generator=torch.Generator().manual_seed(seed))
    causal = torch.triu(torch.ones(6, 6, dtype=torch.bool), 1)[None, None]
    ddp(ids, torch.arange(6)[None], causal).float().square().mean().backward()
    finalize_model_grads([ddp])
    ok, _, _ = optimizer.step()
    assert ok


def _states(optimizer, model) -> dict:
    from nemo_red.models.megatron_checkpointing import distributed_optimizer

    inner = distributed_optimizer(optimizer)
    out = {}
    for name, param in model.named_parameters():
        group, order = inner.model_param_group_index_map[param]
        main = inner.optimizer.param_groups[group]["params"][order]
        state = inner.optimizer.state[main]
        out[name] = {"param": main.detach().clone(), **{k: v.clone() for k, v in state.items()}}
    return out


def optimizer_scenario(skip: tuple[str, ...]) -> None:
    """Save after one step, load into a fresh optimizer, step both once more."""
    from nemo_red.models.dist_checkpoint import model_request
    from nemo_red.models.megatron_checkpointing import (
        load_optimizer_state,
        load_sharded,
        optimizer_sharded_state_dict,
        save_sharded,
    )
    from nemo_red.models.megatron_gpt import load_weights

    model, ddp, optimizer = _build(seed=1)
    _step(ddp, optimizer, seed=0)
    with tempfile.TemporaryDirectory() as directory:
        sharded = model_request(model)
        state = {
            "model": sharded,
            "optimizer": optimizer_sharded_state_dict(optimizer, sharded, False, skip),
        }
        save_sharded(state, Path(directory))
        saved = _states(optimizer, model)
        fresh, fresh_ddp, fresh_optimizer = _build(seed=2)
        request = model_request(fresh)
        loaded = load_sharded(
            {
                "model": request,
                "optimizer": optimizer_sharded_state_dict(fresh_optimizer, request, True, skip),
            },
            Path(directory),
        )
    load_weights(fresh, loaded["model"])
    load_optimizer_state(fresh_optimizer, loaded["optimizer"], skip)
    for name, want in _states(fresh_optimizer, fresh).items():
        for key in ("param", "exp_avg", "exp_avg_sq"):
            if not torch.equal(want[key], saved[name][key]):
                raise AssertionError(f"{name} {key} differs after loading")
    _step(ddp, optimizer, seed=1)
    _step(fresh_ddp, fresh_optimizer, seed=1)
    for name, want in _states(fresh_optimizer, fresh).items():
        if float(want["step"]) != 2.0:
            raise AssertionError(f"{name}: Adam step {float(want['step'])} after 2 steps")
        if not torch.equal(want["param"], _states(optimizer, model)[name]["param"]):
            raise AssertionError(f"{name}: the next step differs")


def save_scenario() -> None:
    """A torch_dist save that must not start a spawn-context Manager process."""
    import multiprocessing

    from megatron.core.dist_checkpointing.strategies import filesystem_async

    from nemo_red.models.dist_checkpoint import model_request
    from nemo_red.models.megatron_checkpointing import save_sharded

    model, _, _ = _build(seed=1)
    filesystem_async._results_queue = None
    before = set(multiprocessing.active_children())
    with tempfile.TemporaryDirectory() as directory:
        save_sharded({"model": model_request(model)}, Path(directory))
    started = set(multiprocessing.active_children()) - before
    if started or filesystem_async._results_queue is not None:
        raise AssertionError(f"the save started {started or 'a Manager'} for its results")


def psutil_report() -> str:
    """Whether megatron's writer still needs psutil, and whether a save refuses without it."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    from nemo_red.models.megatron_checkpointing import require_psutil

    assert filesystem_async.HAVE_PSUTIL, "psutil is a dependency"
    filesystem_async.HAVE_PSUTIL = False
    try:
        try:
            filesystem_async._process_memory()  # what each writer process calls
            return "not needed"
        except RuntimeError:
            pass
        try:
            require_psutil()
            return "needed, but a save does not refuse to start without it"
        except ImportError as err:
            return f"needed: {err}"
    finally:
        filesystem_async.HAVE_PSUTIL = True


def _outcome(scenario, *args) -> str:
    try:
        scenario(*args)
        return "not needed"
    except Exception as err:  # what megatron does without the fix
        return f"needed: {type(err).__name__}: {str(err)[:160]}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    from nemo_red.models.megatron_checkpointing import OPTIMIZER_FIXES
    from nemo_red.models.megatron_cpu import SAVE_PATCHES, apply_cpu_patches, remove_cpu_patches
    from nemo_red.training.parallel import ParallelLayout, init_distributed, shutdown_distributed

    init_distributed(ParallelLayout(), seed=1)
    report = {"psutil": psutil_report()}
    for fix in OPTIMIZER_FIXES:
        report[fix] = _outcome(optimizer_scenario, (fix,))
    for patch in SAVE_PATCHES:
        remove_cpu_patches()
        apply_cpu_patches(skip=(patch.name,))
        report[patch.name] = _outcome(save_scenario)
        remove_cpu_patches()
        apply_cpu_patches()
    optimizer_scenario(())
    save_scenario()
    report["all_applied"] = "ok"
    Path(args.out).write_text(json.dumps(report, indent=2))
    dist.barrier()
    shutdown_distributed()


if __name__ == "__main__":
    sys.exit(main())
