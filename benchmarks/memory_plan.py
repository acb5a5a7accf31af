"""Benchmark: the memory planner (``nemo-red plan``) against the actor's measured peak memory.

Runs the project's own actor (megatron GPTModel, DistributedDataParallel, DistributedOptimizer,
the fused log-prob / entropy kernels, the RED loss) on small random-weight Qwen2 shapes for
training steps, one process, and measures:

* ``state_bytes``: every live tensor's storage at rest after a step, counted once each
  (weights, the fp32 gradient buffer, the optimizer's main weights and Adam moments);
* ``peak_bytes``: the peak of torch's memory profiler timeline (``profile_memory=True``,
  every allocation and free of the step, tensors alive before it included) over one
  ``train_step`` after a warm-up step.

and compares them with ``plan_memory`` for the same shape, layout (TP = PP = DP = 1) and
micro-batch: ``state`` against ``state_bytes``, the ``training`` phase against
``peak_bytes``, and the activations + logits against ``peak_bytes - state_bytes``. The
recomputation variants set megatron's ``recompute_granularity`` on the model's config.
On a GPU (``--device cuda``, bf16) the peak is ``torch.cuda.max_memory_allocated()``.
Writes ``benchmarks/results/memory_plan_<device>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from actor import _batch  # noqa: E402  (the actor benchmark's random RED batch)
from bench_env import RESULTS, device_info, now, versions, write_result  # noqa: E402

# name -> (Qwen2 shape, sequences, tokens per sequence): one packed micro-batch per step
CASES: dict[str, tuple[dict[str, Any], int, int]] = {
    "activation_heavy": (
        {
            "vocab": 4096,
            "hidden": 256,
            "ffn": 688,
            "layers": 4,
            "heads": 8,
            "kv_heads": 2,
            "tied": True,
        },
        4,
        512,
    ),
    "weight_heavy": (
        {
            "vocab": 32000,
            "hidden": 512,
            "ffn": 1376,
            "layers": 2,
            "heads": 8,
            "kv_heads": 2,
            "tied": False,
        },
        2,
        256,
    ),
    # the GPU check's case (too slow for a CPU under the profiler)
    "qwen2.5-1.5b": (
        {
            "vocab": 151936,
            "hidden": 1536,
            "ffn": 8960,
            "layers": 28,
            "heads": 12,
            "kv_heads": 2,
            "tied": True,
        },
        2,
        2048,
    ),
    # a seconds-long case for smoke runs
    "smoke": (
        {
            "vocab": 512,
            "hidden": 64,
            "ffn": 160,
            "layers": 2,
            "heads": 4,
            "kv_heads": 2,
            "tied": True,
        },
        2,
        64,
    ),
}
CPU_CASES = ("activation_heavy", "weight_heavy")
RECOMPUTE_VARIANTS = ("none", "selective", "full")


def _shape(spec: dict[str, Any]) -> Any:
    from nemo_red.models.families import ModelShape

    return ModelShape(
        family="qwen2",
        vocab_size=spec["vocab"],
        hidden_size=spec["hidden"],
        intermediate_size=spec["ffn"],
        num_layers=spec["layers"],
        num_heads=spec["heads"],
        num_kv_heads=spec["kv_heads"],
        head_dim=spec["hidden"] // spec["heads"],
        rms_norm_eps=1e-6,
        rope_theta=1e4,
        max_position_embeddings=4096,
        tie_word_embeddings=spec["tied"],
    )


def live_tensor_bytes() -> int:
    """Bytes of the distinct storages of every tensor the garbage collector can reach."""
    gc.collect()
    seen: dict[int, int] = {}
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and obj.device.type != "meta":
                storage = obj.untyped_storage()
                seen[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, ReferenceError):  # storage-less tensors, dead weak proxies
            continue
    return sum(seen.values())


def _profiled_peak(step: Any) -> int:
    """The peak of the profiler's memory timeline over ``step()`` (CPU)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    with profile(
        activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True
    ) as prof:
        step()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
    return int(max(sum(row) for row in sizes))


def _recompute_fields(recompute: str) -> dict[str, Any]:
    """megatron's ``TransformerConfig`` fields of ``recompute`` (full: uniform, 1 layer)."""
    if recompute == "none":
        return {}
    fields: dict[str, Any] = {"recompute_granularity": recompute}
    if recompute == "full":
        fields.update(recompute_method="uniform", recompute_num_layers=1)
    return fields


def _cpu_rng_for_recomputation() -> None:
    """megatron's recomputation saves and restores the CUDA RNG state around each recomputed
    block; without CUDA, use the CPU generator's (dropout is off, so nothing draws)."""
    from megatron.core.tensor_parallel import random as mrandom

    if torch.cuda.is_available() or not hasattr(mrandom, "_get_cuda_rng_state"):
        return
    mrandom._get_cuda_rng_state = lambda *args, **kwargs: torch.get_rng_state()
    mrandom._set_cuda_rng_state = lambda *args, **kwargs: None


def measure(case: str, recompute: str = "none", device: str = "cpu") -> dict[str, Any]:
    """Measured and planned memory of one actor step of ``case`` (see the module docstring)."""
    from nemo_red.algorithms import StepContext, get_preset
    from nemo_red.models.megatron_gpt import build_gpt_model
    from nemo_red.planning.memory import EngineSetup, Layout, Workload, plan_memory
    from nemo_red.planning.model_dims import ModelDims
    from nemo_red.training.actor import MegatronActor
    from nemo_red.training.optim import OptimConfig
    from nemo_red.training.parallel import ParallelLayout, init_distributed

    spec, sequences, length = CASES[case]
    init_distributed(ParallelLayout(1, 1), seed=0)
    _cpu_rng_for_recomputation()
    shape = _shape(spec)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = build_gpt_model(shape, dtype=dtype, **_recompute_fields(recompute))
    if device == "cuda":
        model.cuda()
    tokens = sequences * length
    actor = MegatronActor(model, shape, OptimConfig(schedule="constant", lr=1e-5), tokens)
    batch = _batch(sequences, length, shape.vocab_size)
    stats = actor.compute_logprobs_and_entropy(batch)
    batch = batch.with_fields(old_logprobs=stats.logprobs)
    spec_red, ctx = get_preset("red"), StepContext(entropy_weight=2.0)

    def step() -> None:
        actor.train_step(batch, spec_red, ctx)

    step()  # warm-up: creates the Adam moments
    del stats
    state = live_tensor_bytes()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _profiled_peak(step)
    dims = ModelDims(
        f"qwen2-{case}",
        spec["layers"],
        spec["hidden"],
        spec["ffn"],
        spec["heads"],
        spec["kv_heads"],
        spec["hidden"] // spec["heads"],
        spec["vocab"],
        spec["tied"],
        qkv_bias=True,
    )
    workload = Workload(
        prompt_length=length // 4,
        response_length=length - length // 4,
        token_budget=tokens,
        dtype="bf16" if device == "cuda" else "fp32",
        device=device,
        entropy_grad="entropy_grad" in spec_red.needs,
    )
    plan = plan_memory(
        dims, Layout(recompute=recompute), workload, EngineSetup(name="native"), 2**40, 0
    )
    planned_peak = plan.phases["training"]
    return {
        "case": case,
        "recompute": recompute,
        "shape": spec,
        "tokens_per_micro_batch": tokens,
        "measured_state_bytes": state,
        "planned_state_bytes": int(plan.state),
        "state_error": plan.state / state - 1,
        "measured_peak_bytes": peak,
        "planned_peak_bytes": int(planned_peak),
        "peak_error": planned_peak / peak - 1,
        "measured_step_bytes": peak - state,
        "planned_step_bytes": int(planned_peak - plan.state),
        "step_error": (planned_peak - plan.state) / (peak - state) - 1,
        "planned_activations_bytes": int(plan.activations),
        "planned_logits_bytes": int(plan.logits),
    }


def measure_in_subprocess(case: str, recompute: str, device: str = "cpu") -> dict[str, Any]:
    """:func:`measure` in a fresh process (one model per process, nothing left over from
    another measurement); once more if torch's memory profiler rejects its own trace."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", case, recompute]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    for attempt in range(2):
        proc = subprocess.run(
            [*cmd, "--device", device], capture_output=True, text=True, env=env, check=False
        )
        if proc.returncode == 0:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        if attempt == 0 and "duplicate outputs" in proc.stderr:
            continue  # the memory profiler's data-flow check fails now and then
        break
    raise RuntimeError(f"{case} / {recompute} failed:\n{proc.stderr[-4000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--cases", default=",".join(CPU_CASES), help=f"of {', '.join(CASES)}")
    parser.add_argument("--recompute", default=",".join(RECOMPUTE_VARIANTS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "RECOMPUTE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        torch.set_num_threads(1)
        print(json.dumps(measure(*args.worker, device=args.device)))
        return
    runs = []
    for case in args.cases.split(","):
        for recompute in args.recompute.split(","):
            runs.append(measure_in_subprocess(case, recompute, args.device))
            row = runs[-1]
            print(
                f"{case:18s} {recompute:9s} peak measured {row['measured_peak_bytes'] / 2**20:8.1f}"
                f" MiB planned {row['planned_peak_bytes'] / 2**20:8.1f} MiB "
                f"({100 * row['peak_error']:+.1f}%), state {100 * row['state_error']:+.1f}%, "
                f"step {100 * row['step_error']:+.1f}%",
                flush=True,
            )
    result = {
        "benchmark": "memory planner vs measured peak memory of the actor's training step",
        "date": now(),
        "device": device_info(args.device),
        "versions": versions("megatron-core"),
        "method": "state: live tensor storages at rest; peak: torch profiler memory timeline "
        "(CPU) or torch.cuda.max_memory_allocated (CUDA) over one train_step after a warm-up",
        "runs": runs,
        "max_abs_peak_error": max(abs(r["peak_error"]) for r in runs),
    }
    write_result(result, args.out or RESULTS / f"memory_plan_{args.device}.json")


if __name__ == "__main__":
    main()
