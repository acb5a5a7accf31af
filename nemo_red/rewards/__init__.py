"""Rewards: a math answer grader on math-verify, run in worker processes with timeouts, and
the training reward of token ids (:class:`TokenRewards`)."""

from nemo_red.rewards.extraction import extract_boxed, final_answer, wrap_gold
from nemo_red.rewards.grader import (
    GradeReason,
    GradeResult,
    MathGrader,
    find_unparsable_golds,
    gold_parses,
    grade_one,
)
from nemo_red.rewards.token_rewards import TokenRewards

__all__ = [
    "GradeReason",
    "GradeResult",
    "MathGrader",
    "TokenRewards",
    "extract_boxed",
    "final_answer",
    "find_unparsable_golds",
    "gold_parses",
    "grade_one",
    "wrap_gold",
]
