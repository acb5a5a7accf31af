"""Rewards: a math answer grader on math-verify, run in worker processes with timeouts."""

from nemo_red.rewards.extraction import extract_boxed, final_answer, wrap_gold
from nemo_red.rewards.grader import (
    GradeReason,
    GradeResult,
    MathGrader,
    find_unparsable_golds,
    gold_parses,
    grade_one,
)

__all__ = [
    "GradeReason",
    "GradeResult",
    "MathGrader",
    "extract_boxed",
    "final_answer",
    "find_unparsable_golds",
    "gold_parses",
    "grade_one",
    "wrap_gold",
]
