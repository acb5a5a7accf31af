"""Model FLOPs and MFU helpers against hand-computed values and the published sizes of
Qwen2.5, Qwen3 and Llama 3.1 models."""

import pytest

from nemo_red.models.families import ModelShape, shape_from_hf_config
from nemo_red.training.flops import matmul_parameters, peak_flops, training_flops
from tests.published_configs import DEEPSEEK_R1_DISTILL_LLAMA_8B, QWEN3_0_6B

QWEN25_1_5B = ModelShape(
    family="qwen2",
    vocab_size=151936,
    hidden_size=1536,
    intermediate_size=8960,
    num_layers=28,
    num_heads=12,
    num_kv_heads=2,
    head_dim=128,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    max_position_embeddings=4096,
    tie_word_embeddings=True,
)
TINY = ModelShape(
    family="qwen2",
    vocab_size=10,
    hidden_size=4,
    intermediate_size=6,
    num_layers=2,
    num_heads=2,
    num_kv_heads=1,
    head_dim=2,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    max_position_embeddings=16,
    tie_word_embeddings=False,
)


def test_qwen25_1_5b_matches_its_published_parameter_counts():
    layers, output = matmul_parameters(QWEN25_1_5B)
    # the model card: 1.54B parameters, 1.31B without embeddings (biases and norms add 0.3M)
    assert layers == 1_310_195_712
    assert output == 233_373_696
    assert layers + output == pytest.approx(1.54e9, rel=0.01)


def test_qwen3_and_llama_match_their_published_parameter_counts():
    # Qwen3-0.6B: 32 x 128 = 2048-wide queries on a 1024-wide model; the model card gives
    # 0.44B parameters without embeddings (the q/k norms add 7k)
    layers, output = matmul_parameters(shape_from_hf_config(QWEN3_0_6B))
    assert layers == 28 * (1024 * (2048 + 2 * 1024) + 2048 * 1024 + 3 * 1024 * 3072)
    assert layers == pytest.approx(0.44e9, rel=0.01)
    assert output == 1024 * 151936
    # Llama 3.1-8B's shape: 8.03B parameters with both embedding matrices
    layers, output = matmul_parameters(shape_from_hf_config(DEEPSEEK_R1_DISTILL_LLAMA_8B))
    assert layers == 32 * (4096 * (4096 + 2 * 1024) + 4096 * 4096 + 3 * 4096 * 14336)
    assert layers + 2 * output == pytest.approx(8.03e9, rel=0.001)


def test_training_flops_by_hand():
    # head_dim 2; per layer: QKV 4 * (4 + 2 * 1 * 2) = 32, output 4 * 4 = 16, MLP 3 * 4 * 6 = 72
    assert matmul_parameters(TINY) == (2 * 120, 40)
    # one sequence of 3 tokens: projections 2 * 280 * 3 = 1680; attention per layer
    # 4 * 2 heads * 2 dims * 6 pairs = 96, two layers 192; forward 1872, training x3
    assert training_flops(TINY, [3]) == 3 * 1872
    # packed sequences attend within themselves: [3, 1] is [3] plus a 1-token sequence
    one = 2 * 280 * 1 + 4 * 2 * 2 * 2 * 1
    assert training_flops(TINY, [3, 1]) == 3 * (1872 + one)
    assert training_flops(TINY, []) == 0.0


def test_qwen25_1_5b_at_4096_tokens_is_about_6n_plus_attention():
    flops = training_flops(QWEN25_1_5B, [4096])
    six_n = 6 * 1_543_569_408 * 4096
    attention = 3 * 4 * 1536 * 28 * 4096 * 4097 / 2
    assert flops == pytest.approx(six_n + attention, rel=1e-12)
    assert attention / flops == pytest.approx(0.1025, abs=0.001)  # attention: 10% at 4k


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.4e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H200", 989.4e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_peak_flops_by_device_name(name, peak):
    assert peak_flops(name) == peak
