"""What a training run writes about itself while it trains: the metrics log, TensorBoard
scalars, the progress bar, and the plots at the end."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from nemo_red.monitoring import names


class RunLog:
    """``metrics.jsonl`` + TensorBoard + plots of a run directory, on rank 0 (no-ops on the
    other ranks, ``active=False``).

    Args:
        run_dir: the run directory.
        tensorboard: also write ``tensorboard/``.
        active: whether this rank writes.
        resume_step: the step the run resumes from (the log is cut back to it).
    """

    def __init__(self, run_dir: Path, tensorboard: bool, active: bool, resume_step: int) -> None:
        self.run_dir = run_dir
        self.active = active
        if not active:
            return
        from nemo_red.monitoring.metrics_log import MetricsLog

        self.jsonl = MetricsLog(run_dir / "metrics.jsonl", resume_step=resume_step or None)
        self.tb = None
        if tensorboard:
            from nemo_red.monitoring.tensorboard import TensorBoardWriter

            self.tb = TensorBoardWriter(run_dir / "tensorboard")

    def write(self, step: int, metrics: dict[str, float]) -> None:
        """Records the metrics of ``step``."""
        if not self.active:
            return
        self.jsonl.log(step, metrics)
        if self.tb is not None:
            self.tb.add_scalars(step, metrics)

    def plot(self) -> list[Path]:
        """Draws ``plots/`` from the metrics log (needs matplotlib)."""
        from nemo_red.monitoring.plots import plot_run

        return (
            plot_run(self.run_dir / "metrics.jsonl", self.run_dir / "plots") if self.active else []
        )

    def close(self) -> None:
        """Flushes and closes the files."""
        if not self.active:
            return
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()


# accuracies in percent, as in every table a person reads (files keep fractions)
PERCENT_FIELDS = {names.ONLINE_ACCURACY: "acc%", names.HELD_OUT_ACCURACY: "eval%"}
PLAIN_FIELDS = {names.W: "w", names.H_RL: "H_rl", names.H_SFT: "H_sft", names.LOSS: "loss"}


def progress_bar(enabled: bool, start: int, total: int) -> Callable[[dict[str, float]], None]:
    """A function to call once per step with its metrics: advances a tqdm bar on stderr
    that shows the step's accuracy, w, entropies and loss (does nothing when disabled)."""
    if not enabled:
        return lambda metrics: None
    from tqdm import tqdm

    bar = tqdm(total=total, initial=start, desc="nemo-red", dynamic_ncols=True, file=sys.stderr)

    def update(metrics: dict[str, float]) -> None:
        have = {k for k, v in metrics.items() if isinstance(v, float)}
        shown = {s: f"{100 * metrics[k]:.1f}" for k, s in PERCENT_FIELDS.items() if k in have}
        shown |= {s: f"{metrics[k]:.3g}" for k, s in PLAIN_FIELDS.items() if k in have}
        bar.set_postfix(shown, refresh=False)
        bar.update(1)

    return update
