"""The ``wandb`` logger: a run's metrics in Weights & Biases (``pip install 'nemo_red[wandb]'``).

Settings are ``trainer.wandb``; a null field leaves the choice to W&B's own environment
variable (``WANDB_PROJECT``, ``WANDB_ENTITY``, ``WANDB_NAME``, ``WANDB_RUN_GROUP``,
``WANDB_TAGS``, ``WANDB_MODE``; ``WANDB_MODE=offline`` writes the run under
``wandb/`` for ``wandb sync``), else to nemo_red's default (project ``nemo-red``, the run's
``run.name``). W&B's files go to the run directory's ``wandb/`` unless ``WANDB_DIR`` is
set. The run's id is kept in the run directory, so that a resumed run continues the same
W&B run (``resume="allow"``) from the first step it does not hold yet.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from nemo_red.monitoring.loggers import (
    LoggerStart,
    MetricsLogger,
    continued_run,
    numeric_scalars,
    register_logger,
)

DEFAULT_PROJECT = "nemo-red"


def _setting(value: Any, env: str, default: Any) -> Any:
    """``value`` when configured; else None when W&B reads ``env`` itself; else ``default``."""
    if value is not None:
        return value
    return None if os.environ.get(env) else default


class WandbLogger(MetricsLogger):
    """One W&B run per training run (see the module's docstring)."""

    def __init__(self, start: LoggerStart) -> None:
        import wandb

        settings = start.settings
        run_id, self.last_step = continued_run(start)
        self.run = wandb.init(
            project=_setting(settings.project, "WANDB_PROJECT", DEFAULT_PROJECT),
            entity=settings.entity,
            name=_setting(settings.name, "WANDB_NAME", start.run_name),
            group=settings.group,
            tags=list(settings.tags) or None,
            mode=settings.mode,
            dir=os.environ.get("WANDB_DIR") or str(start.run_dir),
            id=run_id,  # None: WANDB_RUN_ID, else a new id
            resume="allow",
            config=start.config,
        )

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        if step <= self.last_step:  # held by the run since before the checkpoint resumed
            return
        self.run.log(numeric_scalars(metrics), step=step)
        self.last_step = step

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run.id, "last_step": self.last_step}

    def close(self, complete: bool) -> None:
        self.run.finish(exit_code=0 if complete else 1)


@register_logger("wandb", modules=("wandb",), extra="wandb")
def _build(start: LoggerStart) -> MetricsLogger:
    return WandbLogger(start)
