"""TensorBoard event files written by hand: framing, checksums, purge, and tensorboard's view."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest

from nemo_red.monitoring.tensorboard import (
    TensorBoardWriter,
    iter_records,
    masked_crc32c,
    read_scalars,
)


def test_masked_crc32c_known_value() -> None:
    crc = 0xE3069283  # CRC32C of b"123456789" (the standard check value)
    masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    assert masked_crc32c(b"123456789") == masked
    assert masked_crc32c(b"") == 0xA282EAD8


def test_round_trip(tmp_path: Path) -> None:
    with TensorBoardWriter(tmp_path) as writer:
        for step in range(5):
            written = writer.add_scalars(
                step, {"loss": step / 4, "acc/online": 0.5, "skip": None, "name": "x"}
            )
            assert written == 2
        writer.add_scalar("neg", -2.5, -3)
        writer.add_scalars(9, {"nan": math.nan, "huge": 1e300, "flag": True})
        with pytest.raises(TypeError, match="not a number"):
            writer.add_scalars(10, {"bad": [1.0]})
    assert writer.path.name.startswith("events.out.tfevents.")
    scalars = read_scalars(tmp_path)
    assert scalars["loss"] == [(s, s / 4) for s in range(5)]
    assert scalars["acc/online"] == [(s, 0.5) for s in range(5)]
    assert scalars["neg"] == [(-3, -2.5)]
    assert math.isnan(scalars["nan"][0][1])
    assert scalars["huge"] == [(9, math.inf)]
    assert scalars["flag"] == [(9, 1.0)]
    assert "skip" not in scalars
    with pytest.raises(ValueError, match="closed"):
        writer.add_scalar("x", 1.0, 0)


def _run_with_resume(log_dir: Path) -> None:
    with TensorBoardWriter(log_dir) as writer:
        for step in range(8):
            writer.add_scalars(step, {"x": float(step), "y": 1.0})
    with TensorBoardWriter(log_dir, purge_step=5) as writer:
        for step in range(5, 7):
            writer.add_scalars(step, {"x": 100.0 + step})


def test_purge_on_resume(tmp_path: Path) -> None:
    _run_with_resume(tmp_path)
    scalars = read_scalars(tmp_path)
    assert scalars["x"] == [
        (0, 0.0),
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
        (4, 4.0),
        (5, 105.0),
        (6, 106.0),
    ]
    assert [s for s, _ in scalars["y"]] == [0, 1, 2, 3, 4]


def test_truncated_and_corrupt_files(tmp_path: Path) -> None:
    with TensorBoardWriter(tmp_path) as writer:
        writer.add_scalars(0, {"x": 1.0})
        writer.add_scalars(1, {"x": 2.0})
    data = writer.path.read_bytes()
    writer.path.write_bytes(data[:-3])  # a writer that died mid-record
    assert read_scalars(writer.path) == {"x": [(0, 1.0)]}
    records = list(iter_records(writer.path))
    assert records[0].endswith(b"brain.Event:2")
    corrupt = bytearray(data)
    corrupt[-6] ^= 0xFF
    writer.path.write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="checksum"):
        read_scalars(writer.path)
    (length,) = struct.unpack("<Q", data[:8])
    assert length == len(records[0])


def test_tensorboard_reads_the_files(tmp_path: Path) -> None:
    # tensorboard is in the dev extra: this cross-check runs wherever the tests do.
    from tensorboard.backend.event_processing import event_accumulator as accumulator
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow as pywrap

    assert pywrap.masked_crc32c(b"some event bytes") == masked_crc32c(b"some event bytes")
    _run_with_resume(tmp_path)
    with TensorBoardWriter(tmp_path / "other") as writer:
        writer.add_scalars(3, {"z": 0.25})
    acc = accumulator.EventAccumulator(str(tmp_path))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["x", "y"]
    ours = read_scalars(tmp_path)
    for tag in ("x", "y"):
        assert [(e.step, e.value) for e in acc.Scalars(tag)] == ours[tag]
    other = accumulator.EventAccumulator(str(tmp_path / "other"))
    other.Reload()
    assert [(e.step, e.value) for e in other.Scalars("z")] == [(3, 0.25)]
