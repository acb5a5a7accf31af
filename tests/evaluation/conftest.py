"""Tiny random Qwen2 models with a locally trained tokenizer, for ``nemo-red eval`` tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nemo_red.data.tokenizer import train_tokenizer
from tests.tiny_models import random_qwen2


@pytest.fixture(scope="session")
def hf_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HF directory: a random Qwen2 (context 512) and its tokenizer."""
    folder = tmp_path_factory.mktemp("model")
    texts = [
        f"Question: what is {a} + {b}? Answer: \\boxed{{{a + b}}}"
        for a in range(30)
        for b in range(9)
    ]
    tokenizer = train_tokenizer(texts, vocab_size=300, path=folder)
    random_qwen2(vocab=len(tokenizer), hidden=32, max_positions=512, noise=0.02).save_pretrained(
        folder
    )
    return folder


@pytest.fixture(scope="session")
def short_context_model(hf_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tokenizer with a model whose context (max_position_embeddings) is 8 tokens."""
    folder = tmp_path_factory.mktemp("short") / "model"
    shutil.copytree(hf_model, folder)
    vocab = json.loads((hf_model / "config.json").read_text())["vocab_size"]
    random_qwen2(vocab=vocab, hidden=32, max_positions=8, noise=0.02).save_pretrained(folder)
    return folder


@pytest.fixture
def sums(tmp_path: Path) -> Path:
    """A custom benchmark of three sums (fields q.text and gold; see SUMS_FIELDS)."""
    path = tmp_path / "sums.jsonl"
    rows = [{"q": {"text": f"what is {a} + 1?"}, "gold": [a + 1]} for a in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


SUMS_FIELDS = "question=q.text,answer=gold"
