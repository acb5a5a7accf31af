"""Model checkpoints in megatron's ``torch_dist`` format, as Megatron-LM, Megatron-Bridge and
NeMo 2 keep them; loadable under any TP x PP (megatron reshards while reading).

Directories read (the first that matches)::

    ckpt/latest_checkpointed_iteration.txt   Megatron-LM / Megatron-Bridge: "N" names
    ckpt/iter_000000N/.metadata              iter_000000N ("release" names release/)
    ckpt/weights/.metadata                   NeMo 2 (keys prefixed with "module.")
    ckpt/.metadata                           a bare dist checkpoint directory

Keys: megatron's local layer spec (this project's) declares a ``sharded_state_dict_keys_map``
that saves the norm weights under Transformer Engine's names
(``self_attention.linear_qkv.layer_norm_weight``, ``mlp.linear_fc1.layer_norm_weight``), so
checkpoints of TE models load into it as they are. Checkpoints that kept the local names
(``input_layernorm.weight``, ``pre_mlp_layernorm.weight``) and NeMo 2's ``module.`` prefix
are mapped while reading (:func:`model_request`). Transformer Engine's ``_extra_state``
entries (FP8 metadata) are not read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from nemo_red.models.megatron_checkpointing import load_sharded, save_sharded

ITERATION_FILE = "latest_checkpointed_iteration.txt"
NEMO2_WEIGHTS = "weights"
NEMO2_PREFIX = "module."
CHECKPOINT_VERSION = 3.0  # Megatron-LM's checkpoint_version of torch_dist checkpoints
# Transformer Engine's name -> megatron's local-spec name of the two fused norms
_NORM_NAMES = {
    "self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
    "mlp.linear_fc1.layer_norm_weight": "pre_mlp_layernorm.weight",
}


def iteration_dir(iteration: int | str) -> str:
    """Megatron-LM's name of a checkpoint's directory: ``iter_0000012`` or ``release``."""
    return "release" if iteration == "release" else f"iter_{int(iteration):07d}"


def find_dist_checkpoint(path: Path) -> Path | None:
    """The directory holding the dist checkpoint of ``path`` (see the module docstring).

    Returns:
        The directory with the ``.metadata`` file, or None when ``path`` is none of the
        layouts.

    Raises:
        FileNotFoundError: when ``latest_checkpointed_iteration.txt`` names a directory that
            is missing or incomplete.
    """
    path = Path(path)
    pointer = path / ITERATION_FILE
    if pointer.is_file():
        text = pointer.read_text().strip()
        try:
            found = path / iteration_dir(text if text == "release" else int(text))
        except ValueError:
            raise ValueError(f"{pointer}: expected an iteration number, got {text!r}") from None
        if not (found / ".metadata").is_file():
            raise FileNotFoundError(
                f"{pointer} names {found.name}, which has no .metadata (missing or incomplete)"
            )
        return found
    for candidate in (path / NEMO2_WEIGHTS, path):
        if (candidate / ".metadata").is_file():
            return candidate
    return None


def saved_tensors(directory: Path) -> dict[str, Any]:
    """The tensors of a dist checkpoint: key -> megatron's metadata (global shape, dtype)."""
    from megatron.core import dist_checkpointing

    return dict(dist_checkpointing.load_tensors_metadata(str(directory)))


def _saved_key(key: str, saved: dict[str, Any]) -> str:
    """The checkpoint's name for the model's sharded key ``key``."""
    prefix = NEMO2_PREFIX if any(k.startswith(NEMO2_PREFIX) for k in saved) else ""
    candidates = [prefix + key]
    for te_name, local_name in _NORM_NAMES.items():
        if key.endswith(te_name):
            candidates.append(prefix + key[: -len(te_name)] + local_name)
    for name in candidates:
        if name in saved:
            return name
    raise KeyError(f"the checkpoint has no tensor {key!r} (looked for {candidates})")


def model_request(model: torch.nn.Module, saved: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model's sharded state dict without ``_extra_state``, keyed as in ``saved``.

    Args:
        model: this rank's megatron model (stage and TP shard).
        saved: the checkpoint's tensors (:func:`saved_tensors`); None keeps megatron's keys.

    Raises:
        KeyError: naming a tensor the checkpoint lacks.
        ValueError: when a tensor's global shape differs (another model or vocab padding).
    """
    everything: dict[str, Any] = model.sharded_state_dict()  # type: ignore[operator]  # megatron
    request = {k: v for k, v in everything.items() if not k.endswith("_extra_state")}
    if saved is None:
        return request
    for sharded in request.values():
        name = _saved_key(sharded.key, saved)
        want = getattr(sharded, "global_shape", None)
        have = tuple(saved[name].global_shape)
        if want is not None and tuple(want) != have:
            raise ValueError(
                f"checkpoint tensor {name!r} has shape {have}, the model needs {tuple(want)} "
                "(another architecture, or the vocabulary padded differently)"
            )
        sharded.key = name
    return request


def save_model(model: torch.nn.Module, root: Path, iteration: int = 0) -> Path:
    """Writes ``model`` as ``root/iter_NNNNNNN`` and points
    ``latest_checkpointed_iteration.txt`` at it (collective; ``root`` must exist)."""
    directory = Path(root) / iteration_dir(iteration)
    if dist.get_rank() == 0:
        directory.mkdir(parents=True)
    dist.barrier()
    state = {
        "model": model_request(model),
        "checkpoint_version": CHECKPOINT_VERSION,
        "iteration": iteration,
    }
    save_sharded(state, directory)
    if dist.get_rank() == 0:
        (Path(root) / ITERATION_FILE).write_text(str(iteration))
    dist.barrier()
    return directory


def load_model(model: torch.nn.Module, path: Path) -> Path:
    """Reads the weights of this rank's ``model`` from the dist checkpoint of ``path``
    (collective), resharding from whatever layout wrote it.

    Returns:
        The dist checkpoint directory that was read.
    """
    from nemo_red.models.megatron_gpt import load_weights

    directory = find_dist_checkpoint(Path(path))
    if directory is None:
        raise FileNotFoundError(f"{path}: not a megatron dist checkpoint (no .metadata)")
    request = model_request(model, saved_tensors(directory))
    loaded = load_sharded({"model": request}, directory)
    load_weights(model, loaded["model"])
    return directory


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """torch.distributed and megatron's groups for a world of one, unless already set up.

    Raises:
        RuntimeError: inside a distributed job of more than one rank.
    """
    from nemo_red.training.parallel import ParallelLayout, init_distributed, shutdown_distributed

    if dist.is_initialized():
        if dist.get_world_size() != 1:
            raise RuntimeError("model conversion runs in one process, not under torchrun")
        yield
        return
    init_distributed(ParallelLayout(), seed=0)
    try:
        yield
    finally:
        shutdown_distributed()
