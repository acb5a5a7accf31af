"""Grading generated token ids, and held-out accuracy during training."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nemo_red.data.dataset import TokenizedProblem
from nemo_red.rewards import GradeResult, MathGrader
from nemo_red.rollout.base import SamplingParams


@dataclass
class TokenGrader:
    """Decodes completions with the run's tokenizer and grades them with math-verify."""

    grader: MathGrader
    tokenizer: Any

    def grade(self, token_ids: Sequence[torch.Tensor], golds: Sequence[str]) -> list[GradeResult]:
        """One result per completion (decoded without special tokens)."""
        texts = [self.tokenizer.decode(t.tolist(), skip_special_tokens=True) for t in token_ids]
        return self.grader.grade(texts, list(golds))


def evaluate_subset(
    engine: Any, grader: TokenGrader, problems: Sequence[TokenizedProblem], params: SamplingParams
) -> dict[str, float]:
    """Accuracy, response length and truncation rate of ``params.n`` samples per problem."""
    outputs = engine.generate([p.prompt_ids for p in problems], params)
    completions = [(p, c) for p, per in zip(problems, outputs, strict=True) for c in per]
    results = grader.grade([c.token_ids for _, c in completions], [p.gold for p, _ in completions])
    count = max(len(completions), 1)
    return {
        "eval/accuracy": sum(r.reward for r in results) / count,
        "eval/response_length": sum(len(c.token_ids) for _, c in completions) / count,
        "eval/truncated": sum(c.finish_reason == "length" for _, c in completions) / count,
    }
