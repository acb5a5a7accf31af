"""The smallest layout of the actor that fits a number of GPUs.

Candidates split the GPUs into TP x PP x DP with TP a power of two within a node that
divides the query and KV heads and the MLP width, and PP dividing the layers; each is tried
with sequence parallelism (whenever TP > 1: it only shards what TP replicates) and with
recomputation none, selective, then full (uniform, one layer per chunk). "Smallest" orders
by model-parallel size TP x PP (the least communication), then the least recomputation
(the least extra compute), then the fewer pipeline stages (the smaller bubble).
"""

from __future__ import annotations

from collections.abc import Iterator

from nemo_red.planning.memory import EngineSetup, Layout, MemoryPlan, Workload, plan_memory
from nemo_red.planning.model_dims import ModelDims

__all__ = ["candidate_layouts", "smallest_fitting_layout"]

_RECOMPUTE_COST = {"none": 0, "selective": 1, "full": 2}


def candidate_layouts(
    dims: ModelDims,
    gpus: int,
    gpus_per_node: int = 8,
    tp: int | None = None,
    pp: int | None = None,
    sequence_parallel: bool | None = None,
    recompute: str | None = None,
) -> Iterator[Layout]:
    """Layouts of ``gpus`` GPUs, smallest first (fixed values restrict the search)."""
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    layouts = []
    tps = [t for t in _powers_of_two(min(gpus, gpus_per_node)) if tp in (None, t)]
    for t in tps:
        if dims.heads % t or dims.kv_heads % t or dims.ffn % t:
            continue
        for p in range(1, gpus // t + 1):
            if (gpus // t) % p or dims.layers % p or pp not in (None, p):
                continue
            sps = [sequence_parallel] if sequence_parallel is not None else [t > 1]
            modes = [recompute] if recompute else list(_RECOMPUTE_COST)
            for sp in sps:
                for mode in modes:
                    if sp and t == 1:
                        continue
                    layouts.append(
                        Layout(tp=t, pp=p, dp=gpus // (t * p), sequence_parallel=sp, recompute=mode)
                    )
    layouts.sort(key=lambda lay: (lay.tp * lay.pp, _RECOMPUTE_COST[lay.recompute], lay.pp))
    yield from layouts


def smallest_fitting_layout(
    dims: ModelDims,
    gpus: int,
    workload: Workload,
    engine: EngineSetup,
    gpu_bytes: int,
    reserve_bytes: int,
    **fixed: object,
) -> MemoryPlan | None:
    """The plan of the first candidate (see :func:`candidate_layouts`) that fits, or None."""
    for layout in candidate_layouts(dims, gpus, **fixed):  # type: ignore[arg-type]
        try:
            plan = plan_memory(dims, layout, workload, engine, gpu_bytes, reserve_bytes)
        except ValueError:  # e.g. the native engine under pipeline parallelism
            continue
        if plan.fits:
            return plan
    return None


def _powers_of_two(limit: int) -> list[int]:
    out, value = [], 1
    while value <= limit:
        out.append(value)
        value *= 2
    return out
