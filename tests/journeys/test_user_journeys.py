"""The journeys of the README, run the way a user runs them (CLI, real files, tiny models).

1. A Hugging Face Qwen2 directory -> ``nemo-red train model.path=<HF dir>`` (RED) -> the
   run's ``hf/`` export loads in transformers.
2. The same directory -> ``nemo-red convert hf-to-megatron --tp 2`` ->
   ``scripts/launch_torchrun.sh`` with 2 processes and ``parallel.tp=2`` -> killed
   (SIGKILL) after a checkpoint and started again -> ``nemo-red eval`` of its export on
   problems of a shared benchmark set.
3. A finished run started again, with and without a changed config.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nemo_red.cli import main
from tests.benchmark_data import DATA_DIR, MISSING_REASON
from tests.torchrun import REPO_ROOT, free_port
from tests.training.runs import env

TINY = REPO_ROOT / "examples" / "conf" / "tiny_red.yaml"
LAUNCHER = REPO_ROOT / "scripts" / "launch_torchrun.sh"
# the tiny default, short: RED from the first step (the model is pretrained), 2 steps
SHORT = [
    "algorithm.sft_warmup_steps=0",
    "trainer.total_steps=2",
    "trainer.optim.warmup_steps=0",
    "trainer.prompts_per_step=8",
    "trainer.checkpoint_every=1",
    "trainer.eval_every=2",
    "trainer.progress=false",
    "trainer.grader_workers=1",
    "data.arithmetic.train_size=64",
    "data.arithmetic.test_size=16",
    "data.eval_limit=8",
    "rollout.max_new_tokens=16",
]


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _readable(path: Path) -> bool:
    mode = stat.S_IMODE(path.stat().st_mode)
    return bool(mode & stat.S_IRGRP) and bool(mode & stat.S_IROTH)


@pytest.fixture(scope="module")
def hf_run(tiny_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("journey1") / "run"
    args = ["train", "--config", str(TINY), f"model.path={tiny_hf}", f"run.output_dir={run}"]
    assert main([*args, *SHORT]) == 0
    return run


def test_train_from_a_hf_directory_then_load_the_export(hf_run: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start, *rows = _rows(hf_run)
    assert start["step"] == 0  # the policy before training
    assert "eval/accuracy" in start
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["stage/sft_only"] == 0.0 and "entropy/w" in r for r in rows)  # RED steps
    model = AutoModelForCausalLM.from_pretrained(hf_run / "hf")
    tokenizer = AutoTokenizer.from_pretrained(hf_run / "hf")
    ids = tokenizer("Compute 2 + 3.", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape[1] == ids.shape[1] + 3
    assert all(_readable(p) for p in (hf_run / "hf").iterdir())  # 0644, not 0600


def test_a_finished_run_started_again_says_so_and_builds_nothing(
    hf_run: Path, tiny_hf: Path, capsys
):
    args = ["train", "--config", str(TINY), f"model.path={tiny_hf}", f"run.output_dir={hf_run}"]
    before = (hf_run / "metrics.jsonl").read_text()
    assert main([*args, *SHORT]) == 0
    assert "is already complete (checkpoint at step 2 of 2)" in capsys.readouterr().err
    assert (hf_run / "metrics.jsonl").read_text() == before


@pytest.mark.slow
def test_resuming_with_another_config_needs_the_flag_and_is_recorded(
    hf_run: Path, tiny_hf: Path, capsys, tmp_path
):
    run = tmp_path / "run"
    import shutil

    shutil.copytree(hf_run, run)  # the module's run stays as it is for the other tests
    args = ["train", "--config", str(TINY), f"model.path={tiny_hf}", f"run.output_dir={run}"]
    config_before = (run / "config.yaml").read_text()
    assert main([*args, *SHORT, "algorithm.preset=grpo", "trainer.total_steps=3"]) == 2
    err = capsys.readouterr().err
    assert "algorithm.preset: 'red' -> 'grpo'" in err
    assert "trainer.total_steps: 2 -> 3" in err
    assert "--allow-config-change" in err
    assert (run / "config.yaml").read_text() == config_before  # a refused start writes nothing
    assert main([*args, *SHORT, "model.dtype=bfloat16", "--allow-config-change"]) == 2
    assert "model.dtype cannot change when resuming" in capsys.readouterr().err
    assert main([*args, "--allow-config-change", *SHORT, "trainer.total_steps=3"]) == 0
    assert [r["step"] for r in _rows(run)] == [0, 1, 2, 3]
    history = [json.loads(line) for line in (run / "config_history.jsonl").open()]
    assert [h["start_step"] for h in history] == [0, 2]
    assert history[1]["changed"] == {"trainer.total_steps": {"from": 2, "to": 3}}
    assert "total_steps: 3" in (run / "config.yaml").read_text()


def _launch(cmd: list[str], port: int) -> subprocess.Popen:
    launch_env = {**env(), "GPUS_PER_NODE": "2", "PYTHON": sys.executable}
    launch_env["MASTER_PORT"] = str(port)
    return subprocess.Popen(
        cmd,
        env=launch_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the launcher and its workers: killed as one group
    )


def _kill_after_first_checkpoint(proc: subprocess.Popen, root: Path) -> str:
    """SIGKILLs the launcher and its workers once a checkpoint exists; returns its name."""
    latest = root / "latest"
    deadline = time.time() + 400
    while not latest.is_file():
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read()[-3000:])
        assert time.time() < deadline
        time.sleep(0.02)
    # torchrun starts its workers in sessions of their own: kill the whole tree, as a
    # node failure would
    for pid in [proc.pid, *_descendants(proc.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    return latest.read_text()


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat_file.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.skipif(not DATA_DIR.is_dir(), reason=MISSING_REASON)
def test_convert_train_under_torchrun_kill_resume_evaluate(tiny_hf: Path, tmp_path: Path):
    megatron = tmp_path / "tiny-tp2"
    assert main(["convert", "hf-to-megatron", str(tiny_hf), str(megatron), "--tp", "2"]) == 0
    run = tmp_path / "run"
    steps = ["trainer.total_steps=8", "trainer.eval_every=8", "trainer.checkpoint_every=2"]
    cmd = [
        str(LAUNCHER), "--config", str(TINY), f"model.path={megatron}", "parallel.tp=2",
        f"run.output_dir={run}", *SHORT, *steps,
    ]  # fmt: skip
    killed_at = _kill_after_first_checkpoint(_launch(cmd, free_port()), run / "checkpoints")
    step = int(killed_at.removeprefix("step_"))
    assert step < 8, "the run ended before it could be killed"
    resumed = _launch(cmd, free_port())
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-3000:]
    assert f"resumed from {run / 'checkpoints' / killed_at} (step {step})" in stderr
    assert [r["step"] for r in _rows(run)] == list(range(0, 9))  # 0: evaluated before training
    out = tmp_path / "eval"
    code = main(
        [
            "eval", "--model", str(run / "hf"), "--benchmarks", "math500", "--data-dir",
            str(DATA_DIR), "--limit", "3", "--max-new-tokens", "8", "--template", "plain",
            "--workers", "1", "--out", str(out), "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["benchmarks"]["math500"]["items"] == 3
