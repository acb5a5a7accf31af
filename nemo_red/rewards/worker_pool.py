"""A small pool of worker processes that runs a task over items with per-item hard deadlines.

Why not ``multiprocessing.Pool`` or ``concurrent.futures``: neither can kill one stuck task and
carry on. Here each worker owns a ``Pipe``; the parent hands out small chunks of items, reads
one reply per item with ``multiprocessing.connection.wait``, and keeps a rolling deadline per
worker (``hard_timeout_s`` after dispatch or after its last reply). A worker that misses it
is SIGKILLed and replaced; a worker that dies is replaced too. The items it had not answered
come back as failed outcomes; the call itself never hangs and never raises for them.

Workers use the "spawn" start method (the parent may hold torch threads, which fork does not
survive), run in their main thread (so tasks may use ``SIGALRM``), and leave when the parent
closes the pool, when the pipe breaks, or when the parent process disappears.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, NamedTuple

_READY = "ready"
MAX_START_FAILURES = 3
_PARENT_POLL_S = 1.0


class Outcome(NamedTuple):
    """What became of one item.

    Attributes:
        ok: True when the task returned.
        value: The task's return value when ok; else a short description of the failure
            (``"error: ..."``, ``"killed: ..."``, ``"died: ..."``).
    """

    ok: bool
    value: Any


def _watch_parent(parent_pid: int) -> None:
    """Exit the worker when its parent is gone (runs in a daemon thread of the worker)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # SIGALRM is for the main thread
    while os.getppid() == parent_pid:
        time.sleep(_PARENT_POLL_S)
    os._exit(0)


def _worker_main(conn: Connection, parent_pid: int, initializer: Callable[[], None] | None) -> None:
    """Loop of a worker process: receive chunks, answer each item as soon as it is done."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if initializer is not None:
        initializer()
    conn.send(_READY)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:  # leave now: a full interpreter teardown with sympy takes ~1 s
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        task, chunk = message
        for index, args in chunk:
            try:
                reply = (index, True, task(*args))
            except Exception as exc:
                reply = (index, False, f"error: {type(exc).__name__}: {exc}"[:500])
            try:
                conn.send(reply)
            except (OSError, ValueError):
                return


@dataclass(eq=False)
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    deadline: float
    ready: bool = False
    answered: bool = False
    pending: set[int] = field(default_factory=set)


def _stop(worker: _Worker, grace_s: float = 0.0) -> None:
    """Wait up to ``grace_s`` for a worker to leave, then kill it if it is still there."""
    if grace_s > 0:
        worker.process.join(timeout=grace_s)
    if worker.process.is_alive():
        worker.process.kill()
        worker.process.join(timeout=5.0)
    worker.conn.close()


def _shutdown(slots: list[_Worker | None]) -> None:
    """Stop every worker: idle ones are asked to leave (all at once), busy ones are killed."""
    workers = [w for w in slots if w is not None]
    slots[:] = [None] * len(slots)
    for worker in workers:
        if not worker.pending:
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send(None)
    for worker in workers:
        _stop(worker, grace_s=0.0 if worker.pending else 2.0)


class WorkerPool:
    """Run a picklable top-level function over items in worker processes, with hard deadlines.

    Args:
        num_workers: Number of worker processes.
        hard_timeout_s: Seconds a worker may spend on one item (counted from dispatch or from
            its previous reply) before it is killed.
        chunk_size: Most items sent to a worker at once.
        initializer: Optional picklable top-level function each worker runs once at start.
        startup_timeout_s: Seconds a fresh worker gets to import and initialize. Work is only
            sent to workers that said they are ready, so a slow start delays, never fails,
            items; workers that die or time out at start :data:`MAX_START_FAILURES` times in
            a row raise RuntimeError (a broken environment, not a bad item).
    """

    def __init__(
        self,
        num_workers: int,
        hard_timeout_s: float,
        chunk_size: int = 8,
        initializer: Callable[[], None] | None = None,
        startup_timeout_s: float = 120.0,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if hard_timeout_s <= 0:
            raise ValueError(f"hard_timeout_s must be > 0, got {hard_timeout_s}")
        self.num_workers = num_workers
        self.hard_timeout_s = hard_timeout_s
        self.chunk_size = max(1, chunk_size)
        self.startup_timeout_s = startup_timeout_s
        self.restarts = 0
        self._initializer = initializer
        self._context = multiprocessing.get_context("spawn")
        self._slots: list[_Worker | None] = [None] * num_workers
        self._start_failures = 0
        self._last_failure = ""
        self._closed = False
        self._finalizer = weakref.finalize(self, _shutdown, self._slots)

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers, by slot."""
        return [w.process.pid for w in self._slots if w is not None and w.process.pid is not None]

    def start(self) -> None:
        """Start the workers now and wait until all are ready, instead of at the first map.

        Raises:
            RuntimeError: When workers keep failing to start.
        """
        self._start_failures = 0
        while True:
            self._check_start_failures()
            for slot in range(self.num_workers):
                if self._slots[slot] is None:
                    self._spawn(slot)
            starting = [w for w in self._slots if w is not None and not w.ready]
            if not starting:
                return
            timeout = max(0.0, min(w.deadline for w in starting) - time.monotonic())
            for conn in wait([w.conn for w in starting], timeout=timeout):
                self._receive(self._owner(conn), [])
            now = time.monotonic()
            for worker in starting:
                if worker in self._slots and not worker.ready and now >= worker.deadline:
                    self._discard(worker, [], "killed: no reply in startup time")

    def map(self, task: Callable[..., Any], items: Sequence[tuple]) -> list[Outcome]:
        """Run ``task(*item)`` for every item; outcomes come back in input order.

        Args:
            task: A top-level (picklable by reference) function.
            items: Argument tuples, one per call.

        Returns:
            One :class:`Outcome` per item.

        Raises:
            RuntimeError: When the pool is closed, or workers keep failing to start.
        """
        if self._closed:
            raise RuntimeError("the worker pool is closed")
        self._start_failures = 0
        outcomes: list[Outcome | None] = [None] * len(items)
        size = max(1, min(self.chunk_size, math.ceil(len(items) / (4 * self.num_workers))))
        queue = deque(
            [(i, items[i]) for i in range(start, min(start + size, len(items)))]
            for start in range(0, len(items), size)
        )
        try:
            while queue or any(w is not None and w.pending for w in self._slots):
                self._fill(task, queue, outcomes)
                watched = [
                    w
                    for w in self._slots
                    if w is not None and (w.pending or (queue and not w.ready))
                ]
                if not watched:
                    continue
                timeout = max(0.0, min(w.deadline for w in watched) - time.monotonic())
                for conn in wait([w.conn for w in watched], timeout=timeout):
                    self._receive(self._owner(conn), outcomes)
                now = time.monotonic()
                for worker in watched:
                    if worker in self._slots and now >= worker.deadline:
                        why = "no reply in " + (
                            f"{self.hard_timeout_s:g} s" if worker.ready else "startup time"
                        )
                        self._discard(worker, outcomes, "killed: " + why)
        except BaseException:
            for w in self._slots:  # interrupted: busy workers hold stale work
                if w is not None and w.pending:
                    self._discard(w, outcomes, "killed: interrupted")
            raise
        return [o if o is not None else Outcome(False, "lost") for o in outcomes]

    def close(self) -> None:
        """Stop all workers (idempotent); the pool cannot be used afterwards."""
        self._closed = True
        self._finalizer()

    def _fill(self, task: Callable, queue: deque, outcomes: list) -> None:
        """Replace dead workers and hand a chunk to every ready, idle one."""
        for slot in range(self.num_workers):
            self._check_start_failures()
            worker = self._slots[slot]
            if worker is not None and not worker.pending and not worker.process.is_alive():
                self._discard(worker, outcomes, "died while idle")
                worker = None
            if worker is None:
                if not queue:
                    continue
                worker = self._spawn(slot)
            if worker.ready and not worker.pending and queue:
                chunk = queue.popleft()
                try:
                    worker.conn.send((task, chunk))
                except (OSError, ValueError):
                    queue.appendleft(chunk)  # never started: give it to a fresh worker
                    self._discard(worker, outcomes, "died before dispatch")
                    continue
                worker.pending = {index for index, _ in chunk}
                worker.deadline = time.monotonic() + self.hard_timeout_s

    def _check_start_failures(self) -> None:
        if self._start_failures >= MAX_START_FAILURES:
            raise RuntimeError(
                f"grader workers failed to start {self._start_failures} times in a row "
                f"(last: {self._last_failure})"
            )

    def _owner(self, conn: object) -> _Worker:
        # ``wait`` is typed to return sockets and file descriptors too; ours are connections.
        return next(w for w in self._slots if w is not None and w.conn is conn)

    def _spawn(self, slot: int) -> _Worker:
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main,
            args=(child_conn, os.getpid(), self._initializer),
            name=f"nemo_red-grader-{slot}",
            daemon=not multiprocessing.current_process().daemon,
        )
        process.start()
        child_conn.close()
        worker = _Worker(process, parent_conn, time.monotonic() + self.startup_timeout_s)
        self._slots[slot] = worker
        return worker

    def _receive(self, worker: _Worker, outcomes: list) -> None:
        """Read every message waiting on a worker's pipe; handle its death."""
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if message == _READY:
                    worker.ready = True
                    continue
                index, ok, value = message
                if index in worker.pending:
                    worker.pending.discard(index)
                    outcomes[index] = Outcome(ok, value)
                    worker.answered = True
                    worker.deadline = time.monotonic() + self.hard_timeout_s
                    self._start_failures = 0
        except (EOFError, OSError):
            worker.process.join(timeout=1.0)
            self._discard(worker, outcomes, f"died: exit code {worker.process.exitcode}")

    def _discard(self, worker: _Worker, outcomes: list, why: str) -> None:
        """Kill a worker, fail its unanswered items, and free its slot for a fresh one."""
        if not worker.pending and not worker.answered:
            self._start_failures += 1
            self._last_failure = why
        for index in worker.pending:
            outcomes[index] = Outcome(False, why)
        worker.pending = set()
        self._slots[self._slots.index(worker)] = None
        _stop(worker)
        self.restarts += 1
