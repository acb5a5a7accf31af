"""A Qwen3 and a Llama 3.x Hugging Face directory -> ``nemo-red train model.path=<HF dir>``
(RED; the ``hf`` engine for one, ``native`` for the other) -> the run's ``hf/`` export loads
in transformers as the same class."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_red.cli import main
from tests.journeys.conftest import save_tiny_hf
from tests.journeys.test_user_journeys import SHORT, TINY
from tests.tiny_models import LLAMA3_ROPE_SCALING

pytestmark = pytest.mark.slow
CASES = {
    "qwen3": ({"head_dim": 12}, "hf"),
    "llama": ({"rope_scaling": LLAMA3_ROPE_SCALING, "max_positions": 16384}, "native"),
}


@pytest.mark.parametrize("family", sorted(CASES))
def test_train_a_family_then_load_the_export(family: str, tmp_path: Path):
    from transformers import AutoModelForCausalLM

    extra, engine = CASES[family]
    hf_dir = save_tiny_hf(tmp_path / "hf_in", family, **extra)
    run = tmp_path / "run"
    args = ["train", "--config", str(TINY), f"model.path={hf_dir}", f"run.output_dir={run}"]
    overrides = [*SHORT, "trainer.total_steps=1", "trainer.eval_every=0"]
    assert main([*args, *overrides, f"rollout.engine={engine}"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1]
    exported = json.loads((run / "hf" / "config.json").read_text())
    original = json.loads((hf_dir / "config.json").read_text())
    assert exported["model_type"] == family
    assert exported.get("head_dim") == original.get("head_dim")
    model = AutoModelForCausalLM.from_pretrained(run / "hf")
    assert type(model).__name__ == original["architectures"][0]
