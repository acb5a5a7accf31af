"""The RED training step under TP = 2, PP = 2 and DP = 2 equals a single process.

Two optimizer steps of the ``red`` preset on a tiny Qwen2, and a Qwen3 under TP = 2 (AdamW,
linear LR decay, grad clipping, entropy regulator with w in [0, 7]); losses, metrics and
every parameter (gathered to the HF layout) are compared. Then resuming from a checkpoint
equals training straight.
"""

import math
from pathlib import Path

import pytest
import torch

from tests.torchrun import run_torchrun

WORKER = Path(__file__).with_name("_actor_worker.py")
pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def _train(tmp_path: Path, name: str, nproc: int, *extra: str) -> dict:
    out = tmp_path / f"{name}.pt"
    run_torchrun(WORKER, nproc, [*extra, "--out", str(out)], timeout=300)
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict:
    return _train(tmp_path_factory.mktemp("single"), "single", 1)


def _assert_same_run(run: dict, ref: dict, atol: float) -> None:
    assert len(run["history"]) == len(ref["history"]) == 2
    for got, want in zip(run["history"], ref["history"], strict=True):
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], abs=atol, rel=1e-6), key
    for key, value in ref["params"].items():
        torch.testing.assert_close(run["params"][key], value, rtol=0, atol=atol, msg=key)
    assert run["regulator"]["weight"] == pytest.approx(ref["regulator"]["weight"], rel=1e-6)


@pytest.mark.parametrize(
    ("name", "args"), [("tp2", ["--tp", "2"]), ("pp2", ["--pp", "2"]), ("dp2", [])]
)
def test_layout_matches_single_process(tmp_path, single, name, args):
    _assert_same_run(_train(tmp_path, name, 2, *args), single, atol=1e-5)


def test_tied_embeddings_across_pipeline_stages(tmp_path):
    # The first and last stages each hold the embedding; their gradients must be summed.
    single_tied = _train(tmp_path, "single_tied", 1, "--tied")
    _assert_same_run(_train(tmp_path, "pp2_tied", 2, "--pp", "2", "--tied"), single_tied, 1e-5)


def test_qwen3_under_tensor_parallelism(tmp_path):
    # Every TP rank holds the whole per-head q/k norms but applies them to its own heads:
    # their gradients must be summed over the TP group.
    single_qwen3 = _train(tmp_path, "single_qwen3", 1, "--family", "qwen3")
    tp2_qwen3 = _train(tmp_path, "tp2_qwen3", 2, "--tp", "2", "--family", "qwen3")
    assert any("q_norm" in key for key in single_qwen3["params"])
    _assert_same_run(tp2_qwen3, single_qwen3, atol=1e-5)


def test_single_process_run_learns_something(single):
    first, second = single["history"]
    assert second["skipped"] == first["skipped"] == 0
    assert first["w"] == 1.0  # no entropy history yet
    assert second["w"] != 1.0
    assert first["grad_norm"] > 0


@pytest.mark.parametrize(("nproc", "args"), [(1, []), (2, ["--pp", "2", "--tied"])])
def test_resume_equals_uninterrupted(tmp_path, nproc, args):
    ckpt = str(tmp_path / "ckpt")
    steps = ["--steps", "4"]
    straight = _train(tmp_path, "straight", nproc, *args, *steps)
    _train(
        tmp_path,
        "first_half",
        nproc,
        *args,
        *steps,
        "--ckpt",
        ckpt,
        "--save-every",
        "2",
        "--stop-after",
        "2",
    )
    resumed = _train(tmp_path, "resumed", nproc, *args, *steps, "--ckpt", ckpt, "--save-every", "2")
    assert resumed["regulator"] == straight["regulator"]
    assert resumed["history"] == straight["history"]
    for key, value in straight["params"].items():
        torch.testing.assert_close(resumed["params"][key], value, rtol=0, atol=1e-6, msg=key)


def test_kill_during_save_keeps_the_previous_checkpoint(tmp_path):
    from nemo_red.training.checkpoint import latest_checkpoint

    ckpt = tmp_path / "ckpt"
    steps = ["--steps", "4", "--ckpt", str(ckpt), "--save-every", "2"]
    with pytest.raises(RuntimeError, match="exited with"):
        _train(tmp_path, "killed", 1, *steps, "--kill-during-save-at", "4")
    assert (ckpt / "step_000004.tmp").is_dir()
    assert latest_checkpoint(ckpt) == ckpt / "step_000002"
    resumed = _train(tmp_path, "resumed", 1, *steps)
    straight = _train(tmp_path, "straight", 1, "--steps", "4")
    assert resumed["history"] == straight["history"]
    assert not (ckpt / "step_000004.tmp").exists()  # the next save cleans up the partial one


def test_bf16_weights_keep_small_updates_in_fp32_main_weights(tmp_path):
    # At lr 1e-5 an Adam update is far below half a bf16 rounding step of most weights
    # (|w| ~ 0.05 -> 1.2e-4): stepping the bf16 weights directly would drop it. The
    # optimizer's fp32 main weights keep it, and the bf16 weights are their rounding.
    lr, steps = 1e-5, 3
    run = _train(tmp_path, "bf16", 1, "--dtype", "bfloat16", "--lr", str(lr), "--steps", "3")
    assert all(h["skipped"] == 0 for h in run["history"])
    main_moved = bf16_moved = total = 0
    for name, main in run["main"].items():
        model, initial = run["model"][name], run["initial"][name]
        assert main.dtype == torch.float32, name
        assert model.dtype == torch.bfloat16, name
        torch.testing.assert_close(model, main.view_as(model).to(torch.bfloat16), rtol=0, atol=0)
        delta = (main.view_as(model) - initial.float()).abs()
        assert float(delta.max()) <= 4 * steps * lr, name  # Adam steps are ~lr each
        main_moved += int((delta > 0).sum())
        bf16_moved += int((model != initial).sum())
        total += model.numel()
    assert main_moved > 0.9 * total  # nearly every weight moved in fp32 ...
    assert bf16_moved < 0.5 * main_moved  # ... most of those moves are below bf16's step


def test_non_finite_gradient_on_one_rank_skips_the_step_everywhere(tmp_path):
    # Under DP = 2 the NaN reaches one rank's gradients; every rank must skip the update,
    # so two steps with a skipped second equal one step.
    one = _train(tmp_path, "one", 2, "--steps", "1")
    run = _train(tmp_path, "nan", 2, "--steps", "2", "--nan-step", "1")
    assert [h["skipped"] for h in run["history"]] == [0.0, 1.0]
    assert math.isnan(run["history"][1]["grad_norm"])
    for key, value in one["params"].items():
        torch.testing.assert_close(run["params"][key], value, rtol=0, atol=0, msg=key)


def test_asynchronous_save_is_published_later_and_resumes(tmp_path):
    # The writes of an asynchronous save are done when it is scheduled here (megatron's
    # background writer needs CUDA); its publication waits, as on a GPU.
    from nemo_red.training.checkpoint import latest_checkpoint

    ckpt = tmp_path / "ckpt"
    steps = ["--steps", "4", "--ckpt", str(ckpt), "--save-every", "2", "--async-save"]
    killed = [*steps, "--stop-after", "2", "--exit-before-publishing"]
    run_torchrun(WORKER, 1, [*killed, "--out", str(tmp_path / "killed.pt")], timeout=300)
    assert list((ckpt / "step_000002.tmp").glob("*.distcp"))  # written, not published
    assert latest_checkpoint(ckpt) is None
    _train(tmp_path, "first_half", 1, *steps, "--stop-after", "2")
    assert latest_checkpoint(ckpt) == ckpt / "step_000002"  # published by the end of the run
    resumed = _train(tmp_path, "resumed", 1, *steps)
    assert latest_checkpoint(ckpt) == ckpt / "step_000004"
    straight = _train(tmp_path, "straight", 1, "--steps", "4")
    assert resumed["history"] == straight["history"]
    for key, value in straight["params"].items():
        torch.testing.assert_close(resumed["params"][key], value, rtol=0, atol=1e-6, msg=key)


def test_a_fresh_optimizer_takes_adams_first_step_again(tmp_path):
    # Adam's first step from zero moments moves every weight by lr * g / (|g| + eps), i.e.
    # by lr (weight decay adds lr * wd * |p| <= 1e-4 lr here); carried moments do not.
    lr, steps = 1e-4, ["--steps", "3", "--lr", "1e-4", "--preset", "grpo"]
    fresh = _train(tmp_path, "fresh", 1, *steps, "--fresh-at", "2")
    assert fresh["adam_steps"] == [1.0]  # counted from the reset
    carried = _train(tmp_path, "carried", 1, *steps)
    assert carried["adam_steps"] == [3.0]
    update = torch.cat([u.flatten().abs() for u in fresh["history"][2]["update"].values()])
    moved = update[update > 0]
    assert moved.numel() > 0.9 * update.numel()
    assert float(moved.median()) == pytest.approx(lr, rel=1e-3)
    steps_after = [h["loss/total"] for h in carried["history"][:2]]
    assert [h["loss/total"] for h in fresh["history"][:2]] == steps_after  # same until the reset
