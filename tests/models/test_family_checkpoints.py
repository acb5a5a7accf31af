"""`nemo-red convert` on HF directories of the Qwen3 and Llama families written by
transformers (offline, tiny): bit-exact through a megatron dist checkpoint (split checked for
TP = 2 x PP = 2), and the export loads."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from nemo_red.cli import main
from nemo_red.models.checkpoint_io import load_hf_state_dict
from tests.tiny_models import LLAMA3_ROPE_SCALING, random_model

pytestmark = pytest.mark.slow
EXTRAS = {
    "qwen3": {"head_dim": 12},
    "llama": {"rope_scaling": LLAMA3_ROPE_SCALING, "rope_theta": 5e5, "max_positions": 16384},
}


@pytest.mark.parametrize("family", sorted(EXTRAS))
def test_convert_round_trip(tmp_path, family, capsys):
    model = random_model(family, hidden=48, heads=12, noise=0.1, **EXTRAS[family])
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    hf, mc, out = (str(tmp_path / name) for name in ("hf", "mc", "out"))
    assert main(["convert", "hf-to-megatron", hf, mc, "--tp", "2", "--pp", "2"]) == 0
    assert f"loads under any TP x PP; {family}, 4 layers" in capsys.readouterr().out
    assert main(["convert", "megatron-to-hf", mc, out]) == 0

    before, after = load_hf_state_dict(tmp_path / "hf"), load_hf_state_dict(tmp_path / "out")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == family
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert type(reloaded) is type(model)
    ids = torch.randint(0, 61, (1, 9))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded(ids).logits)
