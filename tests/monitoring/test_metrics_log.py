"""The JSON-lines metrics log: format, non-finite values, and exact resumption."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from nemo_red.monitoring import MetricsLog, read_metrics


def _metrics(step: int) -> dict[str, float]:
    return {"loss": 1.0 / (step + 1), "reward/online_accuracy": step / 10}


def _without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "time"} for row in rows]


def test_lines_and_values(tmp_path: Path) -> None:
    path = tmp_path / "run" / "metrics.jsonl"
    with MetricsLog(path) as log:
        log.log(0, {"a": 1.5, "nan": math.nan, "inf": -math.inf, "t": np.float32(2.0)})
        log.log(1, {"n": 3, "s": "text", "none": None}, wall_time=12.5)
        # Flushed per line: readable while the log is open.
        assert len(read_metrics(path)) == 2
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    assert first["step"] == 0
    assert isinstance(first["time"], float)
    assert first["nan"] is None
    assert first["inf"] is None
    assert first["t"] == 2.0
    assert json.loads(lines[1]) == {"step": 1, "time": 12.5, "n": 3, "s": "text", "none": None}
    assert "NaN" not in path.read_text()


def test_reserved_names_and_closed(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "m.jsonl")
    with pytest.raises(ValueError, match="reserved"):
        log.log(0, {"step": 1.0})
    log.close()
    log.close()
    with pytest.raises(ValueError, match="closed"):
        log.log(0, {})


def test_new_run_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 0, "time": 0.0}\n')
    MetricsLog(path).close()
    assert read_metrics(path) == []


def test_resumed_log_equals_uninterrupted(tmp_path: Path) -> None:
    straight = tmp_path / "straight.jsonl"
    with MetricsLog(straight) as log:
        for step in range(10):
            log.log(step, _metrics(step))

    resumed = tmp_path / "resumed.jsonl"
    with MetricsLog(resumed) as log:  # checkpoint after step 4; crash during step 7
        for step in range(7):
            log.log(step, _metrics(step))
    with resumed.open("a") as f:
        f.write('{"step": 7, "lo')
    assert [row["step"] for row in read_metrics(resumed)] == list(range(7))
    before = resumed.read_text().splitlines()
    with MetricsLog(resumed, resume_step=4) as log:
        assert [row["step"] for row in read_metrics(resumed)] == list(range(5))
        for step in range(5, 10):
            log.log(step, _metrics(step))
    assert _without_time(read_metrics(resumed)) == _without_time(read_metrics(straight))
    # Kept lines are kept byte for byte.
    assert resumed.read_text().splitlines()[:5] == before[:5]


def test_truncate_after_while_open(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    with MetricsLog(path) as log:
        for step in range(6):
            log.log(step, {"x": step})
        assert log.truncate_after(2) == 3
        log.log(3, {"x": 30})
    assert [(row["step"], row["x"]) for row in read_metrics(path)] == [
        (0, 0),
        (1, 1),
        (2, 2),
        (3, 30),
    ]
    assert not path.with_name("m.jsonl.tmp").exists()
    MetricsLog(tmp_path / "absent.jsonl", resume_step=3).close()  # nothing to resume: empty
    assert read_metrics(tmp_path / "absent.jsonl") == []


def test_corrupt_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 0, "time": 0.0}\nnot json\n{"step": 1, "time": 0.0}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl:2"):
        read_metrics(path)
