"""`nemo-red train` end to end on the tiny default: outputs, SIGKILL + resume, torchrun, errors.

The runs are subprocesses (slow); the errors found before training starts are checked in
process, through the same entry point.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from nemo_red.cli import main
from tests.torchrun import REPO_ROOT, run_torchrun
from tests.training.runs import SMALL, TINY, kill_at_checkpoint
from tests.training.runs import env as _env
from tests.training.runs import metrics as _metrics
from tests.training.runs import train_cmd as _train_cmd


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    cmd = _train_cmd(
        out, "trainer.total_steps=4", "trainer.checkpoint_every=2", "trainer.eval_every=2"
    )
    subprocess.run(cmd, check=True, env=_env(), capture_output=True, timeout=600)
    return out


@pytest.mark.slow
def test_tiny_run_writes_metrics_checkpoints_plots_and_hf_export(straight):
    start, *metrics = _metrics(straight)
    # the policy is evaluated before the first update (step 0), then every 2 steps
    assert start["step"] == 0
    assert "eval/accuracy" in start
    assert not {k for k in start if not k.startswith("eval/")} - {"step"}
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert metrics[0]["stage/sft_only"] == 1.0  # the SFT warm-up step
    assert "eval/accuracy" in metrics[0]  # the end of the SFT stage
    assert "reward/online_accuracy" not in metrics[0]
    for key in (
        "reward/online_accuracy",
        "entropy/h_rl",
        "entropy/h_sft",
        "entropy/w",
        "online/clip_frac",
        "loss/total",
        "grad_norm",
        "lr",
        "logprob_gap/max",
    ):
        assert all(key in m for m in metrics[1:]), key
    assert "eval/accuracy" in metrics[1]
    assert (straight / "checkpoints" / "latest").read_text() == "step_000004"
    assert {p.name for p in (straight / "plots").glob("*.png")} >= {"entropy.png", "weight.png"}
    assert list((straight / "tensorboard").iterdir())
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    model = Qwen2ForCausalLM.from_pretrained(straight / "hf")
    tokenizer = AutoTokenizer.from_pretrained(straight / "hf")
    ids = tokenizer("Compute 2 + 3.", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 4


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_uninterrupted(straight, tmp_path):
    out = tmp_path / "run"
    cmd = _train_cmd(
        out, "trainer.total_steps=4", "trainer.checkpoint_every=2", "trainer.eval_every=2"
    )
    kill_at_checkpoint(cmd, out, "step_000002")
    subprocess.run(cmd, check=True, env=_env(), capture_output=True, timeout=600)
    assert _metrics(out) == _metrics(straight)
    from safetensors.torch import load_file

    resumed, reference = (
        load_file(out / "hf" / "model.safetensors"),
        load_file(straight / "hf" / "model.safetensors"),
    )
    for key, value in reference.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_init_checkpoint_carries_weights_and_optimizer_moments_not_the_schedule(straight, tmp_path):
    out = tmp_path / "continued"
    source = straight / "checkpoints" / "step_000002"
    cmd = _train_cmd(
        out,
        f"model.path={straight / 'hf'}",  # the architecture and tokenizer (weights of step 4)
        f"model.init_checkpoint={source}",
        "trainer.total_steps=1",
        "trainer.optim.lr=1e-30",  # the step leaves the weights where they start
        "trainer.optim.min_lr=0",
        "trainer.optim.schedule=constant",
        "algorithm.sft_warmup_steps=0",
    )
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"weights and optimizer moments from {source}" in result.stderr
    first = next(m for m in _metrics(out) if m["step"] == 1)
    assert first["lr"] == pytest.approx(1e-30)  # the schedule restarted
    start, end = _weights(source), _weights(out / "checkpoints" / "step_000001")
    common = torch.load(out / "checkpoints" / "step_000001" / "common.pt", weights_only=False)
    assert common["scheduler"]["num_steps"] == 1  # the schedule restarted
    # AdamW's step count went on from the source run's 2 steps.
    groups = common["optimizer"]["optimizer"]["param_groups"]
    assert {g["step"] for g in groups} == {3.0}
    assert all(g["lr"] == pytest.approx(1e-30) for g in groups)
    step4 = _weights(straight / "checkpoints" / "step_000004")
    moved = 0
    for key, value in start.items():
        torch.testing.assert_close(end[key], value, rtol=0, atol=1e-6)
        moved += int(not torch.allclose(step4[key], value))
    assert moved > 0  # the weights came from step 2, not from model.path (step 4)


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The model tensors of a torch_dist training checkpoint, read without process groups."""
    import torch.distributed.checkpoint as dcp

    metadata = dcp.FileSystemReader(str(checkpoint)).read_metadata().state_dict_metadata
    state = {
        key: torch.empty(tuple(meta.size), dtype=meta.properties.dtype)
        for key, meta in metadata.items()
        if hasattr(meta, "size") and not key.startswith("optimizer.")
    }
    dcp.load(state, storage_reader=dcp.FileSystemReader(str(checkpoint)), no_dist=True)
    return state


def _one_step_from(straight: Path, out: Path, checkpoint: Path) -> subprocess.CompletedProcess:
    """One training step of a run with ``model.init_checkpoint=checkpoint``."""
    cmd = _train_cmd(
        out,
        f"model.path={straight / 'hf'}",
        f"model.init_checkpoint={checkpoint}",
        "trainer.total_steps=1",
        "trainer.optim.schedule=constant",
        "algorithm.sft_warmup_steps=0",
    )
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_init_checkpoint_that_is_no_checkpoint_is_named(straight, tmp_path):
    result = _one_step_from(straight, tmp_path / "run", straight / "hf")
    assert result.returncode != 0
    assert f"{straight / 'hf'}: not a training checkpoint" in result.stderr


@pytest.mark.slow
def test_checkpoint_of_an_earlier_version_is_refused_with_what_to_do(straight, tmp_path):
    # the per-rank torch.save layout of earlier versions
    old = tmp_path / "old_step"
    old.mkdir()
    shutil.copy2(straight / "checkpoints" / "step_000002" / "meta.json", old / "meta.json")
    for name in ("model_tp00_pp000.pt", "optim_rank00000.pt", "rng_rank00000.pt"):
        torch.save({}, old / name)
    result = _one_step_from(straight, tmp_path / "run", old)
    assert result.returncode != 0
    assert f"{old}: a checkpoint of an earlier nemo_red version" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize(
    "layout",
    [
        [],
        ["parallel.tp=2"],
        # model chunks from build_policy, their checkpoint, export and refit of the hf engine
        # after deferred weight gathers
        [
            "parallel.pp=2",
            "parallel.virtual_pp=2",
            "parallel.overlap_grad_reduce=true",
            "parallel.overlap_param_gather=true",
            "rollout.engine=hf",
        ],
    ],
    ids=["dp2", "tp2", "pp2_vpp2_overlap"],
)
def test_training_under_torchrun(tmp_path, layout):
    out = tmp_path / "run"
    script = REPO_ROOT / "nemo_red" / "cli.py"
    # evaluation during training also covers benchmark subsets: a multiple-choice set found
    # by name in a data directory and a math set given by path
    bench = tmp_path / "bench"
    bench.mkdir()
    choices = {"text": ["3", "5", "7"], "label": ["A", "B", "C"]}
    arc = [
        {"id": f"q{i}", "question": f"{i} + 2?", "choices": choices, "answerKey": "B"}
        for i in range(5)
    ]
    (bench / "arc_c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in arc))
    sums = bench / "sums.jsonl"
    sums.write_text(
        "".join(json.dumps({"problem": f"{i} + 1", "answer": str(i + 1)}) + "\n" for i in range(7))
    )
    args = [
        "train",
        "--config",
        str(TINY),
        f"run.output_dir={out}",
        *SMALL,
        "trainer.total_steps=2",
        "trainer.eval_every=2",
        "trainer.checkpoint_every=2",
        f"data.benchmark_dir={bench}",
        f"data.eval_benchmarks=[arc_c,'sums={sums}']",
        "data.max_prompt_tokens=100",
        "rollout.eval_n=2",
        *layout,
    ]
    run_torchrun(script, 2, args, timeout=400)
    start, *metrics = _metrics(out)
    assert start["step"] == 0
    assert "eval/arc_c/accuracy" in start  # benchmarks are evaluated before training too
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["skipped"] == 0 for m in metrics)
    for key in ("eval/accuracy", "eval/pass@2", "eval/arc_c/accuracy", "eval/sums/truncated"):
        assert key in metrics[1], key
    overall = (metrics[1]["eval/arc_c/accuracy"] + metrics[1]["eval/sums/accuracy"]) / 2
    assert metrics[1]["eval/overall/accuracy"] == pytest.approx(overall)
    assert (out / "hf" / "model.safetensors").is_file()


def test_bad_config_names_the_key(capsys):
    assert main(["train", "--config", str(TINY), "trainer.optim.lrate=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'trainer.optim.lrate'" in err
    assert "'lr'" in err


def test_bad_data_names_file_row_and_field(tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text(
        '{"problem": "1+1", "answer": "2", "distill": "\\\\boxed{2}"}\n'
        '{"problem": "2+2", "distill": "\\\\boxed{4}"}\n'
    )
    args = [
        "train",
        "--config",
        str(TINY),
        f"run.output_dir={tmp_path / 'run'}",
        f"data.train_path={data}",
        "data.layout=red",
        "model.tokenizer_path=none",
    ]
    assert main(args) == 2
    assert f"{data}: row 2: missing field 'answer'" in capsys.readouterr().err
