"""HF <-> megatron state-dict conversion: exact round trips and clear errors (no megatron)."""

import pytest
import torch

from nemo_red.models.conversion import fuse_qkv, hf_to_megatron, megatron_to_hf, split_qkv
from nemo_red.models.qwen2 import Qwen2Shape, padded_vocab_size


def _shape(heads=12, kv=2, tied=False, vocab=61, layers=4) -> Qwen2Shape:
    return Qwen2Shape(vocab, heads * 4, 40, layers, heads, kv, 1e-6, 1e6, 128, tied)


def _hf_state(shape: Qwen2Shape) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    h, d, f = shape.hidden_size, shape.head_dim, shape.intermediate_size

    def r(*s):
        return torch.randn(*s, generator=g)

    sd = {"model.embed_tokens.weight": r(shape.vocab_size, h), "model.norm.weight": r(h)}
    for i in range(shape.num_layers):
        p = f"model.layers.{i}."
        sd |= {
            p + "self_attn.q_proj.weight": r(shape.num_heads * d, h),
            p + "self_attn.q_proj.bias": r(shape.num_heads * d),
            p + "self_attn.k_proj.weight": r(shape.num_kv_heads * d, h),
            p + "self_attn.k_proj.bias": r(shape.num_kv_heads * d),
            p + "self_attn.v_proj.weight": r(shape.num_kv_heads * d, h),
            p + "self_attn.v_proj.bias": r(shape.num_kv_heads * d),
            p + "self_attn.o_proj.weight": r(h, h),
            p + "mlp.gate_proj.weight": r(f, h),
            p + "mlp.up_proj.weight": r(f, h),
            p + "mlp.down_proj.weight": r(h, f),
            p + "input_layernorm.weight": r(h),
            p + "post_attention_layernorm.weight": r(h),
        }
    if not shape.tie_word_embeddings:
        sd["lm_head.weight"] = r(shape.vocab_size, h)
    return sd


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize(("tp", "pp"), [(1, 1), (2, 1), (1, 2), (2, 2), (2, 4)])
def test_round_trip_is_exact(tp, pp, tied):
    shape = _shape(tied=tied)
    hf = _hf_state(shape)
    shards = [[hf_to_megatron(hf, shape, tp, t, pp, s) for t in range(tp)] for s in range(pp)]
    back = megatron_to_hf(shards, shape)
    expected = dict(hf)
    if tied:
        expected["lm_head.weight"] = hf["model.embed_tokens.weight"]
    assert back.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(back[key], value), key


def test_shard_shapes_and_vocab_padding():
    shape = _shape(vocab=61)
    shard = hf_to_megatron(_hf_state(shape), shape, tp_size=2, tp_rank=1, pp_size=2, pp_rank=1)
    assert padded_vocab_size(61, 2) == 62
    assert shard["output_layer.weight"].shape == (31, shape.hidden_size)
    assert torch.all(shard["output_layer.weight"][-1] == 0)  # the padding row
    assert "embedding.word_embeddings.weight" not in shard
    assert shard["decoder.layers.0.self_attention.linear_qkv.weight"].shape == (
        (12 + 2 * 2) * 4 // 2,
        shape.hidden_size,
    )
    assert sorted({k.split(".")[2] for k in shard if k.startswith("decoder.layers")}) == ["0", "1"]


def test_grouped_qkv_layout_by_hand():
    # 4 query heads, 2 groups, head_dim 1: rows are [q0 q1 k0 v0 | q2 q3 k1 v1].
    shape = Qwen2Shape(8, 4, 8, 1, 4, 2, 1e-6, 1e4, 8, False)
    q, k, v = torch.arange(4.0), torch.arange(10.0, 12.0), torch.arange(20.0, 22.0)
    fused = fuse_qkv(q, k, v, shape)
    assert fused.tolist() == [0, 1, 10, 20, 2, 3, 11, 21]
    assert [t.tolist() for t in split_qkv(fused, shape)] == [q.tolist(), k.tolist(), v.tolist()]


def test_missing_tensor_is_named():
    shape = _shape()
    hf = _hf_state(shape)
    del hf["model.layers.2.mlp.up_proj.weight"]
    with pytest.raises(KeyError, match=r"model\.layers\.2\.mlp\.up_proj\.weight"):
        hf_to_megatron(hf, shape, pp_size=2, pp_rank=1)


def test_shape_mismatch_is_named():
    shape = _shape()
    hf = _hf_state(shape)
    hf["model.layers.0.self_attn.k_proj.bias"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"k_proj\.bias.*\(3,\), expected \(8,\)"):
        hf_to_megatron(hf, shape)


def test_tp_that_does_not_divide_the_heads():
    shape = _shape(heads=12, kv=2)
    with pytest.raises(ValueError, match="tensor-parallel size 4 must divide"):
        hf_to_megatron(_hf_state(shape), shape, tp_size=4)
    with pytest.raises(ValueError, match="pipeline size 3"):
        hf_to_megatron(_hf_state(shape), shape, pp_size=3)


def test_unsupported_architecture():
    with pytest.raises(ValueError, match="unsupported architecture 'LlamaForCausalLM'"):
        Qwen2Shape.from_hf_config({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})
    with pytest.raises(ValueError, match="rope_scaling"):
        Qwen2Shape.from_hf_config(
            {**_shape().to_hf_config(), "rope_scaling": {"type": "yarn", "factor": 4}}
        )


def test_hf_config_round_trip():
    shape = _shape(tied=True)
    assert Qwen2Shape.from_hf_config(shape.to_hf_config()) == shape
