"""Monitoring of training runs: a JSON-lines metrics log, TensorBoard scalars, PNG plots.

:class:`MetricsLog` is the record of a run (one line per step, truncated on resume so that
a resumed run's log equals an uninterrupted one's); :class:`TensorBoardWriter` writes the
same scalars for TensorBoard without depending on it; :func:`plot_run` and
:func:`plot_comparison` draw PNGs from metrics logs (they need matplotlib).
"""

from nemo_red.monitoring.metrics_log import MetricsLog, read_metrics
from nemo_red.monitoring.plots import plot_comparison, plot_run
from nemo_red.monitoring.tensorboard import TensorBoardWriter, read_scalars

__all__ = [
    "MetricsLog",
    "TensorBoardWriter",
    "plot_comparison",
    "plot_run",
    "read_metrics",
    "read_scalars",
]
