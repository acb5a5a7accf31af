"""``RedTrainer``: claims a run directory, assembles the run (``assembly.py``), drives the
loop (``loop.py``), evaluates, checkpoints, resumes and exports.

A run directory holds ``config.yaml`` and ``config_history.jsonl`` (see ``run_dir.py``),
``metrics.jsonl``, ``tensorboard/`` (and the other loggers' files, see
``monitoring/loggers.py``), ``checkpoints/`` (see ``checkpoint.py``), ``hf/``
(the final policy as a Hugging Face checkpoint with its tokenizer) and ``plots/``.
Starting a run whose directory has a checkpoint resumes from the newest intact one, if
the config is the one it was started with (or ``allow_config_change``); the metrics log
is cut back to the checkpoint's step, so a killed-and-resumed run logs what an
uninterrupted one would. A run whose checkpoint is at its last step is complete: starting
it again builds nothing and says so.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch.distributed as dist

from nemo_red.monitoring import names
from nemo_red.monitoring.run_log import RunLog, progress_bar
from nemo_red.training import checkpoint
from nemo_red.training.assembly import RunParts, assemble_run, total_steps
from nemo_red.training.config import TrainConfig
from nemo_red.training.evaluation import evaluate_run
from nemo_red.training.loop import StepRunner, stage_at, stage_ends, stage_starts
from nemo_red.training.parallel import (
    ParallelLayout,
    init_distributed,
    on_rank0,
    shutdown_distributed,
)
from nemo_red.training.run_dir import RunDirectory, plain_config
from nemo_red.training.setup import export_policy


class RedTrainer:
    """Trains the policy of ``config`` (call :meth:`train`); collective over all ranks.

    Args:
        config: The run's config.
        allow_config_change: Resume a checkpoint even though the config differs from the
            one the run was started with (see ``run_dir.py`` for what may change).
    """

    def __init__(self, config: TrainConfig, allow_config_change: bool = False) -> None:
        self.config = config
        self.run_dir = Path(config.run.output_dir)
        init_distributed(ParallelLayout.of(config.parallel), config.run.seed)
        self.rank0 = dist.get_rank() == 0
        self.directory = RunDirectory(self.run_dir)
        self.finished = False  # the run trained its last step and exported the policy
        try:
            self._start(allow_config_change)
        except BaseException:
            self.directory.close()
            shutdown_distributed()
            raise

    def _start(self, allow_config_change: bool) -> None:
        """Claims the run directory, finds the checkpoint to resume, builds the run."""
        config = self.config
        checkpoints = self.run_dir / "checkpoints"
        self.writer = checkpoint.CheckpointWriter(
            checkpoints, config.trainer.keep_checkpoints, config.trainer.async_save
        )

        def claim() -> dict[str, Any]:
            self.directory.open()
            resuming = bool(checkpoint.candidates(checkpoints))
            return self.directory.check_config(config, resuming, allow_config_change)

        changes = on_rank0(claim)
        latest = checkpoint.find_resumable(checkpoints)
        self.complete_at = None if latest is None else self._completed_step(latest)
        if self.complete_at is not None:
            return
        # a checkpoint loaded after the build replaces the weights: do not read them twice
        self.parts: RunParts = assemble_run(
            config,
            self.run_dir,
            read_weights=latest is None and config.model.init_checkpoint is None,
            fresh=latest is None,
            verbose=self.rank0,
        )
        self.runner = StepRunner(config, self.parts)
        self.start_step = self._resume(latest)
        on_rank0(lambda: self.directory.record_start(config, self.start_step, changes))
        trainer = config.trainer
        try:
            self.log = RunLog(
                self.run_dir,
                trainer.loggers,
                self.rank0,
                resume_step=self.start_step,
                run_name=config.run.name,
                config=plain_config(config) if self.rank0 else {},
                settings={name: getattr(trainer, name, None) for name in trainer.loggers},
            )
        except BaseException:
            self.parts.close()
            raise

    def _completed_step(self, latest: Path) -> int | None:
        """The step of ``latest`` when it ends the run (None while steps remain)."""
        step = int(checkpoint.read_meta(latest)["step"])
        return step if step >= self.total_steps else None

    @property
    def complete(self) -> bool:
        """Whether the run had already finished when this start found it."""
        return self.complete_at is not None

    @property
    def total_steps(self) -> int:
        """The run's length in steps."""
        return total_steps(self.config)

    def _resume(self, latest: Path | None) -> int:
        """Restores ``latest``, this run's newest checkpoint (or ``model.init_checkpoint``
        in a new run) and refits the rollout engine, which was built before; returns the
        step."""
        step = 0
        if latest is not None:
            meta = checkpoint.load_checkpoint(latest, self.parts.actor, self.parts.regulator)
            self.parts.sampler.load_state_dict(meta["data"])
            self.runner.load_state_dict(meta["extra"])
            step = int(meta["step"])
            message = f"resumed from {latest} (step {step})"
        elif self.config.model.init_checkpoint is not None:
            init = Path(self.config.model.init_checkpoint)
            read = checkpoint.load_initial_state(init, self.parts.actor)
            message = f"weights and optimizer moments from {read}"
        else:
            return 0
        self.parts.engine.update_weights(self.parts.actor)
        if self.rank0:
            print(f"[nemo-red] {message}", file=sys.stderr)
        return step

    # ---------------------------------------------------------------- training
    def train(self) -> dict[str, float]:
        """Runs the remaining steps; returns the last step's metrics."""
        config, parts = self.config, self.parts
        trainer = config.trainer
        stages = config.stages()
        skips, last = 0, {}
        ends = set(stage_ends(stages))
        fresh = {
            start
            for start, stage in zip(stage_starts(stages), stages, strict=True)
            if stage.fresh_optimizer
        }
        if self.start_step == 0 and trainer.eval_every and trainer.eval_at_start:
            self.log.write(0, self.evaluate())  # the policy before any update
        progress = progress_bar(self.rank0 and trainer.progress, self.start_step, self.total_steps)
        for step in range(self.start_step, self.total_steps):
            if step in fresh:  # also on a resume at the stage's start
                parts.actor.reset_optimizer_state()
            indices = parts.sampler.next_batch()
            metrics = self.runner.run(step, indices, stage_at(stages, step))
            skips = skips + 1 if metrics.get(names.SKIPPED, 0.0) > 0 else 0
            done = step + 1
            if trainer.eval_every and (done % trainer.eval_every == 0 or done in ends):
                metrics.update(self.evaluate())
            self.log.write(done, metrics)
            self.writer.poll()  # publishes an asynchronous save whose writes have finished
            progress(metrics)
            last = metrics
            if skips > trainer.max_consecutive_skips:
                raise RuntimeError(f"stopping: {skips} consecutive steps had non-finite gradients")
            if done % trainer.checkpoint_every == 0 or done == self.total_steps:
                self.save(done)
        self.finish()
        return last

    def evaluate(self) -> dict[str, float]:
        """Held-out and benchmark-subset metrics now (see ``evaluation.evaluate_run``)."""
        return evaluate_run(self.config, self.parts)

    def save(self, step: int) -> None:
        """Writes (with ``trainer.async_save``: starts writing) the checkpoint of ``step``."""
        self.writer.save(
            step,
            self.parts.actor,
            self.parts.regulator,
            self.parts.sampler.state_dict(),
            self.runner.state_dict(),
        )

    def finish(self) -> None:
        """Publishes the last checkpoint, exports the policy as a HF checkpoint with its
        tokenizer, and draws the plots."""
        self.writer.wait()
        export_policy(self.parts.actor, self.parts.tokenizer, self.run_dir / "hf")
        self.finished = True
        if self.rank0:
            try:
                self.log.plot()
            except ImportError as err:  # plotting needs matplotlib
                print(f"[nemo-red] no plots: {err}", file=sys.stderr)
            line = self.summary()
            if line:
                print(f"[nemo-red] {line}", file=sys.stderr)
        dist.barrier()

    def summary(self) -> str | None:
        """Held-out accuracy at the start and after each stage, in one line (rank 0)."""
        from nemo_red.monitoring.metrics_log import read_metrics
        from nemo_red.monitoring.summary import accuracy_summary
        from nemo_red.training.evaluation import HELD_OUT

        held_out = [s for s in self.parts.eval if s.name == HELD_OUT]
        log = self.run_dir / "metrics.jsonl"
        if not held_out or not log.exists():
            return None
        rollout = self.config.rollout
        sampling = (
            "greedy"
            if rollout.eval_temperature == 0
            else f"{rollout.eval_n} sample(s) each at temperature {rollout.eval_temperature}"
        )
        stages = self.config.stages()
        presets = [stage.preset for stage in stages]
        return accuracy_summary(
            read_metrics(log),
            list(zip(presets, stage_ends(stages), strict=True)),
            len(held_out[0].items),
            sampling,
        )

    def close(self) -> None:
        """Stops the grader workers, the engine and the process groups; frees the run."""
        if not self.complete:
            self.parts.close()
            self.log.close(complete=self.finished)
        self.directory.close()
        shutdown_distributed()
