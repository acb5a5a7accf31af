"""The training reward of generated token ids: decode with the run's tokenizer, grade with
math-verify (:class:`~nemo_red.rewards.grader.MathGrader`, in worker processes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nemo_red.rewards.grader import GradeResult, MathGrader


@dataclass
class TokenRewards:
    """Rewards completions given as token ids.

    Attributes:
        grader: grades decoded responses against gold answers.
        tokenizer: the run's tokenizer.
    """

    grader: MathGrader
    tokenizer: Any

    def grade(self, token_ids: Sequence[torch.Tensor], golds: Sequence[str]) -> list[GradeResult]:
        """One result per completion (decoded without special tokens)."""
        texts = [self.tokenizer.decode(t.tolist(), skip_special_tokens=True) for t in token_ids]
        return self.grader.grade(texts, list(golds))

    def close(self) -> None:
        """Stops the grader's worker processes."""
        self.grader.close()
