"""Grade math answers against gold answers with math-verify, in worker processes with timeouts.

:func:`grade_one` (from :mod:`nemo_red.rewards.verification`) is the pure grading function;
it times itself with ``SIGALRM`` and so runs in the main thread of a process only.
:class:`MathGrader` runs it in a :class:`~nemo_red.rewards.worker_pool.WorkerPool` of spawned
processes: a pathological answer (``\\boxed{10^{10^{10}}!}``) costs at most ``timeout_s``, and
one that wedges a worker in C code, where the signal is never handled, costs a killed and
replaced worker after ``hard_timeout_s``; neither hangs nor crashes the training loop.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Sequence
from types import TracebackType

from nemo_red.rewards.extraction import final_answer
from nemo_red.rewards.verification import (
    DEFAULT_TIMEOUT_S,
    GradeReason,
    GradeResult,
    gold_parses,
    grade_one,
)
from nemo_red.rewards.worker_pool import Outcome, WorkerPool

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "GradeReason",
    "GradeResult",
    "MathGrader",
    "find_unparsable_golds",
    "gold_parses",
    "grade_one",
]


def _grade_task(response: str, gold: object, think_split: bool, timeout_s: float) -> tuple:
    """Worker-side entry point: :func:`grade_one`, with a compact picklable result."""
    result = grade_one(response, gold, think_split, timeout_s)
    return result.reason.value, result.extracted


def _init_worker() -> None:
    """Import math-verify and warm its parser up, before the worker says it is ready."""
    grade_one("\\boxed{1}", "1", timeout_s=None)


def _to_result(outcome: Outcome, response: str, think_split: bool) -> GradeResult:
    if not outcome.ok:  # killed at the hard deadline, died, or (never seen) raised
        return GradeResult.of(GradeReason.TIMEOUT, final_answer(response, think_split))
    reason, extracted = outcome.value
    return GradeResult.of(GradeReason(reason), extracted)


class MathGrader:
    """Grades batches of responses in a pool of worker processes.

    Use as a context manager, or call :meth:`close` (also run on garbage collection and at
    interpreter exit). Workers start at the first call, or at :meth:`start`. Calls from
    several threads are serialized.

    Args:
        num_workers: Number of worker processes.
        timeout_s: Budget per item inside a worker (``SIGALRM``); spent: reason ``timeout``.
        think_split: Only grade the text after the last ``</think>``.
        hard_timeout_s: Seconds per item after which a worker that has not answered is
            killed (its unanswered items: ``timeout``) and replaced; default
            ``2 * timeout_s + 1``.
        chunk_size: Most items handed to a worker at once.
    """

    def __init__(
        self,
        num_workers: int = 2,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        think_split: bool = False,
        hard_timeout_s: float | None = None,
        chunk_size: int = 8,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s
        self.think_split = think_split
        self.hard_timeout_s = 2 * timeout_s + 1 if hard_timeout_s is None else hard_timeout_s
        self._pool = WorkerPool(
            num_workers, self.hard_timeout_s, chunk_size=chunk_size, initializer=_init_worker
        )
        self._stats: Counter[GradeReason] = Counter()
        self._lock = threading.Lock()  # one call at a time on the pool
        self._stats_lock = threading.Lock()

    @property
    def stats(self) -> Counter[GradeReason]:
        """Counts of the reasons graded so far (a copy)."""
        with self._stats_lock:
            return Counter(self._stats)

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (for tests and monitoring)."""
        return self._pool.pids

    @property
    def restarts(self) -> int:
        """How many workers were killed or found dead, and replaced, so far."""
        return self._pool.restarts

    def start(self) -> None:
        """Start the workers now and wait until they are ready (else: at the first call)."""
        with self._lock:
            self._pool.start()

    def grade(self, responses: Sequence[str], golds: Sequence[object]) -> list[GradeResult]:
        """Grade responses against golds.

        Args:
            responses: Model responses (a non-string counts as an empty response).
            golds: Gold answers, one per response (strings, or numbers from JSON).

        Returns:
            One :class:`GradeResult` per response, in input order. Items whose worker missed
            its hard deadline or died get reason ``timeout``.

        Raises:
            ValueError: When the two sequences differ in length.
            RuntimeError: When the grader is closed, or its workers cannot start.
        """
        if len(responses) != len(golds):
            raise ValueError(
                f"responses and golds differ in length: {len(responses)} != {len(golds)}"
            )
        items = [
            (r if isinstance(r, str) else "", g, self.think_split, self.timeout_s)
            for r, g in zip(responses, golds, strict=True)
        ]
        with self._lock:
            outcomes = self._pool.map(_grade_task, items)
        results = [
            _to_result(outcome, item[0], self.think_split)
            for outcome, item in zip(outcomes, items, strict=True)
        ]
        with self._stats_lock:
            self._stats.update(result.reason for result in results)
        return results

    def find_unparsable_golds(self, golds: Sequence[object], strict: bool = False) -> list[int]:
        """Indices of gold answers that parse to nothing (or not within ``timeout_s``).

        Args:
            golds: Gold answers.
            strict: Also list golds that math-verify keeps only as raw text (see
                :func:`gold_parses`).

        Returns:
            The sorted indices of golds that cannot be graded against.
        """
        items = [(gold, self.timeout_s, strict) for gold in golds]
        with self._lock:
            outcomes = self._pool.map(gold_parses, items)
        return [i for i, outcome in enumerate(outcomes) if not (outcome.ok and outcome.value)]

    def close(self) -> None:
        """Stop the workers. Idempotent; the grader cannot be used afterwards."""
        with self._lock:
            self._pool.close()

    def __enter__(self) -> MathGrader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)  # absent when __init__ raised
        if pool is not None:
            pool.close()


def find_unparsable_golds(
    golds: Sequence[object],
    num_workers: int = 2,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    strict: bool = False,
    grader: MathGrader | None = None,
) -> list[int]:
    """Indices of gold answers that parse to nothing, checked in worker processes.

    For data validation at load time: such items cannot be graded and must be reported.

    Args:
        golds: Gold answers (strings, or numbers from JSON).
        num_workers: Workers of the temporary grader (when ``grader`` is None).
        timeout_s: Budget per gold in seconds (when ``grader`` is None).
        strict: Also list golds that math-verify keeps only as raw text.
        grader: An existing grader whose workers to use.

    Returns:
        The sorted indices of unparsable golds.
    """
    if grader is not None:
        return grader.find_unparsable_golds(golds, strict=strict)
    workers = max(1, min(num_workers, math.ceil(len(golds) / 8)))
    with MathGrader(num_workers=workers, timeout_s=timeout_s) as temporary:
        return temporary.find_unparsable_golds(golds, strict=strict)
