"""The memory planner against hand-computed values and Megatron's published figures."""

from __future__ import annotations

import dataclasses
import json

import pytest

from nemo_red.cli import main
from nemo_red.planning.activations import (
    LOCAL_SDPA,
    PAPER_GPT,
    layer_terms,
    stage_activation_bytes,
)
from nemo_red.planning.memory import (
    GPUS,
    EngineSetup,
    Layout,
    Workload,
    plan_memory,
    state_bytes_per_parameter,
)
from nemo_red.planning.model_dims import NAMED_MODELS, ModelDims
from nemo_red.planning.search import candidate_layouts, smallest_fitting_layout

H100 = GPUS["h100"]
QWEN_1_5B = NAMED_MODELS["Qwen2.5-Math-1.5B"]
GiB = 2**30


@pytest.mark.parametrize(
    ("dtype", "dp", "distributed", "expected"),
    [
        # Megatron-LM docs (distributed optimizer): bf16 params + fp32 grads 18 | 6 + 12/d,
        # fp32 params + fp32 grads 16 | 8 + 8/d
        ("bf16", 1, False, 18.0),
        ("bf16", 8, True, 6 + 12 / 8),
        ("fp32", 1, False, 16.0),
        ("fp32", 4, True, 8 + 8 / 4),
    ],
)
def test_state_bytes_per_parameter_are_megatrons(dtype, dp, distributed, expected):
    assert state_bytes_per_parameter(dtype, dp, distributed) == expected


def test_state_of_the_1_5b_model_under_dp8():
    plan = plan_memory(
        QWEN_1_5B, Layout(dp=8), Workload(), EngineSetup(name="native"), H100, reserve_bytes=0
    )
    p = 1_543_714_304
    assert plan.parameters_per_gpu == p
    assert (plan.weights, plan.gradients) == (2 * p, 4 * p)
    assert (plan.main_weights, plan.optimizer_states) == (4 * p / 8, 8 * p / 8)
    assert plan.state == 7.5 * p
    # torch's foreach AdamW keeps one fp32 copy of the local shard; a fused Adam none
    assert plan.optimizer_scratch == 4 * p / 8
    fused = plan_memory(
        QWEN_1_5B,
        Layout(dp=8),
        Workload(fused_adam=True),
        EngineSetup(name="native"),
        H100,
        reserve_bytes=0,
    )
    assert fused.optimizer_scratch == 0


def test_pipeline_stages_hold_their_layers_and_the_vocabulary_matrices():
    dims = NAMED_MODELS["Qwen2.5-Math-7B"]
    layout, engine = Layout(tp=2, pp=2), EngineSetup(name="vllm")
    plan = plan_memory(dims, layout, Workload(), engine, H100)
    first = plan_memory(dims, layout, Workload(), engine, H100, stage="first")
    last = plan_memory(dims, layout, Workload(), engine, H100, stage="last")
    layer = (3584 * 4608 + 4608 + 3584**2 + 3 * 3584 * 18944) // 2 + 2 * 3584
    vocab_matrix = 152064 // 2 * 3584
    assert first.parameters_per_gpu == 14 * layer + vocab_matrix
    assert last.parameters_per_gpu == 14 * layer + vocab_matrix + 3584  # + final norm
    # two micro-batches in flight on the first stage outweigh the last stage's logits
    assert first.activations == pytest.approx(2 * (last.activations - _final(dims)))
    assert (plan.stage, last.logits > 0, first.logits) == ("first", True, 0)


# Korthikanti et al. 2022, GPT-3 175B: s = 2048, h = 12288, a = 96, t = 8, b = 1
GPT3 = ModelDims("gpt3-175b", 96, 12288, 4 * 12288, 96, 96, 128, 51200, True)
S, H, A, T = 2048, 12288, 96, 8


@pytest.mark.parametrize(
    ("tp", "sp", "selective", "per_layer"),
    [
        (1, False, False, S * H * (34 + 5 * A * S / H)),
        (T, False, False, S * H * (10 + 24 / T + 5 * A * S / (H * T))),
        (T, True, False, S * H * (34 / T + 5 * A * S / (H * T))),
        (T, True, True, S * H * 34 / T),
    ],
)
def test_the_papers_layer_gives_its_published_formulas(tp, sp, selective, per_layer):
    terms = layer_terms(PAPER_GPT, GPT3, S, 2, tp, sp, selective)
    assert sum(terms.values()) == pytest.approx(per_layer, rel=1e-12)


def test_full_recomputation_keeps_2sbh_per_layer():
    kept, working = stage_activation_bytes(
        PAPER_GPT, GPT3, S, 2, stage_layers=96, recompute="full", recompute_num_layers=1
    )
    assert kept == 96 * 2 * S * H
    assert working == pytest.approx(S * H * (34 + 5 * A * S / H))


# The project's layer, read off autograd's saved tensors (hidden 64, 4/2 heads of 16,
# MLP 160, fp32): per token 2 norms x (4*64 fp32 input + 4*64 normalised + 4 rms) = 1032,
# QKV and fc1 inputs 2 x 256, rotary cos/sin 4*16*4 = 256, query / repeated key / repeated
# value / attention output / projection input 5 x 64*4 = 1280, log-sum-exp 4*4 = 16, MLP
# (fc1 output 2*160, SiLU output, linear half, fc2 input) 5*160*4 = 3200: 6296 bytes.
TINY = ModelDims("tiny", 1, 64, 160, 4, 2, 16, 1000, True, qkv_bias=True)


@pytest.mark.parametrize(
    ("tp", "sp", "selective", "per_token"),
    [
        (1, False, False, 6296),
        # TP2: norms, QKV / fc1 inputs (1544) replicated, rotary tables (256) full, rest / 2
        (2, False, False, 1544 + 256 + (1280 + 16 + 3200) / 2),
        (2, True, False, 1544 / 2 + 256 + (1280 + 16 + 3200) / 2),
        # selective: the repeated key/value, attention output and LSE (784) are recomputed;
        # the recomputed block keeps its key (2*16*4) and value (a view of the QKV output,
        # 8*16*4)
        (1, False, True, 6296 - 784 + 128 + 512),
    ],
)
def test_the_projects_layer_term_by_term(tp, sp, selective, per_token):
    terms = layer_terms(LOCAL_SDPA, TINY, 128, 4, tp, sp, selective)
    assert sum(terms.values()) == pytest.approx(128 * per_token)


def _final(dims: ModelDims) -> float:
    """The last stage's final norm and output-layer input (bf16, 9216 tokens, TP2)."""
    return 9216 * dims.hidden * (4 + 2 + 2) / 1 + 9216 * 4


def test_interleaved_pipeline_keeps_more_micro_batches_on_the_first_stage():
    dims = ModelDims("small-vocab", 8, 64, 160, 4, 2, 16, 8, True)
    workload = Workload(prompt_length=64, response_length=64, dtype="fp32")
    layout = Layout(pp=4, vpp=2)
    plan = plan_memory(dims, layout, workload, EngineSetup(name="hf"), H100, stage="first")
    per_layer = sum(layer_terms(LOCAL_SDPA, dims, 128, 4).values())
    # Korthikanti et al.: pp (1 + (pp - 1) / (pp vpp)) = 5.5 stages' worth of 2 layers
    assert plan.activations == pytest.approx(4 * (1 + 3 / 8) * 2 * per_layer)
    # the last stage: (vpp - 1) pp warm-up chunks + 1 = 5 chunks of 1 layer, + the final norm
    last = plan_memory(dims, layout, workload, EngineSetup(name="hf"), H100, stage="last")
    final = 128 * (64 * (4 + 4) + 4 + 64 * 4)
    assert last.activations == pytest.approx(5 * per_layer + final)
    plain = plan_memory(dims, Layout(pp=4), workload, EngineSetup(name="hf"), H100, stage="first")
    assert plain.activations == pytest.approx(4 * 2 * per_layer)
    # with only 4 micro-batches the interleaved warm-up is capped at their 8 chunks
    few = dataclasses.replace(workload, micro_batches=4)
    capped = plan_memory(dims, layout, few, EngineSetup(name="hf"), H100, stage="first")
    assert capped.activations == pytest.approx(8 * per_layer)


def test_vllm_takes_its_share_of_the_gpu():
    plan = plan_memory(QWEN_1_5B, Layout(dp=8), Workload(), EngineSetup(name="vllm"), H100)
    weights = 2 * 1_543_714_304
    assert plan.engine_weights == weights
    assert plan.kv_cache == 0.5 * H100 - weights
    assert plan.kv_cache_tokens == int((0.5 * H100 - weights) // (2 * 28 * 2 * 128 * 2))
    assert plan.phases["rollout"] == plan.state + 0.5 * H100
    awake = plan_memory(
        QWEN_1_5B,
        Layout(dp=8),
        Workload(),
        EngineSetup(name="vllm", sleep_while_training=False),
        H100,
    )
    assert awake.phases["training"] - plan.phases["training"] == 0.5 * H100


def test_native_engine_static_cache_and_no_pipelines():
    plan = plan_memory(QWEN_1_5B, Layout(tp=2), Workload(), EngineSetup(name="native"), H100)
    # 64 sequences x 9216 tokens x 28 layers x (key + value) x 1 KV head per rank x 128 x 2 B
    assert plan.kv_cache == 64 * 9216 * 28 * 2 * 1 * 128 * 2
    assert plan.engine_weights == 0
    with pytest.raises(ValueError, match="native engine"):
        plan_memory(QWEN_1_5B, Layout(pp=2), Workload(), EngineSetup(name="native"), H100)
    # nor under sequence parallelism, which training refuses too: the search passes it over
    sp = Layout(tp=2, sequence_parallel=True)
    with pytest.raises(ValueError, match="native engine does not run under sequence"):
        plan_memory(QWEN_1_5B, sp, Workload(), EngineSetup(name="native"), H100)
    big = NAMED_MODELS["Qwen2.5-Math-7B"]
    short = Workload(response_length=2048)
    best = smallest_fitting_layout(big, 8, short, EngineSetup(name="native"), H100, 3 * GiB)
    assert best is not None
    assert not best.layout.sequence_parallel


def test_layouts_that_cannot_split_the_model_are_refused():
    with pytest.raises(ValueError, match="tp 4 must divide the 12 query and 2 KV heads"):
        plan_memory(QWEN_1_5B, Layout(tp=4), Workload(), EngineSetup(), H100)
    with pytest.raises(ValueError, match="sequence parallelism needs tp > 1"):
        Layout(sequence_parallel=True)


def test_long_responses_on_one_gpu_need_full_recomputation():
    workload = Workload(response_length=16384)
    engine = EngineSetup(name="vllm", memory_fraction=0.4)
    best = smallest_fitting_layout(QWEN_1_5B, 1, workload, engine, H100, 3 * GiB)
    assert best is not None
    assert best.layout.recompute == "full"
    for mode in ("none", "selective"):
        plan = plan_memory(QWEN_1_5B, Layout(recompute=mode), workload, engine, H100, 3 * GiB)
        assert not plan.fits


def test_the_search_returns_the_first_candidate_that_fits():
    dims, engine = NAMED_MODELS["Qwen2.5-32B"], EngineSetup(name="vllm", memory_fraction=0.3)
    best = smallest_fitting_layout(dims, 16, Workload(), engine, H100, 3 * GiB)
    assert best is not None
    assert best.fits
    for layout in candidate_layouts(dims, 16):
        if layout == best.layout:
            break
        assert not plan_memory(dims, layout, Workload(), engine, H100, 3 * GiB).fits


def test_plan_command_json_and_table(capsys):
    argv = ["plan", "--model", "Qwen2.5-Math-1.5B", "--gpus", "8", "--gpu", "h100"]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    best = out["smallest_fitting"]
    assert (best["layout"]["tp"], best["layout"]["pp"], best["layout"]["dp"]) == (1, 1, 8)
    assert best["fits"]
    assert out["requested"] is None
    assert main([*argv, "--tp", "2", "--sp", "--recompute", "selective"]) == 0
    table = capsys.readouterr().out
    assert "requested layout: TP2 PP1 DP4 SP selective" in table
    assert "fits" in table


def test_plan_command_errors(capsys):
    assert main(["plan", "--model", "Qwen2.5-Math-1.5B", "--gpus", "8", "--tp", "8"]) == 2
    assert "tp 8 must divide the 12 query and 2 KV heads" in capsys.readouterr().err
    assert main(["plan", "--model", "Qwen2.5-32B", "--gpus", "1", "--gpu", "h100"]) == 1
    assert "no layout of 1 GPUs fits; the closest" in capsys.readouterr().out


def test_trtllm_fills_what_is_free_and_hf_holds_a_whole_copy():
    layout, workload = Layout(dp=8), Workload()
    trt = plan_memory(QWEN_1_5B, layout, workload, EngineSetup(name="trtllm"), H100)
    weights = 2 * 1_543_714_304
    assert trt.kv_cache == pytest.approx(0.9 * (H100 - trt.state - weights))
    hf = plan_memory(
        QWEN_1_5B, Layout(tp=2, dp=4), workload, EngineSetup(name="hf", batch_size=8), H100
    )
    # not split by the actor's TP: 8 sequences x 9216 tokens x 28 layers x 2 x 2 KV heads x 128
    assert (hf.engine_weights, hf.kv_cache) == (weights, 8 * 9216 * 28 * 2 * 2 * 128 * 2)
    with pytest.raises(KeyError, match="unknown rollout engine 'sglang'"):
        plan_memory(QWEN_1_5B, layout, workload, EngineSetup(name="sglang"), H100)
