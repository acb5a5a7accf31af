"""The generated arithmetic task, and the small BPE tokenizer trained on it."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from nemo_red.data.arithmetic import (
    LEVELS,
    ArithmeticTask,
    evaluate,
    split_of,
    teacher_trace,
    write_jsonl,
)
from nemo_red.data.tokenizer import CHAT_TEMPLATE, train_tokenizer
from nemo_red.rewards.grader import grade_one

STEP = re.compile(r"^(-?\d+) ([-+*]) (\d+) = (-?\d+)$")


def test_trace_multiplies_first() -> None:
    assert teacher_trace([7, 5, 3], ["+", "*"]) == (
        "5 * 3 = 15. 7 + 15 = 22. The answer is \\boxed{22}."
    )
    assert teacher_trace([3, 8], ["-"]) == "3 - 8 = -5. The answer is \\boxed{-5}."
    assert teacher_trace([2, 3, 4, 5, 6], ["*", "-", "*", "+"]) == (
        "2 * 3 = 6. 4 * 5 = 20. 6 - 20 = -14. -14 + 6 = -8. The answer is \\boxed{-8}."
    )
    assert evaluate([9, 0, 9, 9], ["-", "*", "-"]) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_operands": 1},
        {"min_operands": 3, "max_operands": 2},
        {"max_operands": 7},
        {"max_value": 0},
        {"operators": ""},
        {"operators": "+/"},
        {"operators": "++"},
        {"test_fraction": 0.0},
    ],
)
def test_bad_config(kwargs: dict) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        ArithmeticTask(**kwargs)


def test_levels_and_canonical_operators() -> None:
    assert ArithmeticTask(operators="*+-").operators == "+-*"
    assert ArithmeticTask.level(1) == ArithmeticTask()
    assert ArithmeticTask.level(1).space_size(2) == 200
    for level in LEVELS:
        assert ArithmeticTask.level(level, seed=5).seed == 5
    with pytest.raises(ValueError, match="unknown level"):
        ArithmeticTask.level(0)
    with pytest.raises(ValueError, match="split"):
        ArithmeticTask().generate(1, split="dev")  # type: ignore[arg-type]


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_rows_are_exact_and_steps_correct(level: int) -> None:
    task = ArithmeticTask.level(level, seed=1)
    counts = Counter()
    for split in ("train", "test"):
        for row in task.generate(200, split):
            assert set(row) == {"uid", "problem", "answer", "distill"}
            expr = row["problem"].removeprefix("Compute ").removesuffix(".")
            assert int(row["answer"]) == eval(expr)  # generated digits and operators only
            operands = re.findall(r"\d+", expr)
            counts[len(operands)] += 1
            assert all(0 <= int(v) <= task.max_value for v in operands)
            *steps, last = row["distill"].split(". ")
            assert last == f"The answer is \\boxed{{{row['answer']}}}."
            assert len(steps) == len(operands) - 1
            for step in steps:
                a, op, b, c = STEP.match(step).groups()  # type: ignore[union-attr]
                assert eval(f"({a}) {op} {b}") == int(c)
            assert split_of(row["problem"], task.test_fraction) == split
    assert set(counts) == set(range(task.min_operands, task.max_operands + 1))


def test_every_teacher_trace_grades_correct() -> None:
    rows = [
        row
        for level in LEVELS
        for split in ("train", "test")
        for row in ArithmeticTask.level(level, seed=2).generate(30, split)
    ]
    assert len(rows) == 300
    for row in rows:
        assert grade_one(row["distill"], row["answer"]).reward == 1.0, row
    for row in rows[::10]:  # and the grader is not fooled by the steps
        wrong = row["distill"].replace(f"{{{row['answer']}}}", f"{{{int(row['answer']) + 1}}}")
        assert grade_one(wrong, row["answer"]).reward == 0.0, row


def test_deterministic_prefix_stable_and_seeded() -> None:
    task = ArithmeticTask.level(3, seed=7)
    rows = task.generate(300)
    assert rows == task.generate(300)
    assert rows[:120] == task.generate(120)
    assert len({row["uid"] for row in rows}) == 300
    other = ArithmeticTask.level(3, seed=8).generate(300)
    assert [r["problem"] for r in rows] != [r["problem"] for r in other]


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_splits_are_disjoint(level: int) -> None:
    task = ArithmeticTask.level(level)
    train = {row["problem"] for row in task.generate(1000, "train")}
    test = {row["problem"] for row in task.generate(300, "test")}
    assert train.isdisjoint(test)
    # The split depends on the text only: another seed keeps it.
    reseeded = ArithmeticTask.level(level, seed=99).generate(300, "test")
    assert train.isdisjoint(row["problem"] for row in reseeded)


def test_small_space_is_drawn_without_repeats_first() -> None:
    task = ArithmeticTask(max_operands=2)  # 200 problems
    train = [row["problem"] for row in task.generate(500, "train")]
    size = len(set(train))
    test_size = len({row["problem"] for row in task.generate(200, "test")})
    assert size + test_size == 200
    assert 20 <= test_size <= 60  # test_fraction 0.2
    assert len(set(train[:size])) == size  # every problem once before any repeats
    assert len(set(train[size : 2 * size])) == size


def test_split_without_problems() -> None:
    task = ArithmeticTask(max_value=1, operators="+", test_fraction=0.01)  # 4 problems
    with pytest.raises(ValueError, match="holds no problem"):
        task.generate(1, "test")


def test_write_jsonl(tmp_path: Path) -> None:
    rows = ArithmeticTask().generate(5)
    path = write_jsonl(rows, tmp_path / "sub" / "train.jsonl")
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows


# The tokenizer, trained on the task's texts.


@pytest.fixture(scope="module")
def texts() -> list[str]:
    rows = ArithmeticTask.level(2).generate(1500) + ArithmeticTask.level(4).generate(500)
    return [text for row in rows for text in (row["problem"], row["distill"])]


@pytest.fixture(scope="module")
def tokenizer_dir(texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(texts, vocab_size=512, path=path)
    return path


def test_tokenizer_loads_offline_and_round_trips(tokenizer_dir: Path, texts: list[str]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert len(tok) <= 512
    assert tok.eos_token == tok.pad_token == "<|endoftext|>"
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    samples = [*texts[:50], "12 - 15 = -3. The answer is \\boxed{-12}.", "héllo\n\tworld ∑ 🙂"]
    for text in samples:
        assert tok.decode(tok.encode(text)) == text
    # Digits are single tokens: no token holds a digit next to anything else.
    for token in tok.convert_ids_to_tokens(list(range(len(tok)))):
        text = tok.convert_tokens_to_string([token])
        assert not any(ch.isdigit() for ch in text) or len(text) == 1, token
    assert len(tok.encode("1234567890")) == 10


def test_chat_template(tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert tok.chat_template == CHAT_TEMPLATE
    messages = [
        {"role": "user", "content": "Compute 7 + 5 * 3."},
        {"role": "assistant", "content": "5 * 3 = 15. 7 + 15 = 22. The answer is \\boxed{22}."},
    ]
    prompt = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nCompute 7 + 5 * 3.<|im_end|>\n<|im_start|>assistant\n"
    full = tok.apply_chat_template(messages, tokenize=False)
    assert full == prompt + messages[1]["content"] + "<|im_end|>\n"
    ids = tok.encode(full)
    assert ids[0] == 1
    assert ids.count(2) == 2
    assert tok.decode(ids) == full


def test_tokenizer_is_deterministic(texts: list[str], tmp_path: Path, tokenizer_dir: Path) -> None:
    tok = train_tokenizer(texts, vocab_size=512, path=tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["tokenizer.json", "tokenizer_config.json"]
    for name in names:
        assert (tmp_path / name).read_bytes() == (tokenizer_dir / name).read_bytes()
    assert tok.encode(texts[1]) == train_tokenizer(texts).encode(texts[1])
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(texts, vocab_size=200)
