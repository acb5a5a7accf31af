"""The loggers a run writes its metrics to, one registry: ``trainer.loggers`` names them.

A logger is a :class:`MetricsLogger` built by a function registered with
:func:`register_logger`::

    @register_logger("my_logger", modules=("my_backend",), extra="my_logger")
    def build(start: LoggerStart) -> MetricsLogger:
        import my_backend  # the heavy import inside the builder

        return MyLogger(my_backend, start)

Built-in: ``jsonl`` (``metrics.jsonl``, the run's record, always on), ``tensorboard``
(``tensorboard/`` event files), ``wandb`` and ``mlflow`` (optional extras). The config
checks at load that every named logger is registered and that the packages in its
``modules`` are installed, naming the pip extra that installs them.

A resumed run writes no step twice in any logger: ``metrics.jsonl`` is cut back to the
checkpoint's step, TensorBoard purges the later points (``purge_step``), and W&B and
MLflow, which cannot delete points, continue the same run (its id is kept in the run
directory's ``loggers.json``) and skip the steps it already holds: the resumed run
computes those steps again with the same values.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_red.algorithms.registry import Registry

__all__ = [
    "LOGGERS",
    "STATE_FILE",
    "LoggerInfo",
    "LoggerStart",
    "MetricsLogger",
    "continued_run",
    "logger_info",
    "logger_names",
    "missing_modules",
    "numeric_scalars",
    "read_states",
    "register_logger",
    "write_states",
]

# the run directory's file with each logger's state (W&B and MLflow run ids, last steps)
STATE_FILE = "loggers.json"
# modules of this package that register the optional loggers (their backends are imported
# inside the builders)
_OPTIONAL_MODULES = ("nemo_red.monitoring.wandb_logger", "nemo_red.monitoring.mlflow_logger")


def numeric_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a step's metrics as floats: numpy/torch scalars are unwrapped, bools
    count as 0/1, None and strings are left out (they go to ``metrics.jsonl`` only).

    Raises:
        TypeError: When a value is neither a number, None nor a string.
    """
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if hasattr(value, "item") and callable(value.item):  # numpy and torch scalars
            value = value.item()
        if value is None or isinstance(value, str):
            continue
        if not isinstance(value, int | float):
            raise TypeError(f"metric {key!r} is a {type(value).__name__}, not a number")
        out[str(key)] = float(value)
    return out


@dataclass(frozen=True)
class LoggerStart:
    """What a logger is built from.

    Attributes:
        run_dir: the run directory.
        run_name: the run's name (``run.name``), the default name in W&B and MLflow.
        config: the run's whole config as plain dicts and lists (W&B's run config,
            MLflow's params).
        settings: the logger's own config section (``trainer.wandb``, ``trainer.mlflow``;
            None for a logger without one).
        resume_step: the step of the checkpoint the run resumes from; 0 for a new run.
        state: what the logger's :meth:`MetricsLogger.state_dict` returned when the run
            last wrote (None in a new run, or when the logger was not on then).
    """

    run_dir: Path
    run_name: str
    config: dict[str, Any] = field(repr=False)
    settings: Any = None
    resume_step: int = 0
    state: dict[str, Any] | None = None


class MetricsLogger(ABC):
    """A destination of a run's per-step metrics (used on rank 0 only)."""

    @abstractmethod
    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Records the metrics of ``step`` (use :func:`numeric_scalars` for numbers only)."""

    def state_dict(self) -> dict[str, Any]:
        """JSON state to keep in the run directory for a resumed run (none by default)."""
        return {}

    @abstractmethod
    def close(self, complete: bool) -> None:
        """Flushes and ends the log; ``complete``: the run trained all its steps."""


@dataclass(frozen=True)
class LoggerInfo:
    """A registered logger.

    Attributes:
        name: its name in ``trainer.loggers``.
        build: the builder.
        modules: the packages the builder imports, checked when a config is loaded.
        extra: the pip extra of nemo_red that installs them.
    """

    name: str
    build: Callable[[LoggerStart], MetricsLogger] = field(repr=False)
    modules: tuple[str, ...] = ()
    extra: str | None = None


LOGGERS: Registry[LoggerInfo] = Registry("logger")


def register_logger(
    name: str, *, modules: tuple[str, ...] = (), extra: str | None = None
) -> Callable[[Callable[[LoggerStart], MetricsLogger]], Callable[[LoggerStart], MetricsLogger]]:
    """Decorator registering a builder as the logger ``name`` (see :class:`LoggerInfo`)."""

    def decorator(
        build: Callable[[LoggerStart], MetricsLogger],
    ) -> Callable[[LoggerStart], MetricsLogger]:
        LOGGERS.add(name, LoggerInfo(name, build, modules, extra))
        return build

    return decorator


def _load_loggers() -> None:
    for module in _OPTIONAL_MODULES:
        importlib.import_module(module)


def logger_info(name: str) -> LoggerInfo:
    """The logger registered as ``name`` (``UnknownNameError`` lists the valid names)."""
    _load_loggers()
    return LOGGERS.get(name)


def logger_names() -> list[str]:
    """The registered loggers' names."""
    _load_loggers()
    return LOGGERS.names()


def missing_modules(name: str) -> list[str]:
    """The packages the logger ``name`` needs that are not installed."""
    return [m for m in logger_info(name).modules if importlib.util.find_spec(m) is None]


def read_states(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The loggers' states saved in ``run_dir`` (empty when there are none)."""
    path = run_dir / STATE_FILE
    if not path.is_file():
        return {}
    try:
        states = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err}); delete it to start new logger runs") from None
    if not isinstance(states, dict):
        raise ValueError(f"{path}: expected an object of logger states, got {type(states)}")
    return states


def write_states(run_dir: Path, states: Mapping[str, dict[str, Any]]) -> None:
    """Replaces ``run_dir``'s logger states (a temporary file, then a rename)."""
    path = run_dir / STATE_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(dict(states), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class _JsonlLogger(MetricsLogger):
    def __init__(self, start: LoggerStart) -> None:
        from nemo_red.monitoring.metrics_log import MetricsLog

        self.log = MetricsLog(start.run_dir / "metrics.jsonl", start.resume_step or None)

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        self.log.log(step, metrics)

    def close(self, complete: bool) -> None:
        self.log.close()


class _TensorBoardLogger(MetricsLogger):
    def __init__(self, start: LoggerStart) -> None:
        from nemo_red.monitoring.tensorboard import TensorBoardWriter

        # the points of steps after the checkpoint (and, in a new run, every point an
        # earlier attempt in this directory left) are dropped
        purge = start.resume_step + 1
        self.writer = TensorBoardWriter(start.run_dir / "tensorboard", purge_step=purge)

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        self.writer.add_scalars(step, metrics)

    def close(self, complete: bool) -> None:
        self.writer.close()


@register_logger("jsonl")
def _build_jsonl(start: LoggerStart) -> MetricsLogger:
    return _JsonlLogger(start)


@register_logger("tensorboard", modules=("tensorboardX",))
def _build_tensorboard(start: LoggerStart) -> MetricsLogger:
    return _TensorBoardLogger(start)


def continued_run(start: LoggerStart, **same: Any) -> tuple[str | None, int]:
    """For a logger of a tracking service that cannot delete points (W&B, MLflow): the id
    of the run to continue and the last step it holds, or ``(None, 0)`` for a new run.

    A run continues when the run resumes a checkpoint and the logger's saved state names a
    run whose ``same`` keys (e.g. the tracking URI) equal this start's.
    """
    state = start.state or {}
    if not start.resume_step or "run_id" not in state:
        return None, 0
    if any(state.get(key) != value for key, value in same.items()):
        return None, 0
    return str(state["run_id"]), int(state.get("last_step", 0))
