"""Makes megatron-core (0.16 - 0.19) run on a CPU-only torch.

megatron-core assumes CUDA in a few places that building, running and training a GPTModel
go through. Each patch below names the megatron code it works around. :func:`apply_cpu_patches`
applies them only when CUDA is unavailable, once per process; on a GPU it does nothing.
:data:`SAVE_PATCHES` do the same for saving dist checkpoints (``torch_dist``).
``tests/models/test_megatron_cpu.py`` checks in a fresh process that each patch is still
needed (the megatron call fails without it) and that it is applied, so a megatron upgrade
that fixes or moves one of these places shows up as a test failure.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

Undo = Callable[[], None]


@dataclass(frozen=True)
class CpuPatch:
    """One workaround: its name, the megatron code it works around, and how to apply it.

    ``apply()`` returns a function that undoes it (used by the tests).
    """

    name: str
    works_around: str
    apply: Callable[[], Undo]


def _set_attr(owner: object, name: str, value: object) -> Undo:
    original = getattr(owner, name)
    setattr(owner, name, value)
    return lambda: setattr(owner, name, original)


def _cpu_device() -> str:
    return "cpu"


def _patch_current_device() -> Undo:
    return _set_attr(torch.cuda, "current_device", _cpu_device)


class CpuRNGStatesTracker:
    """The model-parallel RNG tracker of megatron, keeping CPU generator states.

    ``fork(name)`` swaps the global CPU RNG state for the named one and back, like
    ``CudaRNGStatesTracker`` does with the CUDA state, so dropout in tensor-parallel regions
    draws from per-rank streams.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.states_: dict[str, torch.Tensor] = {}
        self.seeds_: set[int] = set()

    def is_initialized(self) -> bool:
        return bool(self.states_)

    def reset(self) -> None:
        self.states_ = {}
        self.seeds_ = set()

    def get_states(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.states_.items()}

    def set_states(self, states: dict[str, torch.Tensor]) -> None:
        self.states_ = {k: v.clone() for k, v in states.items()}

    def add(self, name: str, seed: int) -> None:
        if seed in self.seeds_:
            raise ValueError(f"seed {seed} already exists")
        if name in self.states_:
            raise ValueError(f"rng state {name} already exists")
        self.seeds_.add(seed)
        saved = torch.get_rng_state()
        torch.manual_seed(seed)
        self.states_[name] = torch.get_rng_state()
        torch.set_rng_state(saved)

    @contextlib.contextmanager
    def fork(self, name: str = "model-parallel-rng") -> Iterator[None]:
        if name not in self.states_:
            raise ValueError(f"rng state {name} is not added")
        saved = torch.get_rng_state()
        torch.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(saved)


def _patch_rng_tracker() -> Undo:
    from megatron.core.tensor_parallel import random as mcore_random

    def initialize_rng_tracker(*args: object, force_reset: bool = False, **kwargs: object) -> None:
        if force_reset or not mcore_random._CUDA_RNG_STATE_TRACKER_INITIALIZED:
            mcore_random._CUDA_RNG_STATE_TRACKER = CpuRNGStatesTracker()
            mcore_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True

    undo = _set_attr(mcore_random, "initialize_rng_tracker", initialize_rng_tracker)
    initialize_rng_tracker(force_reset=True)

    def undo_all() -> None:
        undo()
        mcore_random._CUDA_RNG_STATE_TRACKER = None
        mcore_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = False

    return undo_all


def _no_cuda_rng_state(*args: object, **kwargs: object) -> None:
    return None


def _patch_checkpoint_rng() -> Undo:
    # Without CUDA there is no CUDA generator to save or restore; the CPU generator and the
    # model-parallel tracker's states, which megatron saves alongside, are the whole state.
    from megatron.core.tensor_parallel import random as mcore_random

    return _undo_in_reverse(
        [
            _set_attr(mcore_random, "_get_cuda_rng_state", _no_cuda_rng_state),
            _set_attr(mcore_random, "_set_cuda_rng_state", _no_cuda_rng_state),
        ]
    )


def _tensor_stays(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return self


def _patch_tensor_cuda() -> Undo:
    # On a CPU-only torch .cuda() can only raise; leaving the tensor where it is, is what a
    # CPU run needs.
    return _set_attr(torch.Tensor, "cuda", _tensor_stays)


def _on_cpu(device: torch.device | str | int | None) -> torch.device | str | int | None:
    return "cpu" if device == "cuda" else device


class _TorchWithCpuDefault:
    """``torch`` as seen by one megatron module, with ``device="cuda"`` mapped to the CPU."""

    def __getattr__(self, name: str) -> object:
        return getattr(torch, name)

    @staticmethod
    def zeros(
        *args: Any, device: torch.device | str | int | None = None, **kwargs: Any
    ) -> torch.Tensor:
        # The sizes and the rest pass through to torch's own overloads.
        return torch.zeros(*args, device=_on_cpu(device), **kwargs)

    @staticmethod
    def tensor(
        data: Any, *, device: torch.device | str | int | None = None, **kwargs: Any
    ) -> torch.Tensor:
        # torch.tensor takes its data positionally and all else by keyword.
        return torch.tensor(data, device=_on_cpu(device), **kwargs)


def _undo_in_reverse(undos: list[Undo]) -> Undo:
    def undo_all() -> None:
        for undo in reversed(undos):
            undo()

    return undo_all


def _patch_module_torch(*modules: object) -> Undo:
    return _undo_in_reverse([_set_attr(m, "torch", _TorchWithCpuDefault()) for m in modules])


def _patch_schedule_devices() -> Undo:
    from megatron.core.pipeline_parallel import schedules

    return _patch_module_torch(schedules)


def _patch_optimizer_devices() -> Undo:
    from megatron.core import utils
    from megatron.core.optimizer import clip_grads, distrib_optimizer, grad_scaler, optimizer

    return _patch_module_torch(optimizer, distrib_optimizer, grad_scaler, clip_grads, utils)


_REAL_TENSOR_TYPE = torch.Tensor.type


def _type_named_as_cuda(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
    """``Tensor.type()`` naming a CPU tensor as its CUDA counterpart (no-argument form only)."""
    if args or kwargs or self.device.type != "cpu":
        return _REAL_TENSOR_TYPE(self, *args, **kwargs)
    return str(_REAL_TENSOR_TYPE(self)).replace("torch.", "torch.cuda.", 1)


def _reporting_cuda_types(function: Callable) -> Callable:
    """``function`` with ``Tensor.type()`` naming CPU tensors as CUDA ones during the call."""

    @functools.wraps(function)
    def wrapper(*args: object, **kwargs: object) -> object:
        # A monkeypatch: one function for all of Tensor.type's overloads.
        torch.Tensor.type = _type_named_as_cuda  # type: ignore[method-assign, assignment]
        try:
            return function(*args, **kwargs)
        finally:
            torch.Tensor.type = _REAL_TENSOR_TYPE  # type: ignore[method-assign]

    return wrapper


def _patch_optimizer_type_checks() -> Undo:
    from megatron.core.optimizer import distrib_optimizer, optimizer

    cls = distrib_optimizer.DistributedOptimizer
    return _undo_in_reverse(
        [
            _set_attr(cls, "__init__", _reporting_cuda_types(cls.__init__)),
            _set_attr(
                optimizer,
                "clip_grad_by_total_norm_fp32",
                _reporting_cuda_types(optimizer.clip_grad_by_total_norm_fp32),
            ),
        ]
    )


PATCHES: tuple[CpuPatch, ...] = (
    CpuPatch(
        "current_device",
        "torch.cuda.current_device() as the device of rotary embeddings and scratch buffers "
        "(megatron/core/models/common/embeddings/rotary_pos_embedding.py, "
        "megatron/core/utils.py GlobalMemoryBuffer)",
        _patch_current_device,
    ),
    CpuPatch(
        "rng_tracker",
        "CudaRNGStatesTracker.add/fork use CUDA RNG states "
        "(megatron/core/tensor_parallel/random.py); every attention forward enters fork()",
        _patch_rng_tracker,
    ),
    CpuPatch(
        "checkpoint_rng",
        "activation recomputation (tensor_parallel.checkpoint's CheckpointFunction) saves and "
        "restores the CUDA RNG state around each recomputed forward with "
        "_get_cuda_rng_state / _set_cuda_rng_state (megatron/core/tensor_parallel/random.py)",
        _patch_checkpoint_rng,
    ),
    CpuPatch(
        "tensor_cuda",
        "LanguageModule.setup_embeddings_and_output_layer moves the tied embedding to CUDA "
        "before all-reducing it between the first and last pipeline stages "
        "(megatron/core/models/common/language_module/language_module.py)",
        _patch_tensor_cuda,
    ),
    CpuPatch(
        "schedule_devices",
        'the forward-backward schedules count tokens in torch.zeros(..., device="cuda") '
        "(megatron/core/pipeline_parallel/schedules.py)",
        _patch_schedule_devices,
    ),
    CpuPatch(
        "optimizer_devices",
        "the mixed-precision / distributed optimizer and gradient clipping create flags and "
        'norms with torch.tensor(..., device="cuda") (megatron/core/optimizer/optimizer.py '
        "MixedPrecisionOptimizer.__init__, optimizer/grad_scaler.py, optimizer/clip_grads.py, "
        "megatron/core/utils.py local_multi_tensor_l2_norm)",
        _patch_optimizer_devices,
    ),
    CpuPatch(
        "optimizer_type_checks",
        "DistributedOptimizer sorts parameters by Tensor.type() in "
        "('torch.cuda.FloatTensor', 'torch.cuda.BFloat16Tensor', ...) and raises TypeError "
        "for CPU tensors (megatron/core/optimizer/distrib_optimizer.py "
        "_build_model_and_main_param_groups); clip_grad_by_total_norm_fp32 asserts "
        "grad.type() == 'torch.cuda.FloatTensor' (optimizer/clip_grads.py). Tensor.type() "
        "reports CUDA names during those two calls only",
        _patch_optimizer_type_checks,
    ),
)


def _no_sync(*args: object, **kwargs: object) -> None:
    """``torch.cuda.synchronize`` without CUDA: nothing runs asynchronously to wait for."""


def _patch_cuda_synchronize() -> Undo:
    return _set_attr(torch.cuda, "synchronize", _no_sync)


def _patch_save_results_queue() -> Undo:
    # A synchronous save runs megatron's writer in this process, so a process-local queue
    # carries the results; megatron's own is a proxy of a spawn-context Manager, whose
    # server process re-imports ``__main__`` (a script without a ``__main__`` guard would
    # run again in it) and takes a second or more to start on every save.
    import queue

    from megatron.core.dist_checkpointing.strategies import filesystem_async

    return _set_attr(filesystem_async, "_get_write_results_queue", queue.Queue)


SAVE_PATCHES: tuple[CpuPatch, ...] = (
    CpuPatch(
        "cuda_synchronize",
        "FileSystemWriterAsync.preload_tensors calls torch.cuda.synchronize() after staging "
        "the tensors to host memory, which raises on a CPU-only torch "
        "(megatron/core/dist_checkpointing/strategies/filesystem_async.py)",
        _patch_cuda_synchronize,
    ),
    CpuPatch(
        "save_results_queue",
        "_get_write_results_queue starts a spawn-context multiprocessing Manager for the "
        "writer's results (megatron/core/dist_checkpointing/strategies/filesystem_async.py); "
        "a synchronous save (the only kind on CPU) needs no other process",
        _patch_save_results_queue,
    ),
)
"""The patches that ``dist_checkpointing.save`` with the ``torch_dist`` strategy needs on
CPU (checked by ``tests/training/test_checkpoint_fixes.py``)."""

_APPLIED: dict[str, Undo] = {}


def apply_cpu_patches(force: bool = False, skip: tuple[str, ...] = ()) -> list[str]:
    """Applies the CPU patches once when CUDA is unavailable (or ``force``).

    Args:
        force: apply even when CUDA is available (tests only).
        skip: names of patches to leave out (tests only).

    Returns:
        The names of the patches in effect in this process.
    """
    if torch.cuda.is_available() and not force:
        return list(_APPLIED)
    for patch in PATCHES + SAVE_PATCHES:
        if patch.name not in _APPLIED and patch.name not in skip:
            _APPLIED[patch.name] = patch.apply()
    return list(_APPLIED)


def remove_cpu_patches() -> None:
    """Undoes every applied patch (tests only)."""
    while _APPLIED:
        _, undo = _APPLIED.popitem()
        undo()
