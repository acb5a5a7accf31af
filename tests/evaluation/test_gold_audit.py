"""Grader audit: every gold answer of the real benchmark test sets, read through the built-in
field maps of ``nemo-red eval``, grades itself as correct.

The data is read from ``$NEMO_RED_BENCHMARK_DATA``, by default ``../shared/data/benchmarks``
next to the repository; the tests skip when it is absent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from nemo_red.evaluation import load_items, resolve_benchmarks
from nemo_red.rewards import GradeReason, MathGrader
from tests.benchmark_data import DATA_DIR, MISSING_REASON

NAMES = ("math500", "aime24", "amc23", "minerva_math", "olympiadbench", "gsm8k")


# Measured with math-verify 0.9.0 / sympy 1.14.0 (wrapped in \boxed{} by wrap_gold).
# Golds that parse to nothing: none in these sets.
UNPARSABLE = {name: [] for name in NAMES}
# Golds math-verify keeps only as raw text (strict check): they can only be matched by the
# same string, e.g. "-1./3" is not matched by "-1/3". Listed so that a parsing change shows.
TEXT_ONLY = {
    "math500": [],
    "minerva_math": [5, 27, 38, 49, 269],  # np.arcsin(10/13), dM/dt=..., -1./3, -3./2, E_{1},E_{2}
    "olympiadbench": [34, 96],  # m_{\max }=n^{2}-n-1, t(0,4]
}
SIZES = {
    "math500": 500,
    "aime24": 30,
    "amc23": 40,
    "minerva_math": 272,
    "olympiadbench": 675,
    "gsm8k": 1319,
}

pytestmark = pytest.mark.skipif(
    not DATA_DIR.is_dir(),
    reason=MISSING_REASON,
)


@pytest.fixture(scope="module")
def golds() -> dict[str, list[object]]:
    """Gold answers of each set, in file order, as ``nemo-red eval`` reads them."""
    return {
        b.name: [item.gold for item in load_items(b)]
        for b in resolve_benchmarks(NAMES, data_dir=DATA_DIR)
    }


@pytest.fixture(scope="module")
def grader() -> Iterator[MathGrader]:
    # A generous budget per item: a loaded machine must not turn a slow parse into a failure.
    with MathGrader(num_workers=2, timeout_s=30.0) as shared:
        shared.start()
        yield shared


def test_sizes(golds: dict[str, list[object]]) -> None:
    assert {name: len(values) for name, values in golds.items()} == SIZES
    assert all(gold is not None for values in golds.values() for gold in values)


def test_every_gold_grades_itself_correct(
    grader: MathGrader, golds: dict[str, list[object]]
) -> None:
    started = time.monotonic()
    total = 0
    for name, values in golds.items():
        responses = [f"... so the answer is \\boxed{{{gold}}}." for gold in values]
        results = grader.grade(responses, values)
        total += len(results)
        skipped = set(UNPARSABLE[name])
        wrong = [
            (i, values[i], r.reason.value)
            for i, r in enumerate(results)
            if i not in skipped and r.reason is not GradeReason.CORRECT
        ]
        assert not wrong, f"{name}: {wrong}"
        unparsable = [i for i, r in enumerate(results) if not r.valid]
        print(f"{name}: unparsable golds {[(i, values[i]) for i in unparsable]}")
        assert unparsable == UNPARSABLE[name], name
    elapsed = time.monotonic() - started
    print(f"graded {total} items with 2 workers in {elapsed:.1f} s ({total / elapsed:.0f}/s)")


def test_text_only_golds_are_known(grader: MathGrader, golds: dict[str, list[object]]) -> None:
    # Runs after the grading test (file order), when the workers' sympy caches are warm. The
    # sets whose golds are all plain numbers (aime24, amc23, gsm8k) are left out for time.
    for name in ("math500", "minerva_math", "olympiadbench"):
        values = golds[name]
        flagged = grader.find_unparsable_golds(values, strict=True)
        text_only = [i for i in flagged if i not in UNPARSABLE[name]]
        print(f"{name}: text-only golds {[(i, values[i]) for i in text_only]}")
        assert text_only == TEXT_ONLY[name], name


def test_golds_match_answers_written_as_a_model_would(
    grader: MathGrader, golds: dict[str, list[object]]
) -> None:
    # The field maps normalise golds: AMC's 27.0 must accept 27; OlympiadBench's
    # "$69$,$84$" becomes "69,84" and must accept "69, 84"; Minerva's gold is its boxed value.
    cases = [
        ("amc23", "27.0", "27"),
        ("olympiadbench", "69,84", "69, 84"),
        ("olympiadbench", "(1,8,19), (2,7,13), (4,5,7)", "(1, 8, 19), (2, 7, 13), (4, 5, 7)"),
        ("minerva_math", "1.6", "1.60"),
        ("gsm8k", "18", "18"),
    ]
    for name, gold, _ in cases:
        assert gold in golds[name], (name, gold)
    results = grader.grade(
        [f"The answer is \\boxed{{{answer}}}." for _, _, answer in cases],
        [gold for _, gold, _ in cases],
    )
    assert [r.reason for r in results] == [GradeReason.CORRECT] * len(cases)
