"""Model shapes for the planner: published parameter counts, HF configs, clear refusals."""

from __future__ import annotations

import json

import pytest

from nemo_red.planning.model_dims import NAMED_MODELS, ModelDims, resolve_model


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # 28 x (1536*2048 + 2048 bias + 1536^2 + 3*1536*8960 + 2*1536) + 151936*1536 + 1536
        ("Qwen2.5-Math-1.5B", 1_543_714_304),
        # 32 x (4096*6144 + 4096^2 + 3*4096*14336 + 2*4096) + 2*128256*4096 + 4096: Meta's count
        ("Llama-3.1-8B", 8_030_261_248),
        # 36 x (4096*6144 + 4096^2 + 3*4096*12288 + 2*4096 + 2*128) + 2*151936*4096 + 4096
        ("Qwen3-8B", 8_190_735_360),
    ],
)
def test_named_sizes_have_their_published_parameter_counts(name, expected):
    assert NAMED_MODELS[name].total_parameters() == expected


@pytest.mark.parametrize(
    ("name", "billions"),
    [
        ("Qwen2.5-Math-7B", 7.62),
        ("Qwen2.5-14B", 14.77),
        ("Qwen2.5-32B", 32.76),
        ("Qwen3-14B", 14.77),
        ("Qwen3-32B", 32.76),
        ("Llama-3.1-70B", 70.55),
    ],
)
def test_the_larger_sizes_match_their_model_cards(name, billions):
    assert NAMED_MODELS[name].total_parameters() / 1e9 == pytest.approx(billions, abs=0.01)


def test_tensor_parallel_shards_split_matrices_and_replicate_norms():
    dims = NAMED_MODELS["Qwen2.5-Math-1.5B"]
    sharded = 1536 * 2048 + 2048 + 1536**2 + 3 * 1536 * 8960
    assert dims.layer_parameters(2) == sharded // 2 + 2 * 1536
    assert dims.embedding_parameters(3) == 50646 * 1536  # 151936 padded to 151938


def test_qwen3_config_with_its_own_head_dim(tmp_path):
    config = {
        "model_type": "qwen3",
        "num_hidden_layers": 64,
        "hidden_size": 5120,
        "intermediate_size": 25600,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 151936,
        "tie_word_embeddings": False,
        "attention_bias": False,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    dims = resolve_model(tmp_path)
    named = NAMED_MODELS["Qwen3-32B"]
    assert (dims.head_dim, dims.qk_norm, dims.qkv_bias) == (128, True, False)
    assert dims.total_parameters() == named.total_parameters()


def test_llama_with_llama3_rope_scaling_reads():
    dims = ModelDims.from_hf_config(
        {
            "model_type": "llama",
            "num_hidden_layers": 32,
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "vocab_size": 128256,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0},
        }
    )
    assert dims.total_parameters() == 8_030_261_248
    assert (dims.head_dim, dims.tied_embeddings, dims.qkv_bias) == (128, False, False)


def test_unsupported_configs_name_the_file_and_field(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "qwen2_moe"}))
    with pytest.raises(ValueError, match=r"config\.json: model_type 'qwen2_moe'"):
        ModelDims.from_hf_config(path)
    path.write_text(json.dumps({"model_type": "qwen2", "num_experts": 60}))
    with pytest.raises(ValueError, match="num_experts"):
        ModelDims.from_hf_config(path)
    path.write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(ValueError, match="missing field 'num_hidden_layers'"):
        ModelDims.from_hf_config(path)
    with pytest.raises(ValueError, match="neither a HF config"):
        resolve_model(tmp_path / "absent")


def test_names_are_case_insensitive():
    assert resolve_model("qwen2.5-math-7b") is NAMED_MODELS["Qwen2.5-Math-7B"]
