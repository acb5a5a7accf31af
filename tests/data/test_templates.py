"""Prompt templates, rendered with a tiny tokenizer built offline."""

from __future__ import annotations

import pytest

from nemo_red.data import TEMPLATES, PromptTemplate, get_template
from nemo_red.data.templates import LUFFY_SYSTEM_PROMPT
from tests.data.helpers import CHAT_TEMPLATE, tiny_tokenizer

QUESTION = "What is 2 + 3?"


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def test_qwen_boxed(tokenizer) -> None:
    assert get_template("qwen_boxed").render(QUESTION, tokenizer) == (
        "<|im_start|>user\nWhat is 2 + 3?\nPlease reason step by step, and put your final "
        "answer within \\boxed{}.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_luffy(tokenizer) -> None:
    text = get_template("luffy").render(QUESTION, tokenizer)
    assert text == (
        f"<|im_start|>system\n{LUFFY_SYSTEM_PROMPT}<|im_end|>\n"
        f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n<think>\n"
    )
    assert LUFFY_SYSTEM_PROMPT.startswith("Your task is to follow a systematic, thorough")
    assert "\\boxed{}" in LUFFY_SYSTEM_PROMPT
    assert '"<think>\n {thoughts} </think>\n"' in LUFFY_SYSTEM_PROMPT


def test_think_prefix_not_doubled(tokenizer) -> None:
    thinking = tiny_tokenizer()
    thinking.chat_template = CHAT_TEMPLATE.replace(
        "<|im_start|>assistant\n{% endif %}", "<|im_start|>assistant\n<think>\n{% endif %}"
    )
    text = get_template("luffy").render(QUESTION, thinking)
    assert text.endswith("assistant\n<think>\n")
    assert text.count("<think>\n {thoughts}") == 1
    assert text.count("<think>") == 2  # one in the system prompt, one to start thinking


def test_plain_needs_no_tokenizer() -> None:
    assert get_template("plain").render(QUESTION) == "Question: What is 2 + 3?\nAnswer:"
    with_system = PromptTemplate(kind="string", template="Q: {question}", system_prompt="Be brief.")
    assert with_system.render("x") == "Be brief.\n\nQ: x"
    thinking = PromptTemplate(kind="string", template="Q: {question}\nA: ", think_prefix=True)
    assert thinking.render("x") == "Q: x\nA: <think>\n"


def test_braces_are_literal() -> None:
    template = PromptTemplate(kind="string", template="Solve {question} in \\boxed{}. {x}")
    assert template.render("{a} {question}") == "Solve {a} {question} in \\boxed{}. {x}"


def test_validation(tokenizer) -> None:
    with pytest.raises(ValueError, match=r"must contain \{question\}"):
        PromptTemplate(kind="string", template="Question: ")
    with pytest.raises(ValueError, match="kind must be 'chat' or 'string'"):
        PromptTemplate(kind="jinja")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        get_template("qwen_boxed").render(QUESTION)
    bare = tiny_tokenizer()
    bare.chat_template = None
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        get_template("qwen_boxed").render(QUESTION, bare)


def test_get_template() -> None:
    assert set(TEMPLATES) == {"qwen_boxed", "luffy", "plain"}
    with pytest.raises(ValueError, match="unknown prompt template 'r1'; valid templates: qwen"):
        get_template("r1")
    custom = get_template({"kind": "string", "template": "Q: {question}\nA:"})
    assert custom == PromptTemplate(kind="string", template="Q: {question}\nA:")
    no_think = get_template({"base": "luffy", "think_prefix": False})
    assert no_think.system_prompt == LUFFY_SYSTEM_PROMPT
    assert not no_think.think_prefix
    assert get_template(no_think) is no_think
    with pytest.raises(ValueError, match="unknown prompt template keys"):
        get_template({"kind": "chat", "prefix": "x"})


def test_template_from_a_run_config() -> None:
    from nemo_red.data import template_from_config
    from nemo_red.training.config import DataConfig

    assert template_from_config(DataConfig(template="plain")) == TEMPLATES["plain"]
    prompted = template_from_config(DataConfig(template="plain", system_prompt="Be brief."))
    assert prompted == PromptTemplate(
        kind="string", template="Question: {question}\nAnswer:", system_prompt="Be brief."
    )
    thinking = template_from_config(DataConfig(template="qwen_boxed", think_prefix=True))
    assert thinking == PromptTemplate(
        kind="chat", template=TEMPLATES["qwen_boxed"].template, think_prefix=True
    )
    # think_prefix: false keeps luffy's own prefix (only a true value replaces it)
    assert template_from_config(DataConfig(template="luffy")) == TEMPLATES["luffy"]
