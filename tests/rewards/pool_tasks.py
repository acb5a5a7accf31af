"""Picklable tasks for the worker-pool tests (imported by the spawned workers by name)."""

from __future__ import annotations

import os
import signal
import time


def echo(value: object) -> object:
    """Return the argument."""
    return value


def stuck_in_c(seconds: float) -> str:
    """Stand for code stuck in C: SIGALRM blocked, so no Python timeout can interrupt it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(seconds)
    return "finished"


def crash(code: int) -> None:
    """Die at once, as a segfault in a C extension would."""
    os._exit(code)


def fail(message: str) -> None:
    """Raise an ordinary exception."""
    raise ValueError(message)


def die_at_start() -> None:
    """An initializer that kills the worker before it is ready."""
    os._exit(3)
