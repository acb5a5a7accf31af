"""The SIGALRM budget: fires, restores what was there before, refuses threads."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from nemo_red.rewards import grade_one
from nemo_red.rewards.time_budget import BudgetExceeded, time_budget


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_budget_fires_and_restores_handler() -> None:
    def previous(signum: int, frame: object) -> None:
        del signum, frame

    old = signal.signal(signal.SIGALRM, previous)
    try:
        started = time.monotonic()
        with pytest.raises(BudgetExceeded), time_budget(0.2):
            _spin(5.0)
        assert time.monotonic() - started < 1.0
        assert signal.getsignal(signal.SIGALRM) is previous
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        signal.signal(signal.SIGALRM, old)


def _spin_swallowing(swallowed: list[int], times: int) -> None:
    """Spin, swallowing the first ``times - 1`` interruptions as a careless bare except would."""
    while True:
        try:
            _spin(2.0)
        except BaseException:
            swallowed.append(1)
            if len(swallowed) == times:
                raise


def test_budget_is_retried_when_swallowed() -> None:
    swallowed: list[int] = []
    started = time.monotonic()
    with pytest.raises(BudgetExceeded), time_budget(0.1, retry_s=0.05):
        _spin_swallowing(swallowed, times=3)
    assert len(swallowed) == 3
    assert time.monotonic() - started < 1.0


def test_budget_not_spent_and_outer_timer_rearmed() -> None:
    fired = []
    old = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with time_budget(5.0) as budget:
            pass
        assert not budget.fired
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0.0 < remaining <= 0.5
        time.sleep(0.7)
        assert fired == [True]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_budget_disabled() -> None:
    with time_budget(None) as budget:
        time.sleep(0.01)
    assert not budget.fired


def test_grade_one_refuses_threads() -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            grade_one("\\boxed{1}", "1")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert isinstance(errors[0], RuntimeError)
    assert "main thread" in str(errors[0])
