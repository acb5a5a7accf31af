"""A tiny run with every logger, stopped after a checkpoint and resumed: each logger holds
exactly one point per step and metric, with the values of ``metrics.jsonl``."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import pytest

from nemo_red.cli import main
from nemo_red.training.trainer import RedTrainer
from tests.monitoring.logger_readers import mlflow_points, tensorboard_scalars, wandb_history
from tests.training.runs import SHORT, TINY

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("wandb", "mlflow", "sqlalchemy")),
        reason="wandb or mlflow is not installed (the dev extra has both)",
    ),
]


def _numeric(row: dict) -> dict[str, float]:
    """The numbers of a ``metrics.jsonl`` row (which writes NaN as null)."""
    return {
        k: math.nan if v is None else v
        for k, v in row.items()
        if k not in ("step", "time") and (v is None or isinstance(v, int | float))
    }


def _same(a: float, b: float, rel: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=rel, abs=1e-12)


def test_a_stopped_and_resumed_run_logs_each_step_once_in_every_logger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a user's file store
    for name in ("WANDB_PROJECT", "WANDB_NAME", "WANDB_RUN_ID", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    run, uri = tmp_path / "run", f"file:{tmp_path / 'mlruns'}"
    args = [
        "train",
        "--config",
        str(TINY),
        f"run.output_dir={run}",
        *SHORT,
        "trainer.checkpoint_every=2",
        "trainer.loggers=[jsonl,tensorboard,wandb,mlflow]",
        "trainer.wandb.project=tiny",
        f"trainer.mlflow.tracking_uri={uri}",
    ]
    save = RedTrainer.save

    def stop_at_the_last_checkpoint(self: RedTrainer, step: int) -> None:
        if step == 3:  # step 3 is logged; the checkpoint of step 2 is the newest
            raise RuntimeError("stopped")
        save(self, step)

    monkeypatch.setattr(RedTrainer, "save", stop_at_the_last_checkpoint)
    with pytest.raises(RuntimeError, match="stopped"):
        main(args)
    monkeypatch.setattr(RedTrainer, "save", save)
    assert main(args) == 0  # resumes from step 2 and trains step 3 again

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    expected = {
        key: [(r["step"], value) for r in rows if key in (n := _numeric(r)) for value in [n[key]]]
        for key in {k for r in rows for k in _numeric(r)}
    }
    # values recomputed by the resumed run; timings differ between the two attempts
    stable = {k for k in expected if not k.startswith(("time/", "throughput/"))}

    # TensorBoard: the resumed writer purged the stopped run's step 3 (float32 values)
    scalars = tensorboard_scalars(run / "tensorboard")
    assert set(scalars) == {re.sub(r"[^-/\w.]", "_", k) for k in expected}
    for key, points in expected.items():
        held = scalars[re.sub(r"[^-/\w.]", "_", key)]
        assert [s for s, _ in held] == [s for s, _ in points], key
        assert all(_same(a, b, 1e-6) for (_, a), (_, b) in zip(held, points, strict=True)), key

    # W&B: one run over both processes, each step once (step 3 from the stopped process)
    runs = wandb_history(run)
    assert len(runs) == 1
    (history,) = runs.values()
    assert [h["_step"] for h in history] == [1, 2, 3]
    for h, row in zip(history, rows, strict=True):
        logged = {k: v for k, v in h.items() if not k.startswith("_")}
        assert set(logged) == set(_numeric(row))
        assert all(_same(float(logged[k]), _numeric(row)[k], 1e-9) for k in stable & set(logged))

    # MLflow: one run, each step once, FINISHED
    from mlflow.tracking import MlflowClient

    runs_ml = mlflow_points(uri)
    assert len(runs_ml) == 1
    ((run_id, points),) = runs_ml.items()
    assert set(points) == set(expected)  # the names are MLflow-safe already
    for key, want in expected.items():
        assert [s for s, _ in points[key]] == [s for s, _ in want], key
        pairs = zip(points[key], want, strict=True)
        assert key not in stable or all(_same(a, b, 1e-9) for (_, a), (_, b) in pairs), key
    assert MlflowClient(uri).get_run(run_id).info.status == "FINISHED"
