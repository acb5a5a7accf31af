"""Pathological and adversarial inputs: every call returns in bounded time, the pool survives."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from nemo_red.rewards import GradeReason, MathGrader
from tests.rewards.processes import (
    child_ended,
    main_thread_cpu_ticks,
    process_gone,
    wait_until,
)

# Answers that send sympy into a practically endless computation.
PATHOLOGICAL = ["2^{2^{2^{2^{100}}}}", "10^{10^{10}}!", "(10^{9})!", "9^{9^{9^{9}}}"]


@pytest.fixture(scope="module")
def short_grader() -> Iterator[MathGrader]:
    with MathGrader(num_workers=2, timeout_s=1.0, hard_timeout_s=4.0) as shared:
        shared.start()
        yield shared


def test_pathological_answers_time_out(short_grader: MathGrader) -> None:
    started = time.monotonic()
    results = short_grader.grade([f"\\boxed{{{a}}}" for a in PATHOLOGICAL], ["5"] * 4)
    elapsed = time.monotonic() - started
    assert [r.reason for r in results] == [GradeReason.TIMEOUT] * 4
    assert [r.extracted for r in results] == PATHOLOGICAL
    # Two workers, four items of at most timeout_s (SIGALRM) or hard_timeout_s (kill) each.
    assert elapsed < 2 * 4.0 + 5.0
    [after] = short_grader.grade(["\\boxed{\\frac{1}{2}}"], ["0.5"])
    assert after.reason is GradeReason.CORRECT


def test_adversarial_inputs_never_hang(short_grader: MathGrader) -> None:
    nested = 100_000
    cases = [
        ("x" * 1_000_000 + "\\boxed{5}", "5"),
        ("\\boxed{" + "{" * nested, "5"),
        ("\\boxed{" + "{" * nested + "1" + "}" * nested + "}", "1"),
        ("\\boxed{" + "\\frac{1}{" * 60 + "2" + "}" * 60 + "}", "5"),
        ("\\boxed{" + "{" * 300 + "1" + "}" * 300 + "}", "1"),
        ("\\boxed{5\x00}\x00\x00", "5"),
        ("\x00" * 10_000, "5"),
        ("\\boxed{\ud800\udfff\uffff}", "5"),  # lone surrogates survive the pipe
        ("\\boxed{" + os.urandom(3000).decode("latin-1") + "}", "5"),
        ("\\boxed{\\sqrt{\\sqrt{\\sqrt{" * 200, "5"),
        ("\\boxed{5}", "{" * 3000),  # adversarial gold
        ("\\boxed{1}", "\\boxed{" * 1000),
        ("\\boxed{\\begin{pmatrix}" + "1&" * 2000 + "\\end{pmatrix}}", "5"),
    ]
    started = time.monotonic()
    results = short_grader.grade([c[0] for c in cases], [c[1] for c in cases])
    elapsed = time.monotonic() - started
    assert len(results) == len(cases)
    assert all(isinstance(r.reason, GradeReason) for r in results)
    assert results[0].reason is GradeReason.CORRECT
    assert results[1].reason is GradeReason.NO_ANSWER
    assert results[2].reason is GradeReason.UNPARSABLE_ANSWER  # longer than MAX_ANSWER_CHARS
    # At most hard_timeout_s per item, spread over two workers; usually a few seconds.
    assert elapsed < len(cases) * 4.0 / 2 + 5.0
    [after] = short_grader.grade(["\\boxed{x^2+1}"], ["1+x^2"])
    assert after.reason is GradeReason.CORRECT


def test_worker_killed_from_outside() -> None:
    # A hard deadline far beyond the test: only the kill from outside can end item 0.
    with MathGrader(num_workers=2, timeout_s=1.0, hard_timeout_s=120.0) as grader:
        grader.start()
        victim, other = grader.worker_pids
        restarts = grader.restarts
        # One item per chunk, handed out by slot in one pass: the victim takes item 0, the
        # other worker item 1 (both slow), then the rest. The victim is stopped first, so it
        # still holds item 0 when it is killed, however late that is.
        responses = [f"\\boxed{{{PATHOLOGICAL[0]}}}", f"\\boxed{{{PATHOLOGICAL[1]}}}"]
        responses += [f"\\boxed{{{i}}}" for i in range(4)]
        golds = ["5", "5", "0", "1", "2", "3"]
        os.kill(victim, signal.SIGSTOP)
        idle = main_thread_cpu_ticks(other)
        box: list = []
        thread = threading.Thread(target=lambda: box.append(grader.grade(responses, golds)))
        thread.start()
        # The other worker computes only once it has item 1, sent after item 0 to the victim.
        wait_until(lambda: main_thread_cpu_ticks(other) > idle, "grading item 1")
        os.kill(victim, signal.SIGKILL)
        thread.join(timeout=60)  # well before the hard deadline: the death itself was seen
        assert not thread.is_alive()
        [results] = box
        assert [r.reason for r in results] == [GradeReason.TIMEOUT] * 2 + [GradeReason.CORRECT] * 4
        assert results[0].extracted == PATHOLOGICAL[0]  # filled in by the parent for a dead worker
        assert grader.restarts == restarts + 1
        assert victim not in grader.worker_pids
        assert process_gone(victim)
        [after] = grader.grade(["\\boxed{7}"], ["7"])
        assert after.reason is GradeReason.CORRECT


def test_worker_killed_between_calls(short_grader: MathGrader) -> None:
    short_grader.start()
    victim = short_grader.worker_pids[-1]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: child_ended(victim), "ended")  # for the pool to find, unreaped
    results = short_grader.grade(["\\boxed{7}", "\\boxed{8}"], ["7", "8"])
    assert [r.reason for r in results] == [GradeReason.CORRECT] * 2
    assert victim not in short_grader.worker_pids
    assert process_gone(victim)


def test_hard_deadline_kills_and_replaces_worker() -> None:
    # A SIGALRM budget longer than the hard deadline: only the kill can end the item,
    # as for code stuck in C where the signal is never handled.
    with MathGrader(num_workers=1, timeout_s=60.0, hard_timeout_s=2.0) as grader:
        grader.start()
        [first_pid] = grader.worker_pids
        started = time.monotonic()
        results = grader.grade(["\\boxed{10^{10^{10}}!}", "\\boxed{3}"], ["5", "3"])
        elapsed = time.monotonic() - started
        assert [r.reason for r in results] == [GradeReason.TIMEOUT, GradeReason.CORRECT]
        assert [r.extracted for r in results] == ["10^{10^{10}}!", "3"]
        assert elapsed < 2.0 + 30.0  # the kill, then a fresh worker's start-up
        assert grader.restarts == 1
        assert first_pid not in grader.worker_pids
        assert process_gone(first_pid)
        pids = grader.worker_pids
    assert all(process_gone(pid) for pid in pids)


def test_no_leaked_processes_after_close() -> None:
    grader = MathGrader(num_workers=2, timeout_s=1.0)
    grader.start()
    pids = grader.worker_pids
    assert len(pids) == 2
    assert not any(process_gone(pid) for pid in pids)
    grader.close()
    assert all(process_gone(pid) for pid in pids)


def test_workers_stopped_when_grader_is_collected() -> None:
    grader = MathGrader(num_workers=1)
    grader.start()
    pids = grader.worker_pids
    del grader
    assert all(process_gone(pid) for pid in pids)
