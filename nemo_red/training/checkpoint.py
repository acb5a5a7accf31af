"""Training checkpoints in megatron's ``torch_dist`` format, resumable under another layout.

Layout under a run's checkpoint root::

    latest                      the name of the newest complete checkpoint (replaced atomically)
    step_000012/
      .metadata, __R_0.distcp   megatron dist checkpoint (``dist_checkpointing``): model
      common.pt, metadata.json  weights, DistributedOptimizer state (``fully_reshardable``:
                                fp32 main weights, Adam moments and step) and the LR
                                scheduler's position (megatron's ``OptimizerParamScheduler``)
      rng_rank00000.pt          RNG states of every global rank
      meta.json                 step, layout, regulator state, data position, loop state,
                                and the size and SHA-256 of every file above

The dist checkpoint is keyed by model tensor, not by rank, so a checkpoint written under
one TP x PP x DP layout (and world size) resumes under any other the model splits into:
megatron reshards the weights and the optimizer state while reading. RNG states are per
rank: under the layout that wrote them every rank gets its own back; under another one
every rank takes global rank 0's Python, NumPy and torch CPU generators (all ranks seed them
alike and draw from them alike), while megatron's model-parallel generator (per TP rank) and
the CUDA generators start from the run's seed as at step 0. This project runs without
dropout, the one user of the model-parallel generator, and its rollouts draw from seeds
derived from the step, so a resumed run under another layout continues like an
uninterrupted one (up to the floating-point differences of the layouts).

A checkpoint is written into ``step_N.tmp`` and renamed only after every rank has finished
writing, then ``latest`` is switched; a kill at any moment leaves the previous checkpoint
complete and ``latest`` pointing at it. Older checkpoints beyond ``keep`` are removed.

On resume, :func:`find_resumable` checks the newest checkpoint's files (shared out over the
ranks) against ``meta.json``; when one is damaged (truncated, changed, missing, or
``meta.json`` unreadable) it says which and falls back to the newest checkpoint that is
intact, which is why a run keeps at least two. Checkpoints of earlier versions (per-rank
``model_tp00_pp000.pt`` / ``optim_rank00000.pt`` files) are refused with a message.

Saving is synchronous by default. With ``trainer.async_save`` (CUDA only) a
:class:`CheckpointWriter` hands the tensor writes to megatron's ``AsyncCallsQueue``: the
tensors are staged to host memory and a forked process writes them while training goes on;
the checkpoint is published (hashed, ``meta.json`` written, renamed, ``latest`` switched) on
a later step once every rank's writer has finished, and before the next save and at the end
of the run. Until then ``latest`` names the previous checkpoint, so a kill during an
asynchronous write loses nothing either. megatron's queue all-reduces CUDA tensors to agree
that all writers are done, so on CPU the option is refused; the publication logic is tested
on CPU with the writes run in place (``tests/training/test_async_checkpoint.py``), the
background write itself only on a GPU.
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
from nemo_red.models.dist_checkpoint import saved_tensors
from nemo_red.models.megatron_checkpointing import load_sharded, save_sharded
from nemo_red.training.actor import MegatronActor

LATEST = "latest"
FORMAT = "nemo_red.train/2"  # torch_dist; earlier checkpoints had no format field
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
    tmp = _begin(Path(root), step)
    save_sharded(actor.sharded_state_dict(), tmp)
    _save(_rng_state(), tmp / _rng_name())
    return _publish(Path(root), step, _meta(step, regulator, data_state, extra), keep)


class CheckpointWriter:
    """Writes a run's training checkpoints, synchronously or through megatron's
    ``AsyncCallsQueue`` (``asynchronous``; CUDA only, see the module docstring).

    Every method is collective. :meth:`poll` publishes the asynchronous saves whose writes
    have finished on every rank (call it once per step); :meth:`wait` publishes all of them.
    ``queue``: megatron's ``AsyncCallsQueue`` or an object with its
    ``schedule_async_request`` / ``maybe_finalize_async_calls`` (tests).
    """

    def __init__(
        self, root: Path, keep: int = 2, asynchronous: bool = False, queue: Any = None
    ) -> None:
        self.root, self.keep = Path(root), keep
        self.asynchronous = asynchronous or queue is not None
        if self.asynchronous and queue is None:
            if not torch.cuda.is_available():
                raise ValueError(
                    "trainer.async_save needs CUDA: megatron's AsyncCallsQueue agrees on "
                    "finished writes through CUDA tensors (set trainer.async_save=false)"
                )
            from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

            queue = AsyncCallsQueue(persistent=False)
        self.queue = queue

    def save(
        self,
        step: int,
        actor: MegatronActor,
        regulator: EntropyRegulator | None,
        data_state: dict[str, Any],
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Writes (or starts writing) the checkpoint of ``step``."""
        if not self.asynchronous:
            save_checkpoint(self.root, step, actor, regulator, data_state, extra, self.keep)
            return
        self.wait()  # checkpoints are published in order
        meta = _meta(step, regulator, data_state, extra)  # the state of now, not of later
        tmp = _begin(self.root, step)
        request = save_sharded(actor.sharded_state_dict(), tmp, asynchronous=True)
        _save(_rng_state(), tmp / _rng_name())
        request.add_finalize_fn(lambda: _publish(self.root, step, meta, self.keep))
        self.queue.schedule_async_request(request)

    def poll(self) -> None:
        """Publishes the saves whose writes have finished on every rank."""
        if self.asynchronous:
            self.queue.maybe_finalize_async_calls(blocking=False)

    def wait(self) -> None:
        """Publishes every save started, waiting for its writes."""
        if self.asynchronous:
            self.queue.maybe_finalize_async_calls(blocking=True)


def _begin(root: Path, step: int) -> Path:
    """The empty ``step_N.tmp`` directory a checkpoint is written into (collective)."""
    tmp = root / f"step_{step:06d}.tmp"
    if dist.get_rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    return tmp


def _meta(
    step: int,
    regulator: EntropyRegulator | None,
    data_state: dict[str, Any],
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    """``meta.json`` of a checkpoint of ``step`` without its file records."""
    from megatron.core import parallel_state as ps

    return {
        "format": FORMAT,
        "step": step,
        "world_size": dist.get_world_size(),
        "tp": ps.get_tensor_model_parallel_world_size(),
        "pp": ps.get_pipeline_model_parallel_world_size(),
        "regulator": None if regulator is None else regulator.state_dict(),
        "data": data_state,
        "extra": extra or {},
    }


def _publish(root: Path, step: int, meta: dict[str, Any], keep: int) -> Path:
    """Hashes the written ``step_N.tmp``, writes its ``meta.json``, renames it to ``step_N``,
    switches ``latest`` to it and prunes old checkpoints (collective)."""
    name = f"step_{step:06d}"
    tmp = root / f"{name}.tmp"
    files = _hash_my_share(tmp, sorted(p.name for p in tmp.iterdir()))
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, files)
    if dist.get_rank() == 0:
        records = {name: rec for part in everyone for name, rec in sorted(part.items())}
        (tmp / "meta.json").write_text(json.dumps({**meta, "files": records}, indent=2))
        final = root / name
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        _write_atomic(root / LATEST, name)
        _prune(root, keep)
    dist.barrier()
    return root / name


def _my_share(names: list[str]) -> list[str]:
    """The names (of a sorted list) this rank checks: every world-size-th one."""
    return names[dist.get_rank() :: dist.get_world_size()]


def _hash_my_share(directory: Path, names: list[str]) -> dict[str, Any]:
    """Size and SHA-256 of this rank's share of the files ``names`` of ``directory``."""
    records = {}
    for name in _my_share(names):
        sha = hashlib.sha256()
        with (directory / name).open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                sha.update(chunk)
        records[name] = {"bytes": (directory / name).stat().st_size, "sha256": sha.hexdigest()}
    return records


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
    """What is wrong with this rank's share of the checkpoint ``path`` (None: intact)."""
    try:
        meta = read_meta(path)
    except CheckpointError as err:
        return str(err)
    records = meta.get("files") or {}
    for name in _my_share(sorted(records)):
        damage = _file_damage(path / name, records[name])
        if damage is not None:
            return damage
    return None


def _refuse_earlier_format(path: Path) -> None:
    """Raises CheckpointError for a checkpoint of an earlier version (per-rank files)."""
    if (path / ".metadata").is_file() or not (
        any(path.glob("model_tp*_pp*.pt")) or any(path.glob("optim_rank*.pt"))
    ):
        return
    raise CheckpointError(
        f"{path}: a checkpoint of an earlier nemo_red version (per-rank model_tp*_pp*.pt / "
        "optim_rank*.pt files), which this version cannot resume. Finish the run with the "
        "version that wrote it, or start it again: move its checkpoints/ directory away, and "
        "to keep its weights set model.path to the run's hf/ export"
    )


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
        _refuse_earlier_format(path)
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
    """Restores a checkpoint written by :func:`save_checkpoint` under any layout (collective).

    Returns:
        The checkpoint's metadata (``step``, ``data`` position, ``extra``).
    """
    path = Path(path)
    meta = _read_meta(path)
    _check_shapes(path, actor)
    actor.load_sharded_state_dict(load_sharded(actor.sharded_state_dict(is_loading=True), path))
    _set_rng_state(_load(path / _rng_source(meta)))
    if regulator is not None and meta["regulator"] is not None:
        regulator.load_state_dict(meta["regulator"])
    return meta


def _check_shapes(path: Path, actor: MegatronActor) -> None:
    """Raises CheckpointError when a weight of ``path`` has another global shape than the
    model's: another architecture, or a vocabulary padded to another multiple of the TP size
    (a vocabulary that every TP size divides, such as Qwen2.5's, reshards freely)."""
    try:
        actor.model_sharded_state_dict(saved_tensors(path))
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: does not fit this run's model: {err}") from None


def _same_layout(meta: dict[str, Any]) -> bool:
    from megatron.core import parallel_state as ps

    layout = (
        dist.get_world_size(),
        ps.get_tensor_model_parallel_world_size(),
        ps.get_pipeline_model_parallel_world_size(),
    )
    return layout == (meta["world_size"], meta["tp"], meta["pp"])


def _rng_source(meta: dict[str, Any]) -> str:
    """The RNG file this rank restores: its own under the same layout, else rank 0's (see
    the module docstring for what then starts from the seed)."""
    return _rng_name() if _same_layout(meta) else _rng_name(0)


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

    The checkpoint may come from another layout. The step counter (so the LR schedule)
    restarts at 0 and the optimizer keeps this run's
    hyperparameters (betas, eps, weight decay); the regulator, data position and RNG of the
    checkpoint are not used. AdamW's own per-parameter step counts carry over, so its bias
    correction continues as in the checkpointed run.

    Returns:
        The checkpoint directory that was read.
    """
    path = resolve_checkpoint(path)
    _read_meta(path)
    _check_shapes(path, actor)
    hyper = [
        {k: v for k, v in group.items() if k != "params"} for group in actor.optimizer.param_groups
    ]
    loaded = load_sharded(actor.sharded_state_dict(is_loading=True), path)
    actor.load_sharded_state_dict(loaded, schedule=False)
    for group, own in zip(actor.optimizer.param_groups, hyper, strict=True):
        group.update(own)
    return path


def _rng_name(rank: int | None = None) -> str:
    """The file of a global rank's RNG states (this rank's by default)."""
    return f"rng_rank{dist.get_rank() if rank is None else rank:05d}.pt"


def _read_meta(path: Path) -> dict[str, Any]:
    """The checkpoint's metadata; one of an earlier version is refused."""
    _refuse_earlier_format(path)
    return read_meta(path)
