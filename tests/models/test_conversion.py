"""HF <-> megatron state-dict conversion of every family: exact round trips and clear errors
(no megatron)."""

import pytest
import torch

from nemo_red.models.conversion import fuse_qkv, hf_to_megatron, megatron_to_hf, split_qkv
from nemo_red.models.families import ModelShape
from nemo_red.models.megatron_gpt import padded_vocab_size
from tests.tiny_models import LLAMA3_ROPE_SCALING, random_model

# per family: the config extras of its tiny model (Qwen3 with head_dim != hidden / heads)
FAMILIES = {
    "qwen2": {},
    "qwen3": {"head_dim": 12},
    "llama": {"rope_scaling": LLAMA3_ROPE_SCALING, "max_positions": 16384},
}


def _hf(family: str, tied: bool = False, **kwargs) -> tuple[ModelShape, dict[str, torch.Tensor]]:
    """A random HF model's shape and state dict (transformers' own tensor names)."""
    model = random_model(
        family,
        hidden=48,
        heads=12,
        kv_heads=2,
        intermediate=40,
        tied=tied,
        noise=1.0,
        **(FAMILIES[family] | kwargs),
    )
    return ModelShape.from_hf_config(model.config.to_dict()), model.state_dict()


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize(("tp", "pp"), [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_round_trip_is_bit_exact(family, tp, pp, tied):
    shape, hf = _hf(family, tied)
    shards = [[hf_to_megatron(hf, shape, tp, t, pp, s) for t in range(tp)] for s in range(pp)]
    back = megatron_to_hf(shards, shape)
    assert back.keys() == hf.keys()  # HF's own names, lm_head included when tied
    for key, value in hf.items():
        assert torch.equal(back[key], value), key


def test_round_trip_over_four_stages():
    shape, hf = _hf("qwen3", tied=True)
    shards = [[hf_to_megatron(hf, shape, 2, t, 4, s) for t in range(2)] for s in range(4)]
    back = megatron_to_hf(shards, shape)
    assert all(torch.equal(back[k], v) for k, v in hf.items())


def test_family_tensors_by_name():
    names = {f: set(hf_to_megatron(*reversed(_hf(f)))) for f in FAMILIES}
    qkv_biases = {f"decoder.layers.{i}.self_attention.linear_qkv.bias" for i in range(4)}
    qk_norms = {
        f"decoder.layers.{i}.self_attention.{n}_layernorm.weight" for i in range(4) for n in "qk"
    }
    assert names["qwen2"] - names["llama"] == qkv_biases
    assert names["qwen3"] - names["llama"] == qk_norms
    assert names["llama"] < names["qwen2"]


def test_qwen3_head_dim_sets_the_projection_shapes():
    shape, hf = _hf("qwen3")
    assert (shape.hidden_size, shape.num_heads, shape.head_dim) == (48, 12, 12)
    shard = hf_to_megatron(hf, shape, tp_size=2, tp_rank=1)
    prefix = "decoder.layers.0.self_attention."
    assert shard[prefix + "linear_qkv.weight"].shape == ((12 + 2 * 2) * 12 // 2, 48)
    assert shard[prefix + "linear_proj.weight"].shape == (48, 12 * 12 // 2)
    assert shard[prefix + "q_layernorm.weight"].shape == (12,)  # per head, replicated


def test_shard_shapes_and_vocab_padding():
    shape, hf = _hf("qwen2")
    shard = hf_to_megatron(hf, shape, tp_size=2, tp_rank=1, pp_size=2, pp_rank=1)
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
    shape = ModelShape("qwen2", 8, 4, 8, 1, 4, 2, 1, 1e-6, 1e4, 8, False)
    q, k, v = torch.arange(4.0), torch.arange(10.0, 12.0), torch.arange(20.0, 22.0)
    fused = fuse_qkv(q, k, v, shape)
    assert fused.tolist() == [0, 1, 10, 20, 2, 3, 11, 21]
    assert [t.tolist() for t in split_qkv(fused, shape)] == [q.tolist(), k.tolist(), v.tolist()]


def test_missing_tensor_is_named():
    shape, hf = _hf("qwen3")
    del hf["model.layers.2.self_attn.k_norm.weight"]
    with pytest.raises(KeyError, match=r"model\.layers\.2\.self_attn\.k_norm\.weight"):
        hf_to_megatron(hf, shape, pp_size=2, pp_rank=1)


def test_shape_mismatch_is_named():
    shape, hf = _hf("qwen2")
    hf["model.layers.0.self_attn.k_proj.bias"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"k_proj\.bias.*\(3,\), expected \(8,\)"):
        hf_to_megatron(hf, shape)


def test_tp_that_does_not_divide_the_heads():
    shape, hf = _hf("llama")
    with pytest.raises(ValueError, match="tensor-parallel size 4 must divide"):
        hf_to_megatron(hf, shape, tp_size=4)
    with pytest.raises(ValueError, match="pipeline size 3"):
        hf_to_megatron(hf, shape, pp_size=3)
