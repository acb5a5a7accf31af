"""A per-call CPU-time budget enforced with ``SIGALRM`` (``setitimer``), main thread only.

math-verify ships its own ``signal.alarm`` timeouts, in whole seconds and once per parse or
comparison. The grader disables them and puts one budget around the whole grading of an
item instead: :func:`time_budget` arms ``ITIMER_REAL``; when it fires, a private
``BaseException`` subclass is raised in the main thread (a ``BaseException`` so that the
``except Exception`` blocks of sympy and math-verify do not swallow it). The timer re-fires
every ``retry_s`` until the block exits, in case a bare ``except:`` swallows the first one.
Code stuck in C without returning to the interpreter never sees the signal; the worker pool's
hard deadline covers that case.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class BudgetExceeded(BaseException):
    """Raised inside a :func:`time_budget` block when its time is spent."""


def require_main_thread(what: str) -> None:
    """Raise RuntimeError unless called from the main thread.

    Args:
        what: Name of the caller, for the message.

    Raises:
        RuntimeError: When called from any other thread.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            f"{what} uses SIGALRM timers and must run in the main thread of a process; "
            "from threads, use MathGrader (worker processes) instead."
        )


class _Budget:
    """State shared with the signal handler: whether a raise is still wanted."""

    def __init__(self) -> None:
        self.active = True
        self.fired = False

    def handler(self, signum: int, frame: object) -> None:
        del signum, frame
        if self.active:
            self.fired = True
            raise BudgetExceeded


@contextmanager
def time_budget(seconds: float | None, retry_s: float = 0.1) -> Iterator[_Budget]:
    """Raise :class:`BudgetExceeded` in the block once ``seconds`` of wall time have passed.

    The previous ``SIGALRM`` handler is restored on exit, and a real-time interval timer that
    was already running is re-armed with what was left of it.

    Args:
        seconds: The budget; None or a value <= 0 disables it (the block runs unguarded).
        retry_s: Interval at which the signal is repeated after the first one, until the
            block exits.

    Yields:
        An object whose ``fired`` attribute tells whether the budget ran out.

    Raises:
        RuntimeError: When used outside the main thread.
    """
    budget = _Budget()
    if seconds is None or seconds <= 0:
        yield budget
        return
    require_main_thread("time_budget")
    previous_handler = signal.signal(signal.SIGALRM, budget.handler)
    started = time.monotonic()
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds, retry_s)
    try:
        yield budget
    finally:
        budget.active = False  # from here on a late signal is a no-op
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(
            signal.SIGALRM, signal.SIG_DFL if previous_handler is None else previous_handler
        )
        if previous_delay > 0:
            left = max(previous_delay - (time.monotonic() - started), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, previous_interval)
