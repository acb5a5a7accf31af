"""What a training run writes about itself while it trains: its loggers (``metrics.jsonl``,
TensorBoard, W&B, MLflow; see ``loggers.py``), the progress bar, and the plots at the end."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nemo_red.monitoring import names
from nemo_red.monitoring.loggers import (
    LoggerStart,
    MetricsLogger,
    logger_info,
    read_states,
    write_states,
)


class RunLog:
    """The loggers of a run directory, on rank 0 (no-ops on the other ranks, ``active=False``).

    Args:
        run_dir: the run directory.
        loggers: the loggers' names (``trainer.loggers``).
        active: whether this rank writes.
        resume_step: the step of the checkpoint the run resumes from (0 for a new run).
        run_name: the run's name (``run.name``).
        config: the run's whole config as plain dicts and lists.
        settings: each logger's config section by name (``trainer.wandb``, ...).
    """

    def __init__(
        self,
        run_dir: Path,
        loggers: Sequence[str],
        active: bool,
        resume_step: int,
        run_name: str = "run",
        config: dict[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.active = active
        self.loggers: dict[str, MetricsLogger] = {}
        if not active:
            return
        # what the directory holds; a new run starts new W&B and MLflow runs
        self._states: dict[str, dict[str, Any]] = read_states(run_dir)
        states = self._states if resume_step else {}
        try:
            for name in loggers:
                start = LoggerStart(
                    run_dir,
                    run_name,
                    config or {},
                    (settings or {}).get(name),
                    resume_step,
                    states.get(name),
                )
                self.loggers[name] = logger_info(name).build(start)
        except BaseException:
            self.close(complete=False)
            raise
        self._save_states()

    def _save_states(self) -> None:
        """Keeps the loggers' states (W&B and MLflow run ids, last steps) for a resume."""
        states = {n: s for n, logger in self.loggers.items() if (s := logger.state_dict())}
        if states != self._states:
            write_states(self.run_dir, states)
            self._states = states

    def write(self, step: int, metrics: dict[str, float]) -> None:
        """Records the metrics of ``step`` in every logger."""
        if not self.active:
            return
        for logger in self.loggers.values():
            logger.write(step, metrics)
        self._save_states()

    def plot(self) -> list[Path]:
        """Draws ``plots/`` from the metrics log (needs matplotlib)."""
        from nemo_red.monitoring.plots import plot_run

        return (
            plot_run(self.run_dir / "metrics.jsonl", self.run_dir / "plots") if self.active else []
        )

    def close(self, complete: bool) -> None:
        """Flushes and ends every logger; ``complete``: the run trained all its steps."""
        while self.loggers:
            _, logger = self.loggers.popitem()
            logger.close(complete)


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
