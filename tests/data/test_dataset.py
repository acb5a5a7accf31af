"""Tokenizing problems (length filtering, teacher EOS) and the resumable batch sampler."""

from __future__ import annotations

import json

import pytest

from nemo_red.data import (
    Problem,
    ProblemSampler,
    PromptTemplate,
    TokenizedProblem,
    batch_of,
    get_template,
    tokenize_problems,
)
from tests.data.helpers import tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def _problem(i: int, question: str, teacher: str | None) -> Problem:
    return Problem(f"p:{i}", question, str(i), teacher, f"train.jsonl:{i}")


def test_prompt_and_teacher_ids(tokenizer) -> None:
    template = get_template("qwen_boxed")
    problems = [_problem(1, "What is 2 + 3?", "2 + 3 = \\boxed{5}"), _problem(2, "Hi?", None)]
    kept, dropped = tokenize_problems(problems, tokenizer, template, 1000, 1000)
    assert dropped == {"prompt_too_long": 0, "teacher_too_long": 0}
    first = kept[0]
    prompt = template.render("What is 2 + 3?", tokenizer)
    assert first.prompt_ids == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert first.teacher_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(first.teacher_ids[:-1]) == "2 + 3 = \\boxed{5}"
    assert (first.uid, first.gold, first.question) == ("p:1", "1", "What is 2 + 3?")
    assert kept[1] == TokenizedProblem(
        "p:2", tokenizer(template.render("Hi?", tokenizer))["input_ids"], None, "2", "Hi?"
    )


def test_luffy_think_prefix_is_not_repeated_in_the_teacher(tokenizer) -> None:
    problems = [_problem(1, "Q", "<think>\nadd them</think> \\boxed{5}")]
    kept, _ = tokenize_problems(problems, tokenizer, get_template("luffy"), 1000, 1000)
    assert tokenizer.decode(kept[0].teacher_ids[:-1]) == "add them</think> \\boxed{5}"
    plain, _ = tokenize_problems(problems, tokenizer, get_template("qwen_boxed"), 1000, 1000)
    assert tokenizer.decode(plain[0].teacher_ids[:-1]) == "<think>\nadd them</think> \\boxed{5}"


def test_eos_override_and_no_double_eos(tokenizer) -> None:
    template = get_template("plain")
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    problems = [_problem(1, "Q", "the end"), _problem(2, "Q", "done<|im_end|>")]
    kept, _ = tokenize_problems(problems, tokenizer, template, 100, 100, eos_token_id=end)
    assert kept[0].teacher_ids[-1] == end
    default, _ = tokenize_problems(problems, tokenizer, template, 100, 100)
    assert default[1].teacher_ids.count(tokenizer.eos_token_id) == 1
    with pytest.raises(ValueError, match="must be >= 1"):
        tokenize_problems(problems, tokenizer, template, 0, 100)


def test_length_filtering_counts(tokenizer) -> None:
    template = PromptTemplate(kind="string", template="{question}")
    problems = [
        _problem(1, "a", "b"),  # prompt 1 token, teacher 2 (EOS included)
        _problem(2, "a " * 10, "b"),  # prompt too long
        _problem(3, "a", "b " * 10),  # teacher too long
        _problem(4, "a " * 10, "b " * 10),  # both: counted once, as prompt_too_long
        _problem(5, "a", None),
    ]
    lengths = [len(tokenizer(p.question)["input_ids"]) for p in problems]
    assert lengths[0] < 5 < lengths[1]
    kept, dropped = tokenize_problems(problems, tokenizer, template, 5, 5)
    assert [k.uid for k in kept] == ["p:1", "p:5"]
    assert dropped == {"prompt_too_long": 2, "teacher_too_long": 1}
    no_teacher, counts = tokenize_problems(problems, tokenizer, template, 5, 5, use_teacher=False)
    assert [k.uid for k in no_teacher] == ["p:1", "p:3", "p:5"]
    assert all(k.teacher_ids is None for k in no_teacher)
    assert counts == {"prompt_too_long": 2, "teacher_too_long": 0}
    exact = len(kept[0].teacher_ids)
    at_limit, _ = tokenize_problems(problems[:1], tokenizer, template, lengths[0], exact)
    assert len(at_limit) == 1  # a length equal to the limit is kept
    over, counts = tokenize_problems(problems[:1], tokenizer, template, 5, exact - 1)
    assert over == []
    assert counts["teacher_too_long"] == 1


def _take(sampler: ProblemSampler, n: int) -> list[list[int]]:
    return [sampler.next_batch() for _ in range(n)]


def test_sampler_deterministic_epochs() -> None:
    sampler = ProblemSampler(10, 3, seed=7)
    assert sampler.batches_per_epoch == 3
    batches = _take(sampler, 9)
    assert batches == _take(ProblemSampler(10, 3, seed=7), 9)
    assert batches != _take(ProblemSampler(10, 3, seed=8), 9)
    for epoch in range(3):
        flat = [i for batch in batches[3 * epoch : 3 * epoch + 3] for i in batch]
        assert flat == sampler.epoch_order(epoch)[:9]  # the tail of 1 is dropped
        assert len(set(flat)) == 9
    assert sampler.epoch_order(0) != sampler.epoch_order(1)
    assert sorted(sampler.epoch_order(1)) == list(range(10))
    assert sampler.epoch == 2


def test_sampler_keep_last() -> None:
    sampler = ProblemSampler(10, 3, seed=0, drop_last=False)
    assert sampler.batches_per_epoch == 4
    batches = _take(sampler, 8)
    assert [len(b) for b in batches] == [3, 3, 3, 1, 3, 3, 3, 1]
    assert sorted(i for b in batches[:4] for i in b) == list(range(10))
    assert next(iter(sampler)) == sampler.epoch_order(2)[:3]


def test_sampler_resume_equality() -> None:
    sampler = ProblemSampler(11, 4, seed=3)
    _take(sampler, 5)  # mid-epoch (2 batches per epoch)
    state = json.loads(json.dumps(sampler.state_dict()))
    expected = _take(sampler, 7)
    resumed = ProblemSampler(11, 4, seed=3)
    resumed.load_state_dict(state)
    assert _take(resumed, 7) == expected
    at_boundary = ProblemSampler(11, 4, seed=3)
    _take(at_boundary, 2)
    again = ProblemSampler(11, 4, seed=3)
    again.load_state_dict(at_boundary.state_dict())
    assert _take(again, 3) == _take(at_boundary, 3)


def test_sampler_validation() -> None:
    with pytest.raises(ValueError, match="no batch can be formed"):
        ProblemSampler(3, 4)
    assert ProblemSampler(3, 4, drop_last=False).next_batch() != []
    with pytest.raises(ValueError, match="must be >= 1"):
        ProblemSampler(0, 1)
    with pytest.raises(ValueError, match="saved seed=1, this sampler has 2"):
        ProblemSampler(5, 2, seed=2).load_state_dict(ProblemSampler(5, 2, seed=1).state_dict())
    items = ["a", "b", "c"]
    assert batch_of(items, [2, 0]) == ["c", "a"]
