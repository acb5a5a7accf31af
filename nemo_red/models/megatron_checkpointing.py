"""megatron-core ``dist_checkpointing`` (``torch_dist``) as this project uses it.

Saving and loading go through megatron's own code; three places need help, each named below
and checked by ``tests/training/test_checkpoint_fixes.py`` (a fix that stops being needed,
or stops being applied, fails that test):

* ``psutil`` must be importable: megatron's writer processes measure their memory with it,
  and without it each one fails before signalling completion, so the saving rank waits in
  ``count_queue.join()`` forever (:func:`require_psutil` refuses to start a save instead).
* On CPU, :data:`nemo_red.models.megatron_cpu.SAVE_PATCHES` (``torch.cuda.synchronize``,
  and the spawn-context Manager of the writer's results).
* DistributedOptimizer's ``fully_reshardable`` state (the one sharding type that reshards
  over TP, PP and DP; ``fully_sharded_model_space``, the default, fails to save with
  ``ShardedTensor.flattened_range is not supported``, and ``dp_reshardable`` reshards over
  DP only) loads into a fresh optimizer after :data:`OPTIMIZER_FIXES`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

SHARDING_TYPE = "fully_reshardable"
OPTIMIZER_FIXES = ("init_state", "bucket_offsets", "present_keys", "own_step")
"""``init_state``: a fresh Adam has no state (nor one that has not stepped yet), and
megatron's ``state_dict()`` (called while building the save and the load dict) asserts that
every parameter has one ``step``; the state is allocated first. ``bucket_offsets``:
``get_parameter_state_dp_zero`` concatenates the buckets of a gradient buffer without the
padding between them, but ``sharded_param_state_fully_reshardable`` slices the result at the
parameters' padded buffer positions, so every parameter after a second bucket is saved
shifted (the tied output layer of the last pipeline stage has a bucket of its own, so this
hits every PP > 1 run with tied embeddings); the buckets are put back at their offsets.
``present_keys``: ``_set_main_param_and_optimizer_states`` copies every key
of the parameter's optimizer state, ``step`` included, from a checkpoint entry that has no
``step``; only the keys present are copied. ``own_step``: ``load_state_dict`` gives every
parameter the same ``step`` tensor, and torch's Adam increments each parameter's in place, so
the count would advance once per parameter per step; each gets its own copy."""


def require_psutil() -> None:
    """Raises ImportError naming the fix when ``psutil`` is missing (a save would hang)."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if not filesystem_async.HAVE_PSUTIL:
        raise ImportError(
            "megatron's checkpoint writer needs psutil (without it a save never returns): "
            "pip install psutil"
        )


def distributed_optimizer(optimizer: Any) -> Any:
    """The one DistributedOptimizer inside megatron's (possibly chained) optimizer."""
    inner = getattr(optimizer, "chained_optimizers", [optimizer])
    if len(inner) != 1 or not hasattr(inner[0], "model_param_group_index_map"):
        raise TypeError(f"expected one megatron DistributedOptimizer, got {type(optimizer)}")
    return inner[0]


def _init_adam_state(inner: Any) -> None:
    """Allocates Adam's state (step 0, zero moments) of every main parameter without one."""
    for group in inner.optimizer.param_groups:
        for param in group["params"]:
            state = inner.optimizer.state[param]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(param)
                state["exp_avg_sq"] = torch.zeros_like(param)


@contextlib.contextmanager
def _buckets_at_their_offsets(inner: Any) -> Iterator[None]:
    """``get_parameter_state_dp_zero`` returning buffers indexed like the grad buffers."""
    original = inner.get_parameter_state_dp_zero

    def placed(*args: Any, **kwargs: Any) -> Any:
        state = original(*args, **kwargs)
        if state is None:
            return None
        for gbuf_idx, by_dtype in enumerate(inner.gbuf_ranges):
            buffer = inner.buffers[gbuf_idx]
            for dtype in by_dtype:
                world = state[gbuf_idx][dtype]
                for key in ("param", "exp_avg", "exp_avg_sq"):
                    padded = torch.zeros(buffer.numel, dtype=world[key].dtype)
                    start = 0
                    for bucket in buffer.buckets:
                        end = start + bucket.numel_unpadded
                        padded[bucket.offset : bucket.offset + bucket.numel_unpadded] = world[key][
                            start:end
                        ]
                        start = end
                    world[key] = padded
        return state

    inner.get_parameter_state_dp_zero = placed
    try:
        yield
    finally:
        del inner.get_parameter_state_dp_zero  # the class's method again


def optimizer_sharded_state_dict(
    optimizer: Any, model_sharded: dict[str, Any], is_loading: bool, skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The optimizer's ``fully_reshardable`` sharded state dict for ``model_sharded``.

    Args:
        optimizer: megatron's optimizer (one DistributedOptimizer, possibly chained).
        model_sharded: the model's ``sharded_state_dict()`` (the same one that is saved or
            loaded with it).
        is_loading: build the dict to load into.
        skip: fixes of :data:`OPTIMIZER_FIXES` to leave out (tests only).
    """
    inner = distributed_optimizer(optimizer)
    if "init_state" not in skip:  # a save before the first update needs it too
        _init_adam_state(inner)
    metadata = {"distrib_optim_sharding_type": SHARDING_TYPE}
    fix = contextlib.nullcontext() if "bucket_offsets" in skip else _buckets_at_their_offsets(inner)
    with fix:
        return inner.sharded_state_dict(model_sharded, is_loading=is_loading, metadata=metadata)


@contextlib.contextmanager
def _copy_present_keys(inner: Any) -> Iterator[None]:
    """``_set_main_param_and_optimizer_states`` copying only the keys it is given."""
    cls = type(inner)
    original = cls._set_main_param_and_optimizer_states

    def set_states(self: Any, model_param: torch.nn.Parameter, tensors: dict) -> None:
        group_index, group_order = self.model_param_group_index_map[model_param]
        main_param = self.optimizer.param_groups[group_index]["params"][group_order]
        targets = {"param": main_param, **self.optimizer.state[main_param]}
        for key, value in tensors.items():
            targets[key].copy_(value)

    if getattr(inner.config, "use_precision_aware_optimizer_no_fp8_or_ds_fp8", False):
        yield  # megatron sets only the given keys on this path
        return
    cls._set_main_param_and_optimizer_states = set_states
    try:
        yield
    finally:
        cls._set_main_param_and_optimizer_states = original


def load_optimizer_state(optimizer: Any, state: dict[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Loads a ``fully_reshardable`` state read with :func:`optimizer_sharded_state_dict`."""
    inner = distributed_optimizer(optimizer)
    fix = contextlib.nullcontext() if "present_keys" in skip else _copy_present_keys(inner)
    with fix:
        inner.load_state_dict(state)
    if "own_step" not in skip:
        for param_state in inner.optimizer.state.values():
            if torch.is_tensor(param_state.get("step")):
                param_state["step"] = param_state["step"].clone()


def save_strategy() -> Any:
    """megatron's ``torch_dist`` save strategy (one writer process per rank)."""
    from megatron.core.dist_checkpointing.strategies.torch import TorchDistSaveShardedStrategy

    return TorchDistSaveShardedStrategy("torch_dist", 1, thread_count=1)


def save_sharded(state: dict[str, Any], directory: Path, asynchronous: bool = False) -> Any:
    """``dist_checkpointing.save`` of ``state`` into the empty ``directory`` (collective).

    ``asynchronous``: return megatron's ``AsyncRequest`` (the tensor writes, and the
    finalisation that writes ``metadata.json``) for an ``AsyncCallsQueue`` to run, instead of
    writing now (``None``)."""
    from megatron.core import dist_checkpointing

    require_psutil()
    return dist_checkpointing.save(
        state, str(directory), sharded_strategy=save_strategy(), async_sharded_save=asynchronous
    )


def load_sharded(state: dict[str, Any], directory: Path) -> dict[str, Any]:
    """``dist_checkpointing.load`` of the tensors ``state`` asks for (collective)."""
    from megatron.core import dist_checkpointing

    return dist_checkpointing.load(state, str(directory))
