"""Directories a command writes: refuse what would destroy a user's files, publish atomically.

Two kinds of writes exist:

* a directory written in one piece (a converted checkpoint, a HF export): it is staged in a
  hidden sibling (``.<name>.incomplete``) and renamed into place when complete, so a kill
  leaves either the old directory or the new one. :func:`check_new_destination` runs
  first: the destination must be new or empty, or, with ``overwrite``, already a
  directory of the same kind (a HF checkpoint replaces a HF checkpoint, never a folder of
  other files);
* a directory a command creates and later continues (a run, an evaluation, a
  comparison): :func:`claim_directory` accepts a new or empty directory, or one that
  nemo_red wrote before (it leaves a marker file, :data:`MARKER`), and refuses anything
  else.

Both refuse the current directory and its parents, and a destination that is or contains
one of the command's sources.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from nemo_red import __version__

__all__ = [
    "KINDS",
    "MARKER",
    "DestinationError",
    "check_new_destination",
    "claim_directory",
    "is_kind",
    "make_readable",
    "publish",
    "staging_dir",
]

MARKER = "nemo_red_output.json"


class DestinationError(ValueError):
    """A destination a command refuses to write; the message names it and says why."""


def _marked(path: Path, kind: str) -> bool:
    try:
        return json.loads((path / MARKER).read_text()).get("kind") == kind
    except (OSError, ValueError, AttributeError):
        return False


def _is_hf(path: Path) -> bool:
    weights = ("model.safetensors", "model.safetensors.index.json")
    return (path / "config.json").is_file() and any((path / w).is_file() for w in weights)


def _is_megatron(path: Path) -> bool:
    return (path / "nemo_red_model.json").is_file()


def _is_run(path: Path) -> bool:
    # run directories written before the marker existed hold a config and a log or checkpoints
    legacy = (path / "config.yaml").is_file() and (
        (path / "metrics.jsonl").is_file() or (path / "checkpoints").is_dir()
    )
    return _marked(path, "run") or legacy


def _is_eval(path: Path) -> bool:
    return _marked(path, "eval") or (path / "records.jsonl").is_file()


def _is_compare(path: Path) -> bool:
    return _marked(path, "compare") or (path / "runs").is_dir() or (path / "base_model").is_dir()


# kind -> (what it is, in words; whether a directory is one)
KINDS: dict[str, tuple[str, Callable[[Path], bool]]] = {
    "hf": ("a Hugging Face checkpoint (config.json + safetensors)", _is_hf),
    "megatron": ("a nemo_red megatron checkpoint (nemo_red_model.json)", _is_megatron),
    "run": ("a nemo-red training run directory", _is_run),
    "eval": ("a nemo-red eval output directory", _is_eval),
    "compare": ("a nemo-red compare output directory", _is_compare),
}


def is_kind(path: Path, kind: str) -> bool:
    """Whether ``path`` is a directory of ``kind`` (a key of :data:`KINDS`)."""
    return Path(path).is_dir() and KINDS[kind][1](Path(path))


def _refuse_unsafe(dst: Path, sources: Iterable[Path]) -> Path:
    target = dst.resolve()
    here = Path.cwd().resolve()
    if target == here or target in here.parents:
        raise DestinationError(
            f"{dst}: is the current directory or one of its parents; name a new directory"
        )
    for source in sources:
        src = Path(source).resolve()
        if target == src:
            raise DestinationError(f"{dst}: is the source {source}; name another directory")
        if target in src.parents:
            raise DestinationError(
                f"{dst}: contains the source {source}; writing it would destroy the source"
            )
    if target.exists() and not target.is_dir():
        raise DestinationError(f"{dst}: exists and is not a directory")
    return target


def _some_entries(path: Path, limit: int = 3) -> str:
    names = sorted(p.name for p in path.iterdir())
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def check_new_destination(
    dst: Path, kind: str, sources: Iterable[Path] = (), overwrite: bool = False
) -> None:
    """Refuses a destination that writing a ``kind`` directory in one piece would damage.

    Args:
        dst: Where the directory will be published.
        kind: What is written (a key of :data:`KINDS`).
        sources: Directories the command reads; the destination must not be or contain one.
        overwrite: Allow replacing an existing directory, if it is itself of ``kind``.

    Raises:
        DestinationError: Naming the destination and the reason.
    """
    dst = Path(dst)
    target = _refuse_unsafe(dst, sources)
    if not target.is_dir() or not any(target.iterdir()):
        return
    what = KINDS[kind][0]
    if not overwrite:
        raise DestinationError(
            f"{dst}: exists and is not empty ({_some_entries(target)}); name a new directory, "
            f"or pass --overwrite to replace it (only {what} is replaced)"
        )
    if not is_kind(target, kind):
        raise DestinationError(
            f"{dst}: is not {what} ({_some_entries(target)}); refusing to replace it, even "
            "with --overwrite"
        )


def claim_directory(path: Path, kind: str, sources: Iterable[Path] = ()) -> bool:
    """Creates or continues a ``kind`` directory; returns whether it was new.

    A new or empty directory is created and marked as ``kind`` (:data:`MARKER`); one
    that is already ``kind`` is continued; anything else is refused.

    Raises:
        DestinationError: When ``path`` holds files that nemo_red did not write, is the
            current directory or a parent of it, or is or contains a source.
    """
    path = Path(path)
    target = _refuse_unsafe(path, sources)
    new = not target.is_dir() or not any(target.iterdir())
    if not new and not is_kind(target, kind):
        raise DestinationError(
            f"{path}: holds files that nemo-red did not write ({_some_entries(target)}) and "
            f"is not {KINDS[kind][0]}; choose a new or empty directory"
        )
    target.mkdir(parents=True, exist_ok=True)
    if not (target / MARKER).is_file():
        record = {"kind": kind, "nemo_red": __version__}
        (target / MARKER).write_text(json.dumps(record, indent=1) + "\n")
    return new


def staging_dir(dst: Path) -> Path:
    """An empty hidden sibling of ``dst`` to write into before :func:`publish`.

    A staging directory left by a killed writer (same name) is removed first.
    """
    target = Path(dst).resolve()
    tmp = target.parent / f".{target.name}.incomplete"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, dst: Path) -> None:
    """Moves the staged ``tmp`` to ``dst``, replacing an existing ``dst`` (checked before).

    File permissions follow the umask (some writers create files readable by the owner
    only); the old directory is removed only after the new one is in place.
    """
    make_readable(tmp)
    target = Path(dst).resolve()
    if not target.exists():
        tmp.rename(target)
        return
    old = target.parent / f".{target.name}.replaced"
    if old.exists():
        shutil.rmtree(old)
    target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_readable(root: Path) -> None:
    """Gives the files under ``root`` the permissions the umask allows (0644 by default).

    safetensors writes its files with mode 0600; exported checkpoints must be as readable
    as the configs and tokenizer files beside them.
    """
    mode = 0o666 & ~_umask()
    for folder, _, files in os.walk(root):
        for name in files:
            os.chmod(Path(folder) / name, mode)
