"""Prompt templates: how a question becomes the prompt text the model continues.

Built-in templates (:func:`get_template`):

- ``qwen_boxed``: a chat prompt whose user message is the question followed by
  ``"\\nPlease reason step by step, and put your final answer within \\boxed{}."``.
- ``luffy``: a chat prompt with LUFFY's system prompt (think inside ``<think> </think>``,
  then the solution with the answer in ``\\boxed{}``), ending with ``<think>\\n``.
- ``plain``: the string ``"Question: {question}\\nAnswer:"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = [
    "PLACEHOLDER",
    "TEMPLATES",
    "THINK_PREFIX",
    "PromptTemplate",
    "get_template",
    "template_from_config",
]

PLACEHOLDER = "{question}"
THINK_PREFIX = "<think>\n"

# Verbatim from LUFFY (github.com/ElliottYan/LUFFY, luffy/scripts/data/
# prepare_openr1_data_spec_sys.py): the system message of its OpenR1-Math training prompts.
LUFFY_SYSTEM_PROMPT = (
    "Your task is to follow a systematic, thorough reasoning process before providing the "
    "final solution. This involves analyzing, summarizing, exploring, reassessing, and "
    "refining your thought process through multiple iterations. Structure your response "
    "into two sections: Thought and Solution. In the Thought section, present your reasoning "
    'using the format: "<think>\n {thoughts} </think>\n". Each thought should include '
    "detailed analysis, brainstorming, verification, and refinement of ideas. After "
    '"</think>\n," in the Solution section, provide the final, logical, and accurate answer, '
    "clearly derived from the exploration in the Thought section. If applicable, include the "
    "answer in \\boxed{} for closed-form results like multiple choices or mathematical "
    "solutions."
)


@dataclass(frozen=True)
class PromptTemplate:
    """How to turn a question into a prompt.

    ``{question}`` is the only placeholder and is replaced literally (other braces, as in
    ``\\boxed{}``, are kept as they are).

    Attributes:
        kind: ``"chat"``: ``template`` formats the user message, rendered with the
            tokenizer's chat template (``add_generation_prompt=True``), after a system
            message when ``system_prompt`` is set. ``"string"``: ``template`` is the whole
            prompt (after ``system_prompt`` and a blank line, when set).
        template: Text containing ``{question}``.
        system_prompt: Optional system prompt.
        think_prefix: When True the prompt ends with ``<think>\\n`` (appended unless the
            rendered prompt already ends with it), so the model starts inside its
            reasoning block, as in LUFFY.
    """

    kind: Literal["chat", "string"] = "chat"
    template: str = PLACEHOLDER
    system_prompt: str | None = None
    think_prefix: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("chat", "string"):
            raise ValueError(f"template kind must be 'chat' or 'string', got {self.kind!r}")
        if not isinstance(self.template, str) or PLACEHOLDER not in self.template:
            raise ValueError(
                f"a {self.kind} prompt template must contain {PLACEHOLDER}, got {self.template!r}"
            )

    def render(self, question: str, tokenizer: Any = None) -> str:
        """Render the prompt text for a question.

        Args:
            question: The question.
            tokenizer: A Hugging Face tokenizer with a chat template (needed for ``chat``).

        Returns:
            The prompt text; for ``chat`` it holds the chat template's special tokens as
            text, so tokenize it without adding special tokens.

        Raises:
            ValueError: For a ``chat`` template without a tokenizer with a chat template.
        """
        content = self.template.replace(PLACEHOLDER, question)
        if self.kind == "chat":
            if tokenizer is None or not getattr(tokenizer, "chat_template", None):
                raise ValueError("a 'chat' prompt template needs a tokenizer with a chat template")
            messages = [{"role": "user", "content": content}]
            if self.system_prompt is not None:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        else:
            text = content if self.system_prompt is None else f"{self.system_prompt}\n\n{content}"
        if self.think_prefix and not text.endswith(THINK_PREFIX):
            text += THINK_PREFIX
        return text


TEMPLATES: dict[str, PromptTemplate] = {
    "qwen_boxed": PromptTemplate(
        kind="chat",
        template=PLACEHOLDER
        + "\nPlease reason step by step, and put your final answer within \\boxed{}.",
    ),
    "luffy": PromptTemplate(kind="chat", system_prompt=LUFFY_SYSTEM_PROMPT, think_prefix=True),
    "plain": PromptTemplate(kind="string", template="Question: {question}\nAnswer:"),
}


def get_template(spec: str | Mapping[str, Any] | PromptTemplate) -> PromptTemplate:
    """A prompt template from a built-in name, a mapping of its fields, or a template.

    Args:
        spec: ``"qwen_boxed"``, ``"luffy"`` or ``"plain"``; or a mapping such as
            ``{"kind": "string", "template": "Q: {question}\\nA:"}``, optionally with
            ``"base": "<built-in name>"`` to override some fields of a built-in.

    Returns:
        The template.

    Raises:
        ValueError: For an unknown name (the message lists the valid ones) or bad fields.
    """
    if isinstance(spec, PromptTemplate):
        return spec
    if isinstance(spec, str):
        if spec not in TEMPLATES:
            raise ValueError(
                f"unknown prompt template {spec!r}; valid templates: {', '.join(TEMPLATES)}"
            )
        return TEMPLATES[spec]
    values = dict(spec)
    base = values.pop("base", None)
    valid = {f.name for f in dataclasses.fields(PromptTemplate)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ValueError(f"unknown prompt template keys {unknown}; valid keys: {sorted(valid)}")
    if base is not None:
        return dataclasses.replace(get_template(str(base)), **values)
    return PromptTemplate(**values)


class TemplateFields(Protocol):
    """The prompt fields of a run's config (``data`` of a ``TrainConfig``)."""

    @property
    def template(self) -> str: ...

    @property
    def system_prompt(self) -> str | None: ...

    @property
    def think_prefix(self) -> bool: ...


def template_from_config(data: TemplateFields) -> PromptTemplate:
    """The prompt template a run trains with: ``data.template``, with ``data.system_prompt``
    (when set) and ``data.think_prefix`` (when true) replacing the built-in's.

    Used by the trainer and by ``nemo-red eval --run``, so that a run is evaluated with the
    prompts it was trained on.
    """
    template = get_template(data.template)
    if data.system_prompt is not None or data.think_prefix:
        template = dataclasses.replace(
            template,
            system_prompt=data.system_prompt or template.system_prompt,
            think_prefix=data.think_prefix,
        )
    return template
