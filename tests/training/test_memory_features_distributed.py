"""Sequence parallelism, recomputation, the virtual pipeline and overlapped DDP train like the
plain layouts: two RED steps under ``torchrun --nproc_per_node 2`` (gloo) in one launch.

Each feature variant is compared with the same layout without it (losses, every metric and
every parameter after two steps within 1e-5), and the worker's evidence shows that the
feature was in effect: recomputation repeats core-attention calls in the backward pass,
sequence parallelism halves the sequence a decoder layer sees, the virtual pipeline runs
two chunks per stage through megatron's interleaved schedule (and resumes a checkpoint of
them, under the virtual pipeline and without one), and the overlap settings reach megatron's
DDP (a checkpoint saved with overlapped weight gathering resumes like the plain run). A
Qwen3 (per-head q/k norms) runs sequence parallelism too.
"""

from pathlib import Path

import pytest
import torch

from tests.torchrun import run_torchrun

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
WORKER = Path(__file__).with_name("_memory_features_worker.py")
ATOL = 1e-5

# feature variant -> the plain layout it must match
PLAIN = {
    "dp2_overlap": "dp2",
    "dp2_full_uniform": "dp2",
    "dp2_selective": "dp2",
    "tp2_sp": "tp2",
    "tp2_sp_full_block": "tp2",
    "pp2_vpp2": "pp2",
    "pp2_vpp2_selective_overlap": "pp2",
    "pp2_from_vpp2": "pp2",
    "qwen3_tp2_sp": "qwen3_tp2",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("features") / "runs.pt"
    run_torchrun(WORKER, 2, ["--out", str(out)], timeout=600)
    return torch.load(out, weights_only=False)


def _max_differences(run: dict, ref: dict) -> tuple[float, float]:
    """The largest absolute differences of the step metrics and of the parameters."""
    metrics = 0.0
    assert len(run["history"]) == len(ref["history"]) == 2
    for got, want in zip(run["history"], ref["history"], strict=True):
        assert got.keys() == want.keys()
        metrics = max(metrics, *(abs(got[k] - want[k]) for k in want))
    assert run["params"].keys() == ref["params"].keys()
    params = max(float((run["params"][k] - v).abs().max()) for k, v in ref["params"].items())
    return metrics, params


@pytest.mark.parametrize("variant", list(PLAIN))
def test_feature_trains_like_the_plain_layout(runs, variant):
    run, ref = runs[variant], runs[PLAIN[variant]]
    assert all(h["skipped"] == 0 for h in run["history"])
    metrics, params = _max_differences(run, ref)
    assert metrics < ATOL, f"{variant}: step metrics differ by {metrics:.3g}"
    assert params < ATOL, f"{variant}: parameters differ by {params:.3g}"
    assert run["params"]  # the tied model: embedding, norms and every layer


def test_plain_layouts_agree(runs):
    for layout in ("tp2", "pp2"):
        metrics, params = _max_differences(runs[layout], runs["dp2"])
        assert max(metrics, params) < ATOL, layout
    assert runs["dp2"]["history"][1]["w"] != 1.0  # the regulator moved: a real second step


@pytest.mark.parametrize(
    ("variant", "ratio"),
    [
        # plain: a log-prob forward and a training forward, once per layer each
        ("dp2_full_uniform", 1.5),  # every layer forwards again in the backward pass
        ("dp2_selective", 1.5),  # every core attention does
        ("tp2_sp_full_block", 1.25),  # the first 2 of 4 layers do
        ("pp2_vpp2_selective_overlap", 1.5),
    ],
)
def test_recomputation_repeats_the_forward_in_the_backward_pass(runs, variant, ratio):
    calls = runs[variant]["evidence"]["attention_calls"]
    plain = runs[PLAIN[variant]]["evidence"]["attention_calls"]
    assert calls == [int(ratio * c) for c in plain]


def test_sequence_parallelism_splits_the_sequence_over_tp(runs):
    for variant in ("tp2_sp", "tp2_sp_full_block", "qwen3_tp2_sp"):
        plain = runs[PLAIN[variant]]["evidence"]["decoder_seq_lengths"]
        assert runs[variant]["evidence"]["decoder_seq_lengths"] == [n // 2 for n in plain]
        assert all(n % 2 == 0 for n in plain)  # rows padded to a multiple of tp


def test_virtual_pipeline_runs_interleaved_chunks(runs):
    assert runs["pp2"]["evidence"]["schedule"] == "forward_backward_pipelining_without_interleaving"
    for variant in ("pp2_vpp2", "pp2_vpp2_selective_overlap"):
        evidence = runs[variant]["evidence"]
        assert evidence["chunks"] == 2
        assert evidence["schedule"] == "forward_backward_pipelining_with_interleaving"


def test_overlap_settings_reach_megatron_ddp(runs):
    assert runs["dp2"]["evidence"]["overlap_grad_reduce"] is False
    both = runs["dp2_overlap"]["evidence"]
    assert both["overlap_grad_reduce"]
    assert both["overlap_param_gather"]
    grad_only = runs["pp2_vpp2_selective_overlap"]["evidence"]
    assert grad_only["overlap_grad_reduce"]
    assert not grad_only["overlap_param_gather"]
