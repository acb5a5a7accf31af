"""Process groups: torch.distributed + megatron-core model parallelism, CPU or GPU.

Under ``torchrun`` the usual environment (RANK, WORLD_SIZE, MASTER_ADDR, ...) is used; a
plain ``python`` process becomes a world of one. The backend is NCCL with CUDA and gloo
without. The world is split into TP x PP x DP with megatron's ``parallel_state`` (with a
virtual pipeline of ``virtual_pp`` model chunks per stage when set).

:func:`transformer_config_kwargs` turns the memory-saving features of the config's
``parallel`` section into megatron ``TransformerConfig`` fields, for the one place a model's
``TransformerConfig`` is built.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from nemo_red.models.megatron_cpu import apply_cpu_patches
from nemo_red.training.config import ParallelConfig

T = TypeVar("T")


@dataclass(frozen=True)
class ParallelLayout:
    """Tensor- and pipeline-parallel sizes (and the virtual pipeline's chunks per stage);
    data parallelism takes the rest of the world."""

    tp: int = 1
    pp: int = 1
    virtual_pp: int | None = None

    def __post_init__(self) -> None:
        if self.tp < 1 or self.pp < 1:
            raise ValueError(f"tp and pp must be >= 1, got {self}")
        if self.virtual_pp is not None and (self.virtual_pp < 2 or self.pp < 2):
            raise ValueError(f"virtual_pp needs pp > 1 and must be >= 2, got {self}")

    @classmethod
    def of(cls, parallel: ParallelConfig) -> ParallelLayout:
        """The layout of the config's ``parallel`` section."""
        return cls(parallel.tp, parallel.pp, parallel.virtual_pp)


def transformer_config_kwargs(parallel: ParallelConfig | None) -> dict[str, Any]:
    """The megatron ``TransformerConfig`` fields of ``parallel``'s memory-saving features:
    sequence parallelism, activation recomputation and the virtual pipeline size (none for
    ``None``: the plain model)."""
    if parallel is None:
        return {}
    kwargs: dict[str, Any] = {"sequence_parallel": parallel.sequence_parallel}
    if parallel.recompute != "none":
        kwargs["recompute_granularity"] = parallel.recompute
    if parallel.recompute == "full":
        kwargs["recompute_method"] = parallel.recompute_method or "uniform"
        kwargs["recompute_num_layers"] = parallel.recompute_num_layers or 1
    if parallel.virtual_pp is not None:
        kwargs["virtual_pipeline_model_parallel_size"] = parallel.virtual_pp
    return kwargs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_distributed(layout: ParallelLayout, seed: int) -> None:
    """Initialises torch.distributed (if needed) and megatron's model-parallel groups.

    Raises:
        ValueError: when the world size is not a multiple of tp * pp.
    """
    from megatron.core import parallel_state, tensor_parallel

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        if "RANK" in os.environ:  # torchrun
            dist.init_process_group(backend)
        else:  # a world of one, without leaving torchrun's variables to child processes
            address = f"tcp://127.0.0.1:{_free_port()}"
            dist.init_process_group(backend, init_method=address, rank=0, world_size=1)
    apply_cpu_patches()
    world = dist.get_world_size()
    if world % (layout.tp * layout.pp):
        raise ValueError(f"world size {world} is not a multiple of tp*pp = {layout.tp * layout.pp}")
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            layout.tp, layout.pp, virtual_pipeline_model_parallel_size=layout.virtual_pp
        )
    seed_everything(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch the same on every rank (megatron initialises weights on
    CPU from torch's global generator, and every TP rank must draw the same full matrix)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def shutdown_distributed() -> None:
    """Destroys megatron's groups and the default process group."""
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


def on_rank0(fn: Callable[[], T]) -> T:
    """Runs ``fn`` on rank 0 only; every rank returns its result or raises its exception.

    So a check or a write done once (the run directory, generated data) that fails on
    rank 0 fails on every rank with the same message, instead of leaving the others
    waiting at the next collective.
    """
    box: list[Any] = [(None, None)]
    if dist.get_rank() == 0:
        try:
            box = [(fn(), None)]
        except Exception as err:
            box = [(None, err)]
    dist.broadcast_object_list(box, src=0)
    result, error = box[0]
    if error is not None:
        raise error
    return result
