"""Tokenized problems (prompt ids, teacher ids) and a resumable, deterministic batch sampler."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nemo_red.data.records import Problem
from nemo_red.data.templates import THINK_PREFIX, PromptTemplate

__all__ = [
    "DROP_REASONS",
    "ProblemSampler",
    "TokenizedProblem",
    "batch_of",
    "encode_prompts",
    "stop_token_ids",
    "tokenize_problems",
]

logger = logging.getLogger(__name__)

DROP_REASONS = ("prompt_too_long", "teacher_too_long")
_TOKENIZE_CHUNK = 512


@dataclass(frozen=True)
class TokenizedProblem:
    """A problem ready for rollouts and off-policy learning.

    Attributes:
        uid: The problem's uid.
        prompt_ids: Token ids of the rendered prompt.
        teacher_ids: Token ids of the teacher trace, ending with the EOS id; None when the
            problem has no teacher trace.
        gold: The gold answer.
        question: The question text.
    """

    uid: str
    prompt_ids: list[int]
    teacher_ids: list[int] | None
    gold: str
    question: str


def _encode(tokenizer: Any, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
    ids: list[list[int]] = []
    for start in range(0, len(texts), _TOKENIZE_CHUNK):
        chunk = list(texts[start : start + _TOKENIZE_CHUNK])
        if chunk:
            encoded = tokenizer(chunk, add_special_tokens=add_special_tokens)["input_ids"]
            ids.extend(list(x) for x in encoded)
    return ids


def encode_prompts(
    questions: Sequence[str], tokenizer: Any, template: PromptTemplate
) -> list[list[int]]:
    """Token ids of the prompts ``template`` renders for ``questions``.

    ``chat`` prompts are tokenized without added special tokens (the chat template writes
    them), ``string`` prompts with them (e.g. a BOS).
    """
    prompts = [template.render(question, tokenizer) for question in questions]
    return _encode(tokenizer, prompts, add_special_tokens=template.kind == "string")


def stop_token_ids(tokenizer: Any, vocab_size: int | None = None) -> list[int]:
    """The ids that end a completion: EOS and ``<|im_end|>`` when the tokenizer has them
    (within ``vocab_size`` when given), sorted."""
    candidates = {tokenizer.eos_token_id, tokenizer.get_vocab().get("<|im_end|>")}
    return sorted(
        t for t in candidates if isinstance(t, int) and (vocab_size is None or 0 <= t < vocab_size)
    )


def tokenize_problems(
    problems: Sequence[Problem],
    tokenizer: Any,
    template: PromptTemplate,
    max_prompt_tokens: int,
    max_response_tokens: int,
    eos_token_id: int | None = None,
    use_teacher: bool = True,
) -> tuple[list[TokenizedProblem], dict[str, int]]:
    """Render and tokenize prompts and teacher traces, dropping (never truncating) long ones.

    The prompt is tokenized as :func:`encode_prompts` does. The teacher trace is tokenized
    without special tokens, then the EOS id is appended (unless its last token already is
    EOS). When the prompt ends with ``<think>\\n`` and the trace starts with it, the trace's
    copy is removed first, as LUFFY does, so that prompt + trace holds one ``<think>``.

    Args:
        problems: Loaded problems.
        tokenizer: A Hugging Face tokenizer (callable on a list of texts).
        template: The prompt template.
        max_prompt_tokens: Problems whose prompt is longer are dropped.
        max_response_tokens: Problems whose teacher ids (EOS included) are longer are
            dropped; they could never be learned from within the response budget.
        eos_token_id: Id ending teacher traces (default: ``tokenizer.eos_token_id``).
        use_teacher: When False, teacher traces are ignored (``teacher_ids`` is None and
            never causes a drop), e.g. for evaluation sets whose ``solution`` field would
            otherwise be tokenized and length-checked.

    Returns:
        The kept problems in input order, and the number dropped per reason
        (``prompt_too_long``, ``teacher_too_long``; a problem counts under the first).

    Raises:
        ValueError: For non-positive limits, or no EOS id.
    """
    if max_prompt_tokens < 1 or max_response_tokens < 1:
        raise ValueError(
            f"max_prompt_tokens and max_response_tokens must be >= 1, got "
            f"{max_prompt_tokens} and {max_response_tokens}"
        )
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    if eos is None:
        raise ValueError("no eos_token_id given and the tokenizer has none")
    prompts = [template.render(p.question, tokenizer) for p in problems]
    prompt_ids = _encode(tokenizer, prompts, add_special_tokens=template.kind == "string")

    with_teacher = [i for i, p in enumerate(problems) if use_teacher and p.teacher is not None]
    teachers: list[str] = []
    for i in with_teacher:
        text = problems[i].teacher
        assert text is not None  # with_teacher holds only problems with a trace
        if prompts[i].endswith(THINK_PREFIX) and text.startswith(THINK_PREFIX):
            text = text[len(THINK_PREFIX) :]
        teachers.append(text)
    teacher_ids: list[list[int] | None] = [None] * len(problems)
    for i, ids in zip(with_teacher, _encode(tokenizer, teachers, False), strict=True):
        if not ids or ids[-1] != eos:
            ids.append(eos)
        teacher_ids[i] = ids

    kept: list[TokenizedProblem] = []
    dropped = dict.fromkeys(DROP_REASONS, 0)
    for problem, ids, teacher in zip(problems, prompt_ids, teacher_ids, strict=True):
        if len(ids) > max_prompt_tokens:
            dropped["prompt_too_long"] += 1
            continue
        if teacher is not None and len(teacher) > max_response_tokens:
            dropped["teacher_too_long"] += 1
            continue
        kept.append(TokenizedProblem(problem.uid, ids, teacher, problem.gold, problem.question))
    if any(dropped.values()):
        logger.info("tokenize_problems: kept %d, dropped %s", len(kept), dropped)
    return kept, dropped


class ProblemSampler:
    """Deterministic, resumable batches of problem indices.

    Each epoch is a permutation of ``range(num_problems)`` from ``random.Random(seed +
    epoch)``, cut into consecutive batches. A batch never spans two epochs: with
    ``drop_last`` the tail that does not fill a batch is dropped, without it the last batch
    of an epoch is smaller. :meth:`state_dict` / :meth:`load_state_dict` resume exactly.

    Args:
        num_problems: Number of problems (>= 1).
        batch_size: Problems per batch (>= 1; at most ``num_problems`` with ``drop_last``).
        seed: Base seed.
        drop_last: Drop each epoch's incomplete tail.
    """

    def __init__(
        self, num_problems: int, batch_size: int, seed: int = 0, drop_last: bool = True
    ) -> None:
        if num_problems < 1 or batch_size < 1:
            raise ValueError(
                f"num_problems and batch_size must be >= 1, got {num_problems} and {batch_size}"
            )
        if drop_last and batch_size > num_problems:
            raise ValueError(
                f"batch_size {batch_size} > num_problems {num_problems}: with drop_last no "
                "batch can be formed"
            )
        self.num_problems = num_problems
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self._epoch = 0
        self._cursor = 0
        self._order: list[int] | None = None

    @property
    def epoch(self) -> int:
        """The epoch the next batch is drawn from (before wrapping)."""
        return self._epoch

    @property
    def batches_per_epoch(self) -> int:
        """Batches in one epoch."""
        full, tail = divmod(self.num_problems, self.batch_size)
        return full + (1 if tail and not self.drop_last else 0)

    def epoch_order(self, epoch: int) -> list[int]:
        """The permutation of problem indices for an epoch."""
        order = list(range(self.num_problems))
        random.Random(self.seed + epoch).shuffle(order)
        return order

    def next_batch(self) -> list[int]:
        """The next batch of problem indices (wrapping to the next epoch when needed)."""
        remaining = self.num_problems - self._cursor
        if remaining <= 0 or (self.drop_last and remaining < self.batch_size):
            self._epoch += 1
            self._cursor = 0
            self._order = None
        if self._order is None:
            self._order = self.epoch_order(self._epoch)
        batch = self._order[self._cursor : self._cursor + self.batch_size]
        self._cursor += len(batch)
        return batch

    def __iter__(self) -> ProblemSampler:
        return self

    def __next__(self) -> list[int]:
        return self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        """Plain-int state (JSON-safe) from which :meth:`load_state_dict` resumes."""
        return {
            "num_problems": self.num_problems,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "drop_last": self.drop_last,
            "epoch": self._epoch,
            "cursor": self._cursor,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`.

        Raises:
            ValueError: When the saved sampler had a different number of problems, batch
                size, seed or ``drop_last`` (the batches would silently differ).
        """
        for key in ("num_problems", "batch_size", "seed", "drop_last"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"sampler state mismatch: saved {key}={state[key]!r}, "
                    f"this sampler has {getattr(self, key)!r}"
                )
        cursor = int(state["cursor"])
        if not 0 <= cursor <= self.num_problems:
            raise ValueError(f"sampler state: cursor {cursor} out of range")
        self._epoch = int(state["epoch"])
        self._cursor = cursor
        self._order = None


def batch_of(items: Sequence[Any], indices: Iterable[int]) -> list[Any]:
    """The items at ``indices`` (e.g. ``batch_of(tokenized, sampler.next_batch())``)."""
    return [items[i] for i in indices]
