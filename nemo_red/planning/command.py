"""``nemo-red plan``: memory per GPU of a layout, whether it fits, and the smallest that does.

With ``--tp`` / ``--pp`` (and the other layout options) the command plans that layout and
also searches, among the layouts of ``--gpus`` GPUs that keep the options given, the
smallest that fits; without them it plans the smallest that fits. Exit status 0 when the
planned layout fits, 1 when nothing fits (the closest layout is shown).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from nemo_red.planning.memory import (
    GPUS,
    EngineSetup,
    GiB,
    Layout,
    MemoryPlan,
    Workload,
    plan_memory,
)
from nemo_red.planning.model_dims import NAMED_MODELS, ModelDims, resolve_model
from nemo_red.planning.search import candidate_layouts, smallest_fitting_layout

__all__ = ["add_plan_parser", "format_plan", "run_plan"]

_ROWS = (
    ("weights", "weights (training dtype)"),
    ("gradients", "gradients (fp32 buffer)"),
    ("main_weights", "fp32 main weights (/DP)"),
    ("optimizer_states", "Adam moments (fp32, /DP)"),
    ("activations", "activations (in flight)"),
    ("recompute_working", "recomputed chunk (full)"),
    ("logits", "logits + their gradient"),
    ("optimizer_scratch", "optimizer step scratch"),
    ("engine_weights", "rollout engine weights"),
    ("kv_cache", "rollout engine KV cache"),
)


def add_plan_parser(sub: Any) -> argparse.ArgumentParser:
    """Adds the ``plan`` subcommand to ``nemo-red``'s subparsers."""
    p = sub.add_parser(
        "plan",
        help="memory per GPU of a model and layout, whether it fits, the smallest that fits",
        description=(
            "Memory per GPU of the actor (weights, fp32 gradients, main weights and Adam "
            "moments under the distributed optimizer, activations, logits) and of the rollout "
            "engine (weights, KV cache), per phase of a step; whether it fits the GPU; and "
            "the smallest TP x PP x DP layout (with sequence parallelism and recomputation) "
            "that fits --gpus GPUs."
        ),
    )
    p.add_argument(
        "--model",
        required=True,
        help=f"a HF checkpoint directory / config.json, or one of: {', '.join(NAMED_MODELS)}",
    )
    p.add_argument("--gpus", type=int, required=True, help="GPUs of the run")
    p.add_argument("--gpu", choices=sorted(GPUS), default="h100", help="H100 80 GB, H200 141 GB")
    p.add_argument("--gpu-memory", type=float, help="GPU memory in GiB (instead of --gpu)")
    p.add_argument("--reserve", type=float, default=3.0, help="GiB kept free (CUDA, NCCL)")
    p.add_argument("--gpus-per-node", type=int, default=8, help="largest TP searched")
    p.add_argument("--tp", type=int, help="tensor-parallel size")
    p.add_argument("--pp", type=int, help="pipeline stages")
    p.add_argument("--vpp", type=int, default=1, help="virtual stages per pipeline stage")
    p.add_argument("--sp", action=argparse.BooleanOptionalAction, help="sequence parallelism")
    p.add_argument("--recompute", choices=["none", "selective", "full"])
    p.add_argument("--recompute-method", choices=["uniform", "block"], default="uniform")
    p.add_argument("--recompute-num-layers", type=int, default=1)
    p.add_argument("--prompt-length", type=int, default=1024)
    p.add_argument("--response-length", type=int, default=8192)
    p.add_argument(
        "--token-budget", type=int, help="tokens per micro-batch (default: one sequence)"
    )
    p.add_argument(
        "--micro-batches",
        type=int,
        help="micro-batches per step on a DP rank (default: enough to fill the pipeline)",
    )
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument(
        "--fused-adam",
        action="store_true",
        help="megatron has Transformer Engine's / apex's fused Adam (the NGC image): no "
        "optimizer scratch",
    )
    p.add_argument("--engine", default="vllm", help="rollout engine (rollout.engine)")
    p.add_argument(
        "--engine-memory-fraction",
        type=float,
        help="vLLM gpu_memory_utilization (default 0.5) / TensorRT-LLM free_gpu_memory_fraction "
        "(default 0.9)",
    )
    p.add_argument("--engine-batch-size", type=int, default=64, help="native / hf decode batch")
    p.add_argument(
        "--engine-tp", type=int, help="the engine's tensor parallelism (default: the actor's TP)"
    )
    p.add_argument(
        "--no-engine-sleep",
        action="store_true",
        help="the engine stays awake while the actor trains (rollout.sleep_while_training=false)",
    )
    p.add_argument("--json", action="store_true", help="print the plans as JSON")
    p.set_defaults(func=run_plan)
    return p


def run_plan(args: argparse.Namespace) -> int:
    """Runs ``nemo-red plan``; 0 when the planned layout fits, 1 otherwise."""
    dims = resolve_model(args.model)
    gpu_bytes = int(args.gpu_memory * GiB) if args.gpu_memory else GPUS[args.gpu]
    reserve = int(args.reserve * GiB)
    workload = Workload(
        prompt_length=args.prompt_length,
        response_length=args.response_length,
        token_budget=args.token_budget,
        dtype=args.dtype,
        fused_adam=args.fused_adam,
        micro_batches=args.micro_batches,
    )
    engine = EngineSetup(
        name=args.engine,
        memory_fraction=args.engine_memory_fraction,
        batch_size=args.engine_batch_size,
        tensor_parallel_size=args.engine_tp,
        sleep_while_training=not args.no_engine_sleep,
    )
    requested = None
    if args.tp is not None or args.pp is not None:
        tp, pp = args.tp or 1, args.pp or 1
        if args.gpus % (tp * pp):
            raise ValueError(f"--gpus {args.gpus} is not a multiple of tp x pp = {tp * pp}")
        layout = Layout(
            tp=tp,
            pp=pp,
            dp=args.gpus // (tp * pp),
            vpp=args.vpp,
            sequence_parallel=bool(args.sp),
            recompute=args.recompute or "none",
            recompute_method=args.recompute_method,
            recompute_num_layers=args.recompute_num_layers,
        )
        requested = plan_memory(dims, layout, workload, engine, gpu_bytes, reserve)
    fixed = {"sequence_parallel": args.sp, "recompute": args.recompute}
    fixed = {k: v for k, v in fixed.items() if v is not None}
    best = smallest_fitting_layout(
        dims,
        args.gpus,
        workload,
        engine,
        gpu_bytes,
        reserve,
        gpus_per_node=args.gpus_per_node,
        **fixed,
    )
    closest = best or _closest(dims, args.gpus, workload, engine, gpu_bytes, reserve, args, fixed)
    if args.json:
        print(
            json.dumps(
                {
                    "requested": None if requested is None else requested.to_dict(),
                    "smallest_fitting": None if best is None else best.to_dict(),
                    "closest": None if best is not None or closest is None else closest.to_dict(),
                },
                indent=2,
            )
        )
    else:
        print(_header(dims, args, gpu_bytes))
        if requested is not None:
            print("\n" + format_plan(requested, "requested layout"))
        if best is not None:
            print("\n" + format_plan(best, f"smallest layout that fits {args.gpus} GPUs"))
        elif closest is not None:
            print(f"\nno layout of {args.gpus} GPUs fits; the closest:")
            print(format_plan(closest, "closest layout"))
    shown = requested if requested is not None else best
    return 0 if shown is not None and shown.fits else 1


def _closest(
    dims: ModelDims,
    gpus: int,
    workload: Workload,
    engine: EngineSetup,
    gpu_bytes: int,
    reserve: int,
    args: argparse.Namespace,
    fixed: dict[str, Any],
) -> MemoryPlan | None:
    plans = []
    for layout in candidate_layouts(dims, gpus, args.gpus_per_node, **fixed):
        try:
            plans.append(plan_memory(dims, layout, workload, engine, gpu_bytes, reserve))
        except ValueError:
            continue
    return min(plans, key=lambda p: p.peak, default=None)


def _header(dims: ModelDims, args: argparse.Namespace, gpu_bytes: int) -> str:
    return (
        f"{dims.name}: {dims.total_parameters() / 1e9:.2f}B parameters, {dims.layers} layers, "
        f"hidden {dims.hidden}, MLP {dims.ffn}, {dims.heads}/{dims.kv_heads} heads x "
        f"{dims.head_dim}, vocab {dims.vocab}{', tied' if dims.tied_embeddings else ''}\n"
        f"{args.gpus} GPUs of {gpu_bytes / GiB:.1f} GiB; sequences {args.prompt_length} + "
        f"{args.response_length} tokens; engine {args.engine}"
    )


def format_plan(plan: MemoryPlan, title: str) -> str:
    """A readable table of ``plan`` (GiB per GPU)."""
    lay = plan.layout
    lines = [
        f"{title}: {lay.describe()} (stage: {plan.stage}; "
        f"{plan.parameters_per_gpu / 1e9:.3f}B parameters per GPU; "
        f"{plan.workload.tokens} tokens per micro-batch)",
        f"  {'':32s}{'GiB':>9s}",
    ]
    for key, label in _ROWS:
        lines.append(f"  {label:32s}{getattr(plan, key) / GiB:9.2f}")
    if plan.kv_cache <= 0:
        lines.append("  (the engine's share does not even hold its weights)")
    else:
        lines.append(f"  {'KV cache holds (tokens)':32s}{plan.kv_cache_tokens:9d}")
    lines.append(f"  {'peak by phase':32s}")
    for phase, value in plan.phases.items():
        lines.append(f"    {phase:30s}{value / GiB:9.2f}")
    verdict = "fits" if plan.fits else "does NOT fit"
    lines.append(
        f"  peak {plan.peak / GiB:.2f} + reserve {plan.reserve_bytes / GiB:.1f} of "
        f"{plan.gpu_bytes / GiB:.1f} GiB: {verdict}"
        + ("" if plan.engine_awake_while_training else " (engine asleep while training)")
    )
    return "\n".join(lines)
