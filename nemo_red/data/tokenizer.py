"""A small byte-level BPE tokenizer trained locally, with a Qwen-style chat template.

For the tiny CPU default: no download, a few hundred tokens, and every digit its own token
(numbers are never merged, so that arithmetic is learnable digit by digit). The
pre-tokenizer is Qwen2's (the same split regex, then byte-level), the special tokens are
``<|endoftext|>`` (padding and end of text), ``<|im_start|>`` and ``<|im_end|>``, and the
chat template renders ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, then
``<|im_start|>assistant\\n`` for a generation prompt. Saved by :func:`save_tokenizer`, it loads
offline with ``AutoTokenizer.from_pretrained(path)`` under transformers 4.45+ and 5.

Generation should stop at ``<|im_end|>`` as well as ``<|endoftext|>``: an assistant turn
ends with ``<|im_end|>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

__all__ = [
    "CHAT_TEMPLATE",
    "EOS_TOKEN",
    "IM_END",
    "IM_START",
    "SPECIAL_TOKENS",
    "save_tokenizer",
    "train_tokenizer",
]

EOS_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (EOS_TOKEN, IM_START, IM_END)  # ids 0, 1, 2

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Qwen2's pre-tokenizer split: contractions, words, single digits, punctuation, whitespace.
_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # the byte alphabet and the special tokens
_MODEL_MAX_LENGTH = 1 << 20


def _bare_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 512,
    path: str | Path | None = None,
    min_frequency: int = 2,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on texts.

    Every byte has a token, so any text round-trips; merges are learnt from ``texts`` until
    ``vocab_size`` tokens (fewer when the texts run out of pairs seen ``min_frequency``
    times). The result depends only on the texts and the arguments.

    Args:
        texts: Training texts (problems, traces, ...); the chat markup need not be in them.
        vocab_size: Most tokens, special tokens included (at least 259).
        path: When given, the directory the tokenizer is saved to (see :func:`save_tokenizer`).
        min_frequency: Fewest occurrences of a pair for it to be merged.

    Returns:
        The tokenizer: ``<|endoftext|>`` is its EOS and padding token, ``<|im_start|>`` and
        ``<|im_end|>`` are special, and it has the chat template :data:`CHAT_TEMPLATE`.

    Raises:
        ValueError: When ``vocab_size`` is below 259.
    """
    if vocab_size < _MIN_VOCAB:
        raise ValueError(f"vocab_size must be >= {_MIN_VOCAB}, got {vocab_size}")
    tokenizer = _bare_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if path is not None:
        save_tokenizer(tokenizer, path)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        additional_special_tokens=[IM_START, IM_END],
        clean_up_tokenization_spaces=False,
        model_max_length=_MODEL_MAX_LENGTH,
        chat_template=CHAT_TEMPLATE,
    )


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> Path:
    """Save a trained tokenizer in the layout that ``AutoTokenizer.from_pretrained`` loads.

    Writes ``tokenizer.json`` and a ``tokenizer_config.json`` in the layout of transformers
    4 (chat template inline, class ``PreTrainedTokenizerFast``), which transformers 4.45+
    and 5 both load; ``save_pretrained`` of transformers 5 writes a layout that 4 cannot.

    Args:
        tokenizer: The trained ``tokenizers`` object (special tokens as in
            :data:`SPECIAL_TOKENS`).
        path: The directory (created when absent).

    Returns:
        The directory.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path / "tokenizer.json"), pretty=True)
    token_flags = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    config = {
        "added_tokens_decoder": {
            str(tokenizer.token_to_id(token)): {"content": token, **token_flags, "special": True}
            for token in SPECIAL_TOKENS
        },
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS_TOKEN,
        "model_max_length": _MODEL_MAX_LENGTH,
        "pad_token": EOS_TOKEN,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }
    text = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    (path / "tokenizer_config.json").write_text(text, encoding="utf-8")
    return path
