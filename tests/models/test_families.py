"""The model-family registry: shapes from HF configs, clear errors naming the config field,
and configs written back that transformers builds the same model from (no megatron)."""

import json

import pytest

from nemo_red.algorithms.registry import UnknownNameError
from nemo_red.models.families import (
    Llama3RopeScaling,
    ModelShape,
    family_names,
    get_family,
    shape_from_hf_config,
)
from tests.published_configs import DEEPSEEK_R1_DISTILL_LLAMA_8B, QWEN3_0_6B, QWEN25_MATH_1_5B
from tests.tiny_models import LLAMA3_ROPE_SCALING, random_model


def test_built_in_families():
    assert family_names() == ["llama", "qwen2", "qwen3"]
    with pytest.raises(UnknownNameError, match="valid names: llama, qwen2, qwen3"):
        get_family("mistral")


def test_published_configs():
    qwen2 = shape_from_hf_config(QWEN25_MATH_1_5B)
    assert (qwen2.family, qwen2.head_dim, qwen2.rope_theta, qwen2.rope_scaling) == (
        "qwen2",
        128,
        10000.0,
        None,
    )
    qwen3 = shape_from_hf_config(QWEN3_0_6B)
    assert (qwen3.family, qwen3.head_dim, qwen3.q_size, qwen3.hidden_size) == (
        "qwen3",
        128,
        2048,
        1024,
    )
    llama = shape_from_hf_config(DEEPSEEK_R1_DISTILL_LLAMA_8B)
    assert llama.family == "llama"
    assert llama.rope_scaling == Llama3RopeScaling(8.0, 1.0, 4.0, 8192)
    assert (llama.rms_norm_eps, llama.rope_theta, llama.num_kv_heads) == (1e-5, 5e5, 8)


def test_reads_a_config_json_path(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_0_6B))
    assert shape_from_hf_config(tmp_path) == shape_from_hf_config(QWEN3_0_6B)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    with pytest.raises(ValueError, match=r"config\.json: unsupported model_type 'mistral'"):
        shape_from_hf_config(tmp_path / "config.json")


@pytest.mark.parametrize(
    ("family", "extra"),
    [
        ("qwen2", {}),
        ("qwen3", {"head_dim": 12}),
        ("llama", {"rope_scaling": LLAMA3_ROPE_SCALING, "max_positions": 16384}),
        ("llama", {"head_dim": 8, "rope_theta": 5e5}),
    ],
)
@pytest.mark.parametrize("tied", [False, True])
def test_hf_config_round_trip_through_transformers(family, extra, tied):
    # transformers >= 5 writes rope_parameters; the shape writes rope_theta / rope_scaling
    from transformers import AutoConfig

    model = random_model(family, hidden=48, heads=12, kv_heads=2, tied=tied, **extra)
    shape = shape_from_hf_config(model.config.to_dict())
    written = shape.to_hf_config()
    assert shape_from_hf_config(written) == shape
    rebuilt = AutoConfig.for_model(written.pop("model_type"), **written)
    assert type(rebuilt) is type(model.config)
    assert shape_from_hf_config(rebuilt.to_dict()) == shape
    assert rebuilt.rope_parameters == model.config.rope_parameters


def _with(config: dict, **fields) -> dict:
    return {**config, **fields}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"model_type": "qwen3_moe", "num_experts": 128, "moe_intermediate_size": 768},
            r"config: num_experts = 128: mixture-of-experts models are not supported "
            r"\(model_type 'qwen3_moe'\)",
        ),
        (
            {"model_type": "mixtral", "num_local_experts": 8},
            "num_local_experts = 8: mixture-of-experts",
        ),
        (
            {"architectures": ["MistralForCausalLM"], "model_type": "mistral"},
            r"unsupported model_type 'mistral' \(architecture 'MistralForCausalLM'\); "
            r"supported families: llama \(llama\), qwen2 \(qwen2\), qwen3 \(qwen3\)",
        ),
        (
            _with(QWEN25_MATH_1_5B, rope_scaling={"type": "yarn", "factor": 4.0}),
            r"rope_scaling\.type 'yarn' is not supported by the qwen2 family "
            r"\(supported: default\)",
        ),
        (
            _with(QWEN3_0_6B, rope_parameters={"rope_type": "llama3", "factor": 8.0}),
            r"rope_parameters\.rope_type 'llama3' is not supported by the qwen3 family",
        ),
        (
            _with(
                DEEPSEEK_R1_DISTILL_LLAMA_8B,
                rope_scaling={"rope_type": "dynamic", "factor": 2.0},
            ),
            r"rope_scaling\.rope_type 'dynamic' is not supported by the llama family "
            r"\(supported: default, llama3\)",
        ),
        (
            _with(
                DEEPSEEK_R1_DISTILL_LLAMA_8B,
                rope_scaling={**LLAMA3_ROPE_SCALING, "original_max_position_embeddings": 4096},
            ),
            r"rope_scaling\.original_max_position_embeddings = 4096 is not supported: "
            r"megatron-core's llama3 rope scaling fixes it at 8192",
        ),
        (
            _with(DEEPSEEK_R1_DISTILL_LLAMA_8B, rope_scaling={"rope_type": "llama3"}),
            r"rope_scaling\.factor is missing",
        ),
        (
            _with(QWEN25_MATH_1_5B, use_sliding_window=True),
            r"use_sliding_window = True is not supported \(sliding-window attention\)",
        ),
        (
            _with(QWEN3_0_6B, layer_types=["full_attention", "sliding_attention"]),
            r"layer_types \['sliding_attention'\] are not supported",
        ),
        (
            _with(QWEN3_0_6B, attention_bias=True),
            r"attention_bias = True is not supported \(attention biases\)",
        ),
        (_with(DEEPSEEK_R1_DISTILL_LLAMA_8B, mlp_bias=True), "mlp_bias = True is not supported"),
        (_with(QWEN3_0_6B, hidden_act="gelu"), "hidden_act 'gelu' is not supported"),
        (
            {"model_type": "llama", "hidden_size": 64},
            r"missing fields \['vocab_size', 'intermediate_size'",
        ),
        (_with(QWEN3_0_6B, num_key_value_heads=3), "16 heads not divisible by 3 KV heads"),
    ],
)
def test_unsupported_configs_name_the_field(config, message):
    with pytest.raises(ValueError, match=message):
        ModelShape.from_hf_config(config)


def test_a_config_without_model_type_is_read_by_its_architecture():
    config = {k: v for k, v in QWEN3_0_6B.items() if k != "model_type"}
    assert shape_from_hf_config(config) == shape_from_hf_config(QWEN3_0_6B)


def test_rope_theta_of_transformers_5_configs():
    # transformers >= 5 moves rope_theta into rope_parameters
    config = {k: v for k, v in QWEN3_0_6B.items() if k not in ("rope_theta", "rope_scaling")}
    config["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6}
    assert shape_from_hf_config(config) == shape_from_hf_config(QWEN3_0_6B)


@pytest.fixture
def registry_snapshot():
    from nemo_red.models.families.registry import FAMILIES

    family_names()  # the built-ins are loaded before the snapshot
    saved = dict(FAMILIES._entries)
    yield
    FAMILIES._entries.clear()
    FAMILIES._entries.update(saved)


def test_registering_a_family(registry_snapshot):
    from nemo_red.models.families import DecoderFamily, register_family

    @register_family
    class BiasedLlama(DecoderFamily):
        name = "biased_llama"
        model_types = ("biased_llama",)
        architecture = "LlamaForCausalLM"
        qkv_bias = True

    config = {**DEEPSEEK_R1_DISTILL_LLAMA_8B, "model_type": "biased_llama", "rope_scaling": None}
    shape = shape_from_hf_config(config)
    assert shape.family == "biased_llama"
    assert get_family("biased_llama").tensor_map(shape).layer[1].megatron == (
        "self_attention.linear_qkv.bias"
    )
    assert shape.to_hf_config()["model_type"] == "biased_llama"
    with pytest.raises(ValueError, match=r"model_type \['qwen3'\] already taken"):

        @register_family
        class Other(DecoderFamily):
            name = "other"
            model_types = ("qwen3",)
            architecture = "Qwen3ForCausalLM"
