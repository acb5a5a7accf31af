"""`nemo-red convert` on real HF directories written by transformers (offline, tiny)."""

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import Qwen2ForCausalLM

from nemo_red.cli import main
from nemo_red.models.checkpoint_io import (
    load_hf_state_dict,
    load_megatron_shard,
    read_megatron_meta,
)
from nemo_red.models.conversion import hf_to_megatron
from nemo_red.models.families import ModelShape
from tests.models.foreign_checkpoints import LAYOUTS, write_foreign_checkpoint
from tests.tiny_models import random_qwen2


def _save_hf(path, tied: bool, shard: str | None = None) -> Qwen2ForCausalLM:
    model = random_qwen2(
        hidden=48, intermediate=40, heads=12, tied=tied, bos_token_id=1, eos_token_id=2
    )
    kwargs = {} if shard is None else {"max_shard_size": shard}
    model.save_pretrained(path, safe_serialization=True, **kwargs)
    return model


@pytest.mark.parametrize(("tied", "shard"), [(False, None), (True, "20KB")])
def test_cli_round_trip_through_tp2_pp2(tmp_path, tied, shard, capsys):
    model = _save_hf(tmp_path / "hf", tied, shard)
    if shard:
        assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    assert (
        main(
            [
                "convert",
                "hf-to-megatron",
                str(tmp_path / "hf"),
                str(tmp_path / "mc"),
                "--tp",
                "2",
                "--pp",
                "2",
            ]
        )
        == 0
    )
    assert "loads under any TP x PP" in capsys.readouterr().out
    assert read_megatron_meta(tmp_path / "mc")["format"] == "nemo_red.megatron/2"
    assert (tmp_path / "mc" / "latest_checkpointed_iteration.txt").read_text() == "0"
    assert (tmp_path / "mc" / "iter_0000000" / ".metadata").is_file()  # Megatron-LM's layout
    assert main(["convert", "megatron-to-hf", str(tmp_path / "mc"), str(tmp_path / "out")]) == 0

    before, after = load_hf_state_dict(tmp_path / "hf"), load_hf_state_dict(tmp_path / "out")
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["eos_token_id"] == 2  # the original config is preserved
    reloaded = Qwen2ForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = torch.randint(0, 61, (1, 9))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded(ids).logits)


def _write_safetensors_layout(hf_dir, dst, tp: int, pp: int) -> None:
    """The megatron layout of earlier versions: safetensors per (TP rank, PP stage)."""
    config = json.loads((hf_dir / "config.json").read_text())
    shape = ModelShape.from_hf_config(config)
    dst.mkdir()
    hf = load_hf_state_dict(hf_dir)
    for pp_rank in range(pp):
        for tp_rank in range(tp):
            shard = hf_to_megatron(hf, shape, tp, tp_rank, pp, pp_rank)
            save_file(shard, dst / f"model_tp{tp_rank:02d}_pp{pp_rank:03d}.safetensors")
    meta = {"format": "nemo_red.megatron/1", "hf_config": config, "tp": tp, "pp": pp}
    (dst / "nemo_red_model.json").write_text(json.dumps({**meta, "dtype": "float32"}))


def test_the_earlier_safetensors_layout_stays_readable(tmp_path):
    _save_hf(tmp_path / "hf", tied=False)
    _write_safetensors_layout(tmp_path / "hf", tmp_path / "old", tp=2, pp=2)
    hf = load_hf_state_dict(tmp_path / "hf")
    shape, shard = load_megatron_shard(tmp_path / "old", tp_size=1, tp_rank=0, pp_size=4, pp_rank=3)
    expected = hf_to_megatron(hf, ModelShape.from_hf_config(shape.to_hf_config()), 1, 0, 4, 3)
    assert shard.keys() == expected.keys()
    assert all(torch.equal(shard[k], expected[k]) for k in shard)
    assert main(["convert", "megatron-to-hf", str(tmp_path / "old"), str(tmp_path / "out")]) == 0
    after = load_hf_state_dict(tmp_path / "out")
    assert all(torch.equal(hf[k], after[k]) for k in hf)


def test_bf16_conversion(tmp_path):
    _save_hf(tmp_path / "hf", tied=True)
    main(
        [
            "convert",
            "hf-to-megatron",
            str(tmp_path / "hf"),
            str(tmp_path / "mc"),
            "--dtype",
            "bfloat16",
        ]
    )
    assert read_megatron_meta(tmp_path / "mc")["dtype"] == "bfloat16"
    main(["convert", "megatron-to-hf", str(tmp_path / "mc"), str(tmp_path / "out")])
    assert {t.dtype for t in load_hf_state_dict(tmp_path / "out").values()} == {torch.bfloat16}


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_other_tools_key_layouts_export_exactly(tmp_path, layout):
    # Megatron-Bridge (TE keys), NeMo 2 (weights/, module.), Megatron-LM's local names
    _save_hf(tmp_path / "hf", tied=False)
    write_foreign_checkpoint(tmp_path / "hf", tmp_path / layout, layout)
    assert main(["convert", "megatron-to-hf", str(tmp_path / layout), str(tmp_path / "out")]) == 0
    before, after = load_hf_state_dict(tmp_path / "hf"), load_hf_state_dict(tmp_path / "out")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_dist_checkpoint_without_its_hf_config_is_refused_clearly(tmp_path, capsys):
    _save_hf(tmp_path / "hf", tied=False)
    write_foreign_checkpoint(tmp_path / "hf", tmp_path / "bridge", "bridge")
    (tmp_path / "bridge" / "config.json").unlink()
    assert main(["convert", "megatron-to-hf", str(tmp_path / "bridge"), str(tmp_path / "o")]) == 2
    assert "without the HF config.json" in capsys.readouterr().err


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["convert", "hf-to-megatron", str(tmp_path), str(tmp_path / "x")]) == 2
    assert "no config.json" in capsys.readouterr().err
    _save_hf(tmp_path / "hf", tied=False)
    assert (
        main(["convert", "hf-to-megatron", str(tmp_path / "hf"), str(tmp_path / "x"), "--tp", "4"])
        == 2
    )
    assert "tensor-parallel size 4 must divide" in capsys.readouterr().err
    assert main(["convert", "megatron-to-hf", str(tmp_path / "hf"), str(tmp_path / "y")]) == 2
    assert "neither a nemo_red megatron checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
