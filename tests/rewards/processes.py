"""Process helpers for the reward tests."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def process_gone(pid: int) -> bool:
    """True when no process (not even a zombie) has this pid, or it is another program now."""
    status = Path(f"/proc/{pid}/status")
    try:
        text = status.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
    return fields.get("PPid", "").strip() != str(os.getpid())


def _stat(path: Path) -> list[str] | None:
    """The fields of a ``/proc/.../stat`` file from the state on (field 3 of proc(5))."""
    try:
        text = path.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces


def child_ended(pid: int) -> bool:
    """True when a child process has ended, all its threads included, and can be reaped.

    It is left unreaped (``WNOWAIT``), for its parent's own ``waitpid``. A zombie state in
    ``/proc`` is not enough: the main thread of a killed process shows as a zombie while its
    other threads still exit, and ``waitpid`` does not report it yet.
    """
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def main_thread_cpu_ticks(pid: int) -> int:
    """Clock ticks of CPU time (user + system) used by the main thread of a live process.

    A grader worker's main thread runs only while it has items; it waits on its pipe
    otherwise (the thread that watches the parent is not counted).
    """
    fields = _stat(Path(f"/proc/{pid}/task/{pid}/stat"))
    assert fields is not None, f"process {pid} is gone"
    return int(fields[11]) + int(fields[12])  # utime and stime, fields 14 and 15


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not {what} after {timeout_s:g} s"
        time.sleep(0.01)
