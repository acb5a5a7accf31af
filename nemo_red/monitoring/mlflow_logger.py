"""The ``mlflow`` logger: a run's metrics in MLflow (``pip install 'nemo_red[mlflow]'``).

Settings are ``trainer.mlflow``. The tracking URI is ``trainer.mlflow.tracking_uri``, else
``MLFLOW_TRACKING_URI``, else a SQLite store in the run directory
(``sqlite:///<run dir>/mlflow.db``; ``mlflow ui --backend-store-uri`` shows it). The
experiment is ``trainer.mlflow.experiment``, else ``MLFLOW_EXPERIMENT_NAME``, else
``nemo-red``; the run is named ``trainer.mlflow.run_name`` or ``run.name``. A new MLflow run
gets the config as params (dotted keys); metric and param names are MLflow-safe (characters
MLflow refuses, such as ``@``, become ``_``). The run's id is kept in the run directory: a
resumed run continues the same MLflow run, from the first step it does not hold yet, and
marks it FINISHED (or FAILED, when training stopped early) at the end.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

from nemo_red.monitoring.loggers import (
    LoggerStart,
    MetricsLogger,
    continued_run,
    numeric_scalars,
    register_logger,
)

DEFAULT_EXPERIMENT = "nemo-red"
# MLflow's limit on a param's value
_MAX_PARAM_LENGTH = 6000


def mlflow_name(key: str) -> str:
    """``key`` with the characters MLflow refuses in metric and param names replaced by
    ``_`` (it allows letters, digits, ``_ - . /`` and spaces; ``:`` only off Windows)."""
    return re.sub(r"[^\w\-. /]", "_", key)


def _params(node: Any, prefix: str = "") -> dict[str, str]:
    """The config's leaves as MLflow params: dotted keys, values as text."""
    if isinstance(node, dict) and node:
        out: dict[str, str] = {}
        for key, value in node.items():
            out |= _params(value, f"{prefix}{key}.")
        return out
    return {mlflow_name(prefix[:-1]): str(node)[:_MAX_PARAM_LENGTH]}


def tracking_uri(start: LoggerStart) -> str:
    """The tracking URI of a run (see the module's docstring)."""
    configured = start.settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    return configured or f"sqlite:///{(start.run_dir / 'mlflow.db').resolve()}"


class MlflowLogger(MetricsLogger):
    """One MLflow run per training run (see the module's docstring)."""

    def __init__(self, start: LoggerStart) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(start)
        self.client = MlflowClient(tracking_uri=self.uri)
        run_id, self.last_step = continued_run(start, tracking_uri=self.uri)
        if run_id is not None:
            try:
                self.client.update_run(run_id, status="RUNNING")
            except MlflowException as err:
                print(
                    f"[nemo-red] MLflow run {run_id} not found at {self.uri} ({err}); "
                    "starting a new run",
                    file=sys.stderr,
                )
                run_id, self.last_step = None, 0
        if run_id is None:
            settings = start.settings
            name = settings.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME")
            name = name or DEFAULT_EXPERIMENT
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = (
                experiment.experiment_id if experiment else self.client.create_experiment(name)
            )
            run = self.client.create_run(
                experiment_id,
                run_name=settings.run_name or start.run_name,
                tags={"nemo_red.run_dir": str(start.run_dir.resolve())},
            )
            run_id = run.info.run_id
            params = [Param(k, v) for k, v in _params(start.config).items()]
            self.client.log_batch(run_id, params=params)
        self.run_id: str = run_id

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        if step <= self.last_step:  # held by the run since before the checkpoint resumed
            return
        now = int(time.time() * 1000)
        points = [Metric(mlflow_name(k), v, now, step) for k, v in numeric_scalars(metrics).items()]
        self.client.log_batch(self.run_id, metrics=points)
        self.last_step = step

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "tracking_uri": self.uri, "last_step": self.last_step}

    def close(self, complete: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if complete else "FAILED")


@register_logger("mlflow", modules=("mlflow", "sqlalchemy", "alembic"), extra="mlflow")
def _build(start: LoggerStart) -> MetricsLogger:
    return MlflowLogger(start)
