"""The generic worker pool, with synthetic tasks: stuck, crashing and failing workers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from nemo_red.rewards.worker_pool import WorkerPool
from tests.rewards import pool_tasks
from tests.rewards.processes import process_gone


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    shared = WorkerPool(num_workers=2, hard_timeout_s=1.5, chunk_size=4)
    yield shared
    shared.close()


def test_map_keeps_order(pool: WorkerPool) -> None:
    outcomes = pool.map(pool_tasks.echo, [(i,) for i in range(100)])
    assert [o.value for o in outcomes] == list(range(100))
    assert all(o.ok for o in outcomes)
    assert pool.map(pool_tasks.echo, []) == []


def test_stuck_worker_is_killed_at_hard_deadline(pool: WorkerPool) -> None:
    restarts = pool.restarts
    started = time.monotonic()
    items = [(0.0,), (30.0,), (0.0,), (0.0,)]
    outcomes = pool.map(pool_tasks.stuck_in_c, items)
    assert time.monotonic() - started < 1.5 + 10.0
    assert [o.ok for o in outcomes] == [True, False, True, True]
    assert outcomes[1].value.startswith("killed")
    assert pool.restarts == restarts + 1
    assert [o.value for o in pool.map(pool_tasks.echo, [(1,), (2,)])] == [1, 2]


def test_crashing_worker_is_replaced(pool: WorkerPool) -> None:
    pids = pool.pids
    outcomes = pool.map(pool_tasks.crash, [(7,)])
    assert not outcomes[0].ok
    assert outcomes[0].value == "died: exit code 7"
    assert [o.value for o in pool.map(pool_tasks.echo, [("x",)] * 8)] == ["x"] * 8
    assert sum(process_gone(pid) for pid in pids) == 1


def test_task_exception_is_reported(pool: WorkerPool) -> None:
    [outcome] = pool.map(pool_tasks.fail, [("boom",)])
    assert not outcome.ok
    assert outcome.value == "error: ValueError: boom"


def test_workers_that_cannot_start_raise() -> None:
    broken = WorkerPool(num_workers=1, hard_timeout_s=1.0, initializer=pool_tasks.die_at_start)
    try:
        with pytest.raises(RuntimeError, match="failed to start 3 times"):
            broken.map(pool_tasks.echo, [(1,)])
    finally:
        broken.close()
    assert broken.pids == []


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="num_workers"):
        WorkerPool(num_workers=0, hard_timeout_s=1.0)
    with pytest.raises(ValueError, match="hard_timeout_s"):
        WorkerPool(num_workers=1, hard_timeout_s=0.0)
