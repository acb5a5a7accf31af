"""An exclusive lock on a directory, held for a process's lifetime.

``flock`` on ``<directory>/nemo_red.lock``: the operating system releases it when the
process ends, however it ends (a SIGKILL included), so a stale lock never blocks a
restart. The file records the holder (PID, host, start time) so that a refused second
process can say who holds it. ``flock`` locks are also honoured over NFS on Linux.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
from pathlib import Path
from types import TracebackType

__all__ = ["LOCK_FILE", "DirectoryLock", "LockedError"]

LOCK_FILE = "nemo_red.lock"


class LockedError(RuntimeError):
    """Another process holds the directory's lock; the message names it."""


class DirectoryLock:
    """The lock of one directory (a context manager; :meth:`release` also works).

    Args:
        directory: The directory (it must exist).
        purpose: What the holder does, for the refusal message (e.g. "training").
    """

    def __init__(self, directory: Path, purpose: str = "writing") -> None:
        self.path = Path(directory) / LOCK_FILE
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        """Takes the lock at once or raises :class:`LockedError` naming the holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace")
            os.close(fd)
            raise LockedError(
                f"{self.path.parent} is in use: {_describe(holder)} holds {self.path}; wait "
                "for it to end (or stop it), or use another directory"
            ) from None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "purpose": self.purpose,
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Releases the lock (the file stays; its record is stale from then on)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _describe(holder: str) -> str:
    try:
        record = json.loads(holder)
        return (
            f"PID {record['pid']} on host {record['host']} ({record['purpose']} since "
            f"{record['since']})"
        )
    except (ValueError, KeyError, TypeError):
        return "another process"
