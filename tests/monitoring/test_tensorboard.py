"""TensorBoard event files through tensorboardX, read back by tensorboard's own reader."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from nemo_red.monitoring.tensorboard import TensorBoardWriter
from tests.monitoring.logger_readers import tensorboard_scalars


def test_round_trip(tmp_path: Path) -> None:
    with TensorBoardWriter(tmp_path) as writer:
        for step in range(5):
            written = writer.add_scalars(
                step, {"loss": step / 4, "acc/online": 0.5, "skip": None, "name": "x"}
            )
            assert written == 2
        writer.add_scalars(9, {"nan": math.nan, "huge": 1e300, "flag": True})
        with pytest.raises(TypeError, match="not a number"):
            writer.add_scalars(10, {"bad": [1.0]})
    scalars = tensorboard_scalars(tmp_path)
    assert scalars["loss"] == [(s, s / 4) for s in range(5)]
    assert scalars["acc/online"] == [(s, 0.5) for s in range(5)]
    assert math.isnan(scalars["nan"][0][1])
    assert scalars["huge"] == [(9, math.inf)]  # float32
    assert scalars["flag"] == [(9, 1.0)]
    assert "skip" not in scalars
    assert "name" not in scalars
    with pytest.raises(ValueError, match="closed"):
        writer.add_scalars(11, {"x": 1.0})


def test_each_step_is_on_disk_before_the_writer_closes(tmp_path: Path) -> None:
    # a killed run keeps every step it wrote
    writer = TensorBoardWriter(tmp_path)
    writer.add_scalars(1, {"x": 0.25})
    assert tensorboard_scalars(tmp_path) == {"x": [(1, 0.25)]}
    writer.close()


def test_purge_on_resume_in_the_same_second(tmp_path: Path) -> None:
    # the resumed writer starts within the same second: its file must not replace the first
    with TensorBoardWriter(tmp_path) as writer:
        for step in range(8):
            writer.add_scalars(step, {"x": float(step), "y": 1.0})
    with TensorBoardWriter(tmp_path, purge_step=5) as writer:
        for step in range(5, 7):
            writer.add_scalars(step, {"x": 100.0 + step})
    assert len(list(tmp_path.iterdir())) == 2
    scalars = tensorboard_scalars(tmp_path)
    assert scalars["x"] == [(s, float(s)) for s in range(5)] + [(5, 105.0), (6, 106.0)]
    assert [s for s, _ in scalars["y"]] == [0, 1, 2, 3, 4]
