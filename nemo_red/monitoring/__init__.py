"""Monitoring of training runs: the loggers of a run's metrics, PNG plots.

:class:`MetricsLog` is the record of a run (``metrics.jsonl``, one line per step, truncated
on resume so that a resumed run's log equals an uninterrupted one's); :class:`TensorBoardWriter`
writes the same scalars for TensorBoard; ``loggers.py`` holds the registry of the loggers a
run writes to (``trainer.loggers``: jsonl, tensorboard, wandb, mlflow) and
:func:`register_logger` adds one; :func:`plot_run` and :func:`plot_comparison` draw PNGs from
metrics logs (they need matplotlib).
"""

from nemo_red.monitoring.loggers import MetricsLogger, register_logger
from nemo_red.monitoring.metrics_log import MetricsLog, read_metrics
from nemo_red.monitoring.plots import plot_comparison, plot_run
from nemo_red.monitoring.tensorboard import TensorBoardWriter

__all__ = [
    "MetricsLog",
    "MetricsLogger",
    "TensorBoardWriter",
    "plot_comparison",
    "plot_run",
    "read_metrics",
    "register_logger",
]
