"""Tiny stand-ins for what a user brings: a HF checkpoint (Qwen2 unless asked otherwise) and
math data files.

* ``tiny_hf``: a random Qwen2 (tied embeddings, like Qwen2.5-Math-1.5B) saved with
  ``save_pretrained``, with a byte-level BPE tokenizer (and chat template) trained on the
  arithmetic task and the LUFFY system prompt; 2,048 positions, so benchmark prompts fit.
* ``tiny_data``: the arithmetic task in LUFFY's OpenR1 parquet layout (training) and in
  MATH's jsonl layout (held-out), the layouts the shipped 1.5B config reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nemo_red.data.arithmetic import ArithmeticTask
from nemo_red.data.templates import LUFFY_SYSTEM_PROMPT
from nemo_red.data.tokenizer import train_tokenizer
from tests.tiny_models import random_model


def save_tiny_hf(folder: Path, model_type: str = "qwen2", **config_extra: Any) -> Path:
    """A random tiny model of ``model_type`` (tied embeddings, 2,048 positions unless
    ``config_extra`` says otherwise) with the arithmetic tokenizer, saved in ``folder``."""
    rows = ArithmeticTask(seed=0).generate(400, "train")
    texts = [r["problem"] for r in rows] + [r["distill"] for r in rows] + [LUFFY_SYSTEM_PROMPT]
    tokenizer = train_tokenizer(texts, vocab_size=400, path=folder)
    settings = {"hidden": 32, "layers": 2, "max_positions": 2048, "tied": True} | config_extra
    model = random_model(model_type, vocab=len(tokenizer), noise=0.02, **settings)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_hf(tmp_path_factory.mktemp("tiny_hf"))


@dataclass(frozen=True)
class TinyData:
    train_parquet: Path  # LUFFY layout
    eval_jsonl: Path  # MATH layout


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> TinyData:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("tiny_data")
    task = ArithmeticTask(seed=0)
    train = [
        {
            "prompt": [{"role": "user", "content": r["problem"]}],
            "target": [{"role": "assistant", "content": r["distill"]}],
            "reward_model": {"ground_truth": r["answer"], "style": "rule"},
        }
        for r in task.generate(64, "train")
    ]
    pq.write_table(pa.Table.from_pylist(train), folder / "openr1.parquet")
    test = [
        {"problem": r["problem"], "answer": r["answer"], "solution": r["distill"]}
        for r in task.generate(16, "test")
    ]
    (folder / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    return TinyData(folder / "openr1.parquet", folder / "valid.jsonl")
