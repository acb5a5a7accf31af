"""A character-level tokenizer, a scripted engine and an exact-match grader for harness tests."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

from nemo_red.rewards import GradeReason, GradeResult, extract_boxed
from nemo_red.rollout.base import Completion, SamplingParams


class CharTokenizer:
    """Token id = code point (ids below 32 are unused); id 3 is EOS."""

    eos_token_id = 3
    chat_template = None

    def __call__(self, texts: Sequence[str], add_special_tokens: bool = True) -> dict[str, Any]:
        return {"input_ids": [[ord(c) for c in text] for text in texts]}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids if i != self.eos_token_id)

    def get_vocab(self) -> dict[str, int]:
        return {}


class ScriptedEngine:
    """Answers ``Question: q<k>`` with ``\\boxed{k}`` in samples j < k % (n + 1), else
    ``\\boxed{wrong}``; multiple-choice prompts get ``\\boxed{B}``. Each text names the seed.

    Attributes:
        calls: The number of prompts of each ``generate`` call.
        fail_after: Raise on the call after this many (a crash mid-evaluation).
    """

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[int] = []
        self.fail_after = fail_after

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("engine crashed")
        self.calls.append(len(prompts))
        out = []
        for prompt in prompts:
            text = "".join(chr(i) for i in prompt)
            match = re.search(r"Question: q(\d+)", text)
            per = []
            for j in range(params.n):
                if match is None:
                    answer = "B"
                else:
                    k = int(match.group(1))
                    answer = str(k) if j < k % (params.n + 1) else "wrong"
                body = f"seed {params.seed}: \\boxed{{{answer}}}"
                ids = [ord(c) for c in body] + [CharTokenizer.eos_token_id]
                finish = "length" if answer == "wrong" and j == 0 else "stop"
                per.append(
                    Completion(torch.tensor(ids), torch.zeros(len(ids)), finish)  # type: ignore[arg-type]
                )
            out.append(per)
        return out

    def shutdown(self) -> None:
        pass


class ExactGrader:
    """Stands in for ``MathGrader``: the boxed answer must equal the gold string."""

    def __init__(self) -> None:
        self.graded = 0

    def grade(self, responses: Sequence[str], golds: Sequence[object]) -> list[GradeResult]:
        self.graded += len(responses)
        results = []
        for response, gold in zip(responses, golds, strict=True):
            answer = extract_boxed(response)
            if gold == "unparsable":
                reason = GradeReason.UNPARSABLE_GOLD
            elif answer is None:
                reason = GradeReason.NO_ANSWER
            else:
                reason = GradeReason.CORRECT if answer == gold else GradeReason.WRONG
            results.append(GradeResult.of(reason, answer))
        return results
