"""Training checkpoints: model shards, optimizer, schedule position, regulator, RNG, data.

Layout under a run's checkpoint root::

    latest                      the name of the newest complete checkpoint (replaced atomically)
    step_000012/
      meta.json                 step, layout, regulator state, data position, extra state
      model_tp00_pp000.pt       model shard + step counter of that (TP rank, PP stage)
      optim_rank00000.pt        optimizer shard of every global rank (fp32 main weights and
                                Adam moments of its data-parallel slice)
      rng_rank00000.pt          RNG states of every global rank

A checkpoint is written into ``step_N.tmp`` and renamed only after every rank has finished
writing, then ``latest`` is switched; a kill at any moment leaves the previous checkpoint
complete and ``latest`` pointing at it. Older checkpoints beyond ``keep`` are removed.

``meta.json`` records the size and SHA-256 of every file (hashed while it is written). On
resume, :func:`find_resumable` checks the newest checkpoint's files on every rank; when
one is damaged (truncated, changed, missing, or ``meta.json`` unreadable) it says which
and falls back to the newest checkpoint that is intact, which is why a run keeps at least
two.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.distributed as dist

from nemo_red.algorithms.entropy_regulator import EntropyRegulator
from nemo_red.training.actor import MegatronActor

LATEST = "latest"
_HASH_CHUNK = 1 << 24


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the damage."""


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self.size += len(view)
        return self.handle.write(view)

    def flush(self) -> None:
        self.handle.flush()


def _save(obj: Any, path: Path) -> dict[str, Any]:
    """``torch.save`` to ``path``; returns the file's size and SHA-256."""
    with path.open("wb") as handle:
        writer = _HashingWriter(handle)
        torch.save(obj, writer)  # type: ignore[arg-type]  # a write-only file object
        writer.flush()
    return {"bytes": writer.size, "sha256": writer.sha.hexdigest()}


def _load(path: Path) -> Any:
    """``torch.load`` of a checkpoint file; a damaged file raises :class:`CheckpointError`."""
    try:
        return torch.load(path, weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path}: cannot be read ({reason})") from None


def _file_damage(path: Path, record: dict[str, Any] | None) -> str | None:
    """Why ``path`` does not match its record (None when it does)."""
    if not path.is_file():
        return f"{path}: missing"
    if record is None:  # written before checkpoints recorded their files
        return None
    size = path.stat().st_size
    if size != record["bytes"]:
        return f"{path}: {size} bytes, {record['bytes']} written (truncated or changed)"
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            sha.update(chunk)
    if sha.hexdigest() != record["sha256"]:
        return f"{path}: its SHA-256 differs from the one recorded when it was written"
    return None


def _rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    from megatron.core import tensor_parallel

    state["megatron"] = tensor_parallel.get_cuda_rng_tracker().get_states()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    from megatron.core import tensor_parallel

    tensor_parallel.get_cuda_rng_tracker().set_states(state["megatron"])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(
    root: Path,
    step: int,
    actor: MegatronActor,
    regulator: EntropyRegulator | None,
    data_state: dict[str, Any],
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Writes the checkpoint of ``step`` (collective: every rank calls it)."""
    from megatron.core import parallel_state as ps

    root = Path(root)
    name = f"step_{step:06d}"
    tmp = root / f"{name}.tmp"
    rank = dist.get_rank()
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    files: dict[str, Any] = {}
    if ps.get_data_parallel_rank() == 0:
        files[_model_shard_name()] = _save(actor.state_dict(), tmp / _model_shard_name())
    files[_optimizer_shard_name()] = _save(
        actor.optimizer_state_dict(), tmp / _optimizer_shard_name()
    )
    files[_rng_name()] = _save(_rng_state(), tmp / _rng_name())
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, files)
    if rank == 0:
        meta = {
            "step": step,
            "world_size": dist.get_world_size(),
            "tp": ps.get_tensor_model_parallel_world_size(),
            "pp": ps.get_pipeline_model_parallel_world_size(),
            "regulator": None if regulator is None else regulator.state_dict(),
            "data": data_state,
            "extra": extra or {},
            "files": {name: rec for part in everyone for name, rec in sorted(part.items())},
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        final = root / name
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        _write_atomic(root / LATEST, name)
        _prune(root, keep)
    dist.barrier()
    return root / name


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for partial in root.glob("step_*.tmp"):
        shutil.rmtree(partial, ignore_errors=True)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (None when there is none)."""
    pointer = Path(root) / LATEST
    if not pointer.is_file():
        return None
    path = Path(root) / pointer.read_text().strip()
    if not (path / "meta.json").is_file():
        raise FileNotFoundError(f"{pointer} names {path.name}, which is incomplete or missing")
    return path


def candidates(root: Path) -> list[Path]:
    """Checkpoint directories under ``root``, the one ``latest`` names first, then newest first."""
    done = sorted(
        (p for p in Path(root).glob("step_*") if p.is_dir() and not p.name.endswith(".tmp")),
        reverse=True,
    )
    pointer = Path(root) / LATEST
    named = Path(root) / pointer.read_text().strip() if pointer.is_file() else None
    if named is not None:
        done = [named] + [p for p in done if p != named and p.name < named.name]
    return done


def read_meta(path: Path) -> dict[str, Any]:
    """A checkpoint's ``meta.json``; a missing or damaged one raises :class:`CheckpointError`."""
    meta_path = Path(path) / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path}: missing (the checkpoint is incomplete)") from None
    except (ValueError, OSError) as err:
        raise CheckpointError(f"{meta_path}: damaged ({err})") from None
    if not isinstance(meta, dict) or "step" not in meta:
        raise CheckpointError(f"{meta_path}: damaged (no step)")
    return meta


def _damage_here(path: Path) -> str | None:
    """What is wrong with this rank's part of the checkpoint ``path`` (None: intact)."""
    try:
        meta = read_meta(path)
    except CheckpointError as err:
        return str(err)
    records = meta.get("files")
    for name in (_model_shard_name(), _optimizer_shard_name(), _rng_name()):
        damage = _file_damage(path / name, None if records is None else records.get(name, {}))
        if damage is not None:
            return damage
    return None


def find_resumable(root: Path, log: Any = None) -> Path | None:
    """The newest checkpoint under ``root`` that is intact on every rank (collective).

    Each rank checks the files it will read against the sizes and hashes in
    ``meta.json``. A damaged checkpoint is reported (on rank 0, to ``log``) and the one
    before it is tried.

    Returns:
        The checkpoint directory, or None when ``root`` has none.

    Raises:
        CheckpointError: When checkpoints exist but none is intact (naming each damage).
    """
    found_dirs = candidates(root)
    log = sys.stderr if log is None else log
    damages: list[str] = []
    for path in found_dirs:
        found: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(found, _damage_here(path))
        damage = next((d for d in found if d is not None), None)
        if damage is None:
            if damages and dist.get_rank() == 0:
                print(
                    f"[nemo-red] resuming from {path.name}, the newest intact checkpoint", file=log
                )
            return path
        damages.append(damage)
        if dist.get_rank() == 0:
            print(f"[nemo-red] checkpoint {path.name} is damaged: {damage}", file=log)
    if damages:
        raise CheckpointError(
            f"{root}: no intact checkpoint ({'; '.join(damages)}); move the checkpoints "
            "directory away to start the run again from step 0"
        )
    return None


def load_checkpoint(
    path: Path, actor: MegatronActor, regulator: EntropyRegulator | None
) -> dict[str, Any]:
    """Restores a checkpoint written by :func:`save_checkpoint` under the same layout.

    Returns:
        The checkpoint's metadata (``step``, ``data`` position, ``extra``).
    """
    path = Path(path)
    meta = _read_meta(path)
    actor.load_state_dict(_load(path / _model_shard_name()))
    actor.load_optimizer_state_dict(_load_optimizer_shard(path))
    _set_rng_state(_load(path / _rng_name()))
    if regulator is not None and meta["regulator"] is not None:
        regulator.load_state_dict(meta["regulator"])
    return meta


def resolve_checkpoint(path: Path) -> Path:
    """A ``step_N`` directory, or the newest checkpoint of a checkpoints root or run dir."""
    path = Path(path)
    if (path / "meta.json").is_file():
        return path
    for root in (path, path / "checkpoints"):
        if (root / LATEST).is_file():
            found = latest_checkpoint(root)
            assert found is not None
            return found
    raise FileNotFoundError(
        f"{path}: not a training checkpoint (no meta.json), nor a checkpoints root or run "
        f"directory with a '{LATEST}' pointer"
    )


def load_initial_state(path: Path, actor: MegatronActor) -> Path:
    """Starts a new run from a checkpoint's weights and optimizer moments (collective).

    The step counter (so the LR schedule) restarts at 0 and the optimizer keeps this run's
    hyperparameters (betas, eps, weight decay); the regulator, data position and RNG of the
    checkpoint are not used. AdamW's own per-parameter step counts carry over, so its bias
    correction continues as in the checkpointed run.

    Returns:
        The checkpoint directory that was read.
    """
    path = resolve_checkpoint(path)
    _read_meta(path)
    state = _load(path / _model_shard_name())
    hyper = [
        {k: v for k, v in group.items() if k != "params"} for group in actor.optimizer.param_groups
    ]
    actor.load_state_dict({**state, "steps_done": 0})
    actor.load_optimizer_state_dict(_load_optimizer_shard(path))
    for group, own in zip(actor.optimizer.param_groups, hyper, strict=True):
        group.update(own)
    return path


def _model_shard_name() -> str:
    """The file of this rank's model shard and step counter: one per (TP rank, PP stage)."""
    from megatron.core import parallel_state as ps

    tp, pp = ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_rank()
    return f"model_tp{tp:02d}_pp{pp:03d}.pt"


def _rng_name() -> str:
    """The file of this rank's RNG states: one per global rank."""
    return f"rng_rank{dist.get_rank():05d}.pt"


def _optimizer_shard_name() -> str:
    """The file of this rank's optimizer shard: one per global rank."""
    return f"optim_rank{dist.get_rank():05d}.pt"


def _load_optimizer_shard(path: Path) -> dict[str, Any]:
    """This rank's optimizer shard of the checkpoint ``path``."""
    shard = path / _optimizer_shard_name()
    if not shard.is_file():
        raise FileNotFoundError(
            f"{path}: no optimizer shard {shard.name}. Checkpoints written before the actor "
            "used megatron's distributed optimizer keep the optimizer inside the model "
            "files and cannot be resumed by this version: resume with the version that "
            "wrote it, or start a new run (another run.output_dir)"
        )
    return _load(shard)


def _read_meta(path: Path) -> dict[str, Any]:
    """The checkpoint's metadata, checked against the running TP x PP x DP layout."""
    from megatron.core import parallel_state as ps

    meta = read_meta(path)
    layout = (
        dist.get_world_size(),
        ps.get_tensor_model_parallel_world_size(),
        ps.get_pipeline_model_parallel_world_size(),
    )
    if layout != (meta["world_size"], meta["tp"], meta["pp"]):
        raise ValueError(
            f"{path}: saved with world/tp/pp {(meta['world_size'], meta['tp'], meta['pp'])}, "
            f"running with {layout}; use the same layout"
        )
    return meta
