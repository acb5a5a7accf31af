"""The logger registry and each logger on its own: config checks, and a stopped-then-resumed
run stores one point per step in TensorBoard, W&B (offline) and MLflow (SQLite store)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from nemo_red.monitoring.loggers import STATE_FILE, logger_names, numeric_scalars
from nemo_red.monitoring.run_log import RunLog
from nemo_red.training.config import ConfigError, MlflowSection, WandbSection, load_config
from nemo_red.training.run_dir import config_changes, flatten_config
from tests.monitoring.logger_readers import (
    mlflow_points,
    tensorboard_scalars,
    wandb_history,
    wandb_runs,
)
from tests.training.runs import TINY

needs_wandb = pytest.mark.skipif(
    importlib.util.find_spec("wandb") is None,
    reason="wandb is not installed (pip install 'nemo_red[wandb]'; the dev extra has it)",
)
needs_mlflow = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("mlflow", "sqlalchemy", "alembic")),
    reason="mlflow is not installed (pip install 'nemo_red[mlflow]'; the dev extra has it)",
)
CONFIG = {"trainer": {"optim": {"lr": 2e-6}, "loggers": ["jsonl"]}, "eval/pass@2": 1}


@pytest.fixture
def offline_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WANDB_PROJECT", "WANDB_NAME", "WANDB_RUN_ID", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")


def _steps(run_dir: Path, loggers: list[str], resume: int, steps: range, complete: bool) -> None:
    settings = {"wandb": WandbSection(), "mlflow": MlflowSection()}
    log = RunLog(run_dir, loggers, True, resume, "tiny", CONFIG, settings)
    for step in steps:
        log.write(step, {"loss": step / 10, "eval/pass@2": 0.5, "note": "x", "gone": None})
    log.close(complete)


def _stopped_and_resumed(run_dir: Path, loggers: list[str]) -> None:
    """Steps 1-4 logged, a checkpoint at 2, the run stops; resumed, it logs 3-5 again."""
    _steps(run_dir, loggers, 0, range(1, 5), complete=False)
    _steps(run_dir, loggers, 2, range(3, 6), complete=True)


def test_numeric_scalars_unwrap_and_skip() -> None:
    torch = pytest.importorskip("torch")
    assert numeric_scalars({"a": torch.tensor(0.5), "b": True, "c": None, "d": "x", "e": 2}) == {
        "a": 0.5,
        "b": 1.0,
        "e": 2.0,
    }
    with pytest.raises(TypeError, match="'f' is a list"):
        numeric_scalars({"f": [1]})


def test_the_registry_and_the_config_name_the_loggers() -> None:
    assert logger_names() == ["jsonl", "mlflow", "tensorboard", "wandb"]
    assert load_config(TINY).trainer.loggers == ["jsonl", "tensorboard"]
    with pytest.raises(ConfigError) as err:
        load_config(TINY, ["trainer.loggers=[jsonl,neptune,comet]"])
    assert str(err.value) == (
        "trainer.loggers: unknown loggers ['neptune', 'comet']; "
        "valid names: ['jsonl', 'mlflow', 'tensorboard', 'wandb']"
    )
    with pytest.raises(ConfigError, match="a list with jsonl"):
        load_config(TINY, ["trainer.loggers=[tensorboard]"])
    with pytest.raises(ConfigError, match=r"trainer\.wandb\.mode must be one of"):
        load_config(TINY, ["trainer.wandb.mode=cloud"])


@pytest.mark.parametrize(("name", "module"), [("wandb", "wandb"), ("mlflow", "sqlalchemy")])
def test_a_logger_whose_package_is_missing_names_its_extra(
    monkeypatch: pytest.MonkeyPatch, name: str, module: str
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda m, *a: None if m == module else find_spec(m, *a)
    )
    overrides = [f"trainer.loggers=[jsonl,{name}]"]
    with pytest.raises(ConfigError) as err:
        load_config(TINY, overrides)
    assert str(err.value) == (
        f"trainer.loggers: the {name} logger needs {module}, which is not installed: "
        f"pip install 'nemo_red[{name}]'"
    )
    # reading such a run's config for another purpose (nemo-red eval RUN_DIR) needs neither
    assert load_config(TINY, overrides, for_training=False).trainer.loggers == ["jsonl", name]


@pytest.mark.parametrize(
    ("overrides", "loggers"),
    [
        (["trainer.tensorboard=false"], ["jsonl"]),
        (["trainer.tensorboard=true"], ["jsonl", "tensorboard"]),
        (["trainer.loggers=[jsonl]", "trainer.tensorboard=true"], ["jsonl", "tensorboard"]),
        (["trainer.loggers=[jsonl,tensorboard]", "trainer.tensorboard=false"], ["jsonl"]),
    ],
)
def test_the_former_tensorboard_switch_still_reads(overrides, loggers, tmp_path: Path) -> None:
    assert load_config(TINY, overrides).trainer.loggers == loggers
    # a YAML layer on top of another (the run directory's config.yaml of an older version)
    base = tmp_path / "base.yaml"
    base.write_text(f"defaults_from: {TINY}\ntrainer:\n  loggers: [jsonl, tensorboard]\n")
    top = tmp_path / "top.yaml"
    top.write_text("defaults_from: base.yaml\ntrainer:\n  tensorboard: false\n")
    assert load_config(top).trainer.loggers == ["jsonl"]


def test_changing_loggers_on_resume_is_no_config_change() -> None:
    old = flatten_config(load_config(TINY))
    old["trainer.tensorboard"] = True  # the config.yaml of an earlier version
    del old["trainer.loggers"]
    new = flatten_config(load_config(TINY, ["trainer.loggers=[jsonl,wandb]"]))
    assert config_changes(old, new) == {}
    lr = flatten_config(load_config(TINY, ["trainer.optim.lr=1e-3"]))
    assert list(config_changes(old, lr)) == ["trainer.optim.lr"]


def test_jsonl_and_tensorboard_hold_one_point_per_step_after_a_resume(tmp_path: Path) -> None:
    _stopped_and_resumed(tmp_path, ["jsonl", "tensorboard"])
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    assert sorted(scalars) == ["eval/pass_2", "loss"]  # tensorboardX cleans tags as TF does
    assert scalars["loss"] == [(s, pytest.approx(s / 10)) for s in range(1, 6)]
    assert not (tmp_path / STATE_FILE).exists()  # nothing to keep for these two


@needs_wandb
@pytest.mark.slow
@pytest.mark.usefixtures("offline_wandb")
def test_wandb_continues_its_run_and_skips_the_steps_it_holds(tmp_path: Path) -> None:
    _stopped_and_resumed(tmp_path, ["jsonl", "wandb"])
    runs = wandb_history(tmp_path)
    assert len(runs) == 1  # one run id over both offline directories
    ((run_id, rows),) = runs.items()
    assert len(list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))) == 2
    assert [r["_step"] for r in rows] == [1, 2, 3, 4, 5]
    # no WANDB_PROJECT or WANDB_NAME: nemo_red's defaults, the project and run.name
    assert wandb_runs(tmp_path) == [(run_id, "nemo-red", "tiny")] * 2
    assert [r["loss"] for r in rows] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert all(r["eval/pass@2"] == 0.5 and "note" not in r for r in rows)
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state == {"wandb": {"run_id": run_id, "last_step": 5}}
    # a new run in the same directory (no checkpoint to resume) is a new W&B run
    _steps(tmp_path, ["jsonl", "wandb"], 0, range(1, 2), complete=True)
    assert len(wandb_history(tmp_path)) == 2


@needs_mlflow
@pytest.mark.slow
def test_mlflow_continues_its_run_and_skips_the_steps_it_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    _steps(tmp_path, ["jsonl", "mlflow"], 0, range(1, 5), complete=False)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("nemo-red")  # no MLFLOW_EXPERIMENT_NAME
    (stopped,) = client.search_runs([experiment.experiment_id])
    assert stopped.info.status == "FAILED"
    _steps(tmp_path, ["jsonl", "mlflow"], 2, range(3, 6), complete=True)
    runs = mlflow_points(uri)
    assert len(runs) == 1
    ((run_id, points),) = runs.items()
    assert points["loss"] == [(s, pytest.approx(s / 10)) for s in range(1, 6)]
    assert points["eval/pass_2"] == [(s, 0.5) for s in range(1, 6)]  # '@' is not MLflow's
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tiny"
    assert run.data.params["trainer.optim.lr"] == "2e-06"
    assert run.data.params["eval/pass_2"] == "1"
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state == {"mlflow": {"run_id": run_id, "tracking_uri": uri, "last_step": 5}}
