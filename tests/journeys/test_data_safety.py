"""Nothing a user owns is destroyed, and damaged or blocked state gets a clear way on."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nemo_red.cli import main
from tests.journeys.test_user_journeys import SHORT, TINY
from tests.torchrun import REPO_ROOT
from tests.training.runs import env


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


@pytest.fixture
def sandbox(tiny_hf: Path, tmp_path: Path) -> Path:
    box = tmp_path / "sandbox"
    shutil.copytree(tiny_hf, box / "m")
    (box / "notes.txt").write_text("mine")
    return box


def test_convert_never_replaces_what_is_not_its_own(sandbox: Path, capsys, monkeypatch):
    before = _tree(sandbox)
    src = str(sandbox / "m")
    refusals = {
        str(sandbox): "contains the source",
        src: "is the source",
    }
    for dst, why in refusals.items():
        assert main(["convert", "hf-to-megatron", src, dst, "--overwrite"]) == 2
        assert why in capsys.readouterr().err
    monkeypatch.chdir(sandbox)
    assert main(["convert", "hf-to-megatron", "m", ".", "--overwrite"]) == 2
    assert "is the current directory" in capsys.readouterr().err
    assert _tree(sandbox) == before  # the source, the unrelated file: all there
    assert sorted(p.name for p in sandbox.iterdir()) == ["m", "notes.txt"]  # no temp dirs


def test_convert_replaces_only_a_checkpoint_of_its_kind(sandbox: Path, capsys):
    src, dst = str(sandbox / "m"), sandbox / "mg"
    assert main(["convert", "hf-to-megatron", src, str(dst)]) == 0
    assert main(["convert", "hf-to-megatron", src, str(dst)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    convert_again = ["convert", "hf-to-megatron", src, str(dst), "--dtype", "bfloat16"]
    assert main([*convert_again, "--overwrite"]) == 0
    assert json.loads((dst / "nemo_red_model.json").read_text())["dtype"] == "bfloat16"
    assert main(["convert", "megatron-to-hf", str(dst), str(sandbox), "--overwrite"]) == 2
    assert "contains the source" in capsys.readouterr().err
    mine = sandbox / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("mine")
    assert main(["convert", "megatron-to-hf", str(dst), str(mine), "--overwrite"]) == 2
    assert "refusing to replace it, even with --overwrite" in capsys.readouterr().err
    assert (mine / "thesis.tex").read_text() == "mine"
    out = sandbox / "hf_again"
    assert main(["convert", "megatron-to-hf", str(dst), str(out)]) == 0
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in out.iterdir())  # 0644, not 0600


def test_train_refuses_a_directory_it_did_not_write(sandbox: Path, capsys):
    before = _tree(sandbox)
    assert main(["train", "--config", str(TINY), f"run.output_dir={sandbox}", *SHORT]) == 2
    assert "holds files that nemo-red did not write" in capsys.readouterr().err
    assert _tree(sandbox) == before


def test_asynchronous_save_without_cuda_is_refused_before_anything_is_written(
    tmp_path: Path, capsys, monkeypatch
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = tmp_path / "run"
    args = ["train", "--config", str(TINY), f"run.output_dir={run}", "trainer.async_save=true"]
    assert main([*args, *SHORT]) == 2
    assert "trainer.async_save needs CUDA" in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.slow
def test_a_second_train_on_a_run_directory_fails_naming_the_first(tmp_path: Path, capsys):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "nemo_red.cli", "train", "--config", str(TINY)]
    first = subprocess.Popen(
        [*cmd, f"run.output_dir={run}", *SHORT, "trainer.total_steps=40"],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lock = run / "nemo_red.lock"
        deadline = time.time() + 120
        while not (lock.is_file() and lock.read_text().strip()):
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.time() < deadline
            time.sleep(0.05)
        assert main(["train", "--config", str(TINY), f"run.output_dir={run}", *SHORT]) == 2
        err = capsys.readouterr().err
        assert f"is in use: PID {first.pid} on host " in err
    finally:
        first.kill()
        first.wait()


# A run trained in process (seconds) for each test: the tests that use it are marked slow.
@pytest.fixture
def finished(tiny_hf: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """A run of 3 steps with a checkpoint after each (the last two kept), and its command."""
    run = tmp_path / "run"
    args = ["train", "--config", str(TINY), f"run.output_dir={run}", *SHORT]
    args += ["trainer.total_steps=3", f"model.path={tiny_hf}"]
    assert main(args) == 0
    return run, args


def _more_steps(args: list[str], steps: int) -> list[str]:
    return [*args, f"trainer.total_steps={steps}", "--allow-config-change"]


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_is_named_and_the_one_before_resumed(finished, capsys):
    run, args = finished
    shard = run / "checkpoints" / "step_000003" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:1000])  # truncated
    assert main(_more_steps(args, 4)) == 0
    err = capsys.readouterr().err
    assert f"checkpoint step_000003 is damaged: {shard}: 1000 bytes, " in err
    assert "resuming from step_000002, the newest intact checkpoint" in err
    assert f"resumed from {run / 'checkpoints' / 'step_000002'} (step 2)" in err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]  # 0: the evaluation before training


@pytest.mark.slow
def test_a_broken_meta_json_is_named(finished, capsys):
    run, args = finished
    meta = run / "checkpoints" / "step_000003" / "meta.json"
    meta.write_text('{"step": 3, ')
    assert main(_more_steps(args, 4)) == 0
    assert f"checkpoint step_000003 is damaged: {meta}: damaged (" in capsys.readouterr().err
    # the resumed run wrote step 3 again; with every checkpoint damaged: say so, no traceback
    for step in (run / "checkpoints").glob("step_*"):
        (step / "rng_rank00000.pt").write_bytes(b"")
    assert main(_more_steps(args, 5)) == 2
    err = capsys.readouterr().err
    assert "no intact checkpoint" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_loses_nothing(finished, capsys, monkeypatch):
    from nemo_red.training import checkpoint

    run, args = finished
    before = _tree(run / "checkpoints")

    def full(obj, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(checkpoint, "_save", full)
    assert main(_more_steps(args, 4)) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "step_000004.tmp/rng_rank00000.pt: No space left on device" in err
    assert "nothing written before was removed" in err
    after = _tree(run / "checkpoints")
    assert {k: v for k, v in after.items() if k in before} == before
    monkeypatch.undo()
    assert main(_more_steps(args, 4)) == 0  # once there is room: on from step 3


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_run_directory_is_one_line(finished, capsys):
    run, args = finished
    (run / "checkpoints").chmod(0o555)
    try:
        assert main(_more_steps(args, 4)) == 1
        assert "Permission denied" in capsys.readouterr().err
    finally:
        (run / "checkpoints").chmod(0o755)


def test_compare_refuses_an_output_directory_it_did_not_write(sandbox: Path, capsys):
    config = REPO_ROOT / "examples" / "conf" / "compare" / "compare_tiny.yaml"
    before = _tree(sandbox)
    assert main(["compare", "--config", str(config), f"output_dir={sandbox}"]) == 2
    assert "holds files that nemo-red did not write" in capsys.readouterr().err
    assert _tree(sandbox) == before
