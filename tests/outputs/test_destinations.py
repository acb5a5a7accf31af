"""Directories a command writes: what is refused, what is replaced, what is continued."""

import json
import os
import stat

import pytest

from nemo_red.outputs import (
    DestinationError,
    check_new_destination,
    claim_directory,
    is_kind,
    publish,
    staging_dir,
)
from nemo_red.outputs.destinations import MARKER


def _hf_dir(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"x")
    return path


def test_new_or_empty_destinations_are_accepted(tmp_path):
    check_new_destination(tmp_path / "new", "hf")
    (tmp_path / "empty").mkdir()
    check_new_destination(tmp_path / "empty", "hf")


def test_a_non_empty_destination_needs_overwrite_and_the_right_kind(tmp_path):
    hf = _hf_dir(tmp_path / "hf")
    with pytest.raises(DestinationError, match=r"exists and is not empty .*--overwrite"):
        check_new_destination(hf, "hf")
    check_new_destination(hf, "hf", overwrite=True)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("mine")
    with pytest.raises(DestinationError, match=r"is not a Hugging Face checkpoint .*thesis.tex"):
        check_new_destination(other, "hf", overwrite=True)
    with pytest.raises(DestinationError, match="not a nemo_red megatron checkpoint"):
        check_new_destination(hf, "megatron", overwrite=True)


def test_the_source_the_current_directory_and_its_parents_are_refused(tmp_path, monkeypatch):
    src = _hf_dir(tmp_path / "sandbox" / "m")
    with pytest.raises(DestinationError, match="is the source"):
        check_new_destination(src, "megatron", [src], overwrite=True)
    with pytest.raises(DestinationError, match="contains the source"):
        check_new_destination(tmp_path / "sandbox", "megatron", [src], overwrite=True)
    monkeypatch.chdir(src)
    for where in (".", "..", str(tmp_path)):
        with pytest.raises(DestinationError, match="current directory or one of its parents"):
            check_new_destination(type(tmp_path)(where), "megatron", overwrite=True)
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(DestinationError, match="not a directory"):
        check_new_destination(file, "hf")


def test_publish_replaces_only_after_the_new_directory_is_complete(tmp_path):
    dst = _hf_dir(tmp_path / "hf")
    tmp = staging_dir(dst)
    assert tmp.parent == tmp_path
    assert tmp.name == ".hf.incomplete"
    assert not any(tmp.iterdir())
    (tmp / "config.json").write_text('{"new": 1}')
    os.chmod(tmp / "config.json", 0o600)  # as safetensors writes its files
    publish(tmp, dst)
    assert json.loads((dst / "config.json").read_text()) == {"new": 1}
    assert not (dst / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no staging left behind
    mode = stat.S_IMODE((dst / "config.json").stat().st_mode)
    assert mode == 0o666 & ~_umask()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_staging_directory_left_by_a_kill_is_cleared(tmp_path):
    left = tmp_path / ".hf.incomplete"
    left.mkdir()
    (left / "half.bin").write_bytes(b"x")
    assert not any(staging_dir(tmp_path / "hf").iterdir())


def test_claim_creates_marks_continues_and_refuses_foreign_directories(tmp_path):
    run = tmp_path / "run"
    assert claim_directory(run, "run") is True
    assert json.loads((run / MARKER).read_text())["kind"] == "run"
    (run / "metrics.jsonl").write_text("")
    assert claim_directory(run, "run") is False
    assert is_kind(run, "run")
    assert not is_kind(run, "eval")
    with pytest.raises(DestinationError, match="is not a nemo-red eval output directory"):
        claim_directory(run, "eval")
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("mine")
    with pytest.raises(DestinationError, match=r"holds files that nemo-red did not write"):
        claim_directory(home, "run")
    assert (home / "thesis.tex").read_text() == "mine"
    assert not (home / MARKER).exists()


def test_run_directories_written_before_the_marker_are_recognised(tmp_path):
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    (old / "config.yaml").write_text("run: {}\n")
    assert claim_directory(old, "run") is False
