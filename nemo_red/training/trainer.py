"""``RedTrainer``: builds a run from a :class:`TrainConfig`, trains, checkpoints, resumes.

A run directory holds ``config.yaml`` and ``config_history.jsonl`` (see ``run_dir.py``),
``metrics.jsonl``, ``tensorboard/``, ``checkpoints/`` (see ``checkpoint.py``), ``hf/``
(the final policy as a Hugging Face checkpoint with its tokenizer) and ``plots/``.
Starting a run whose directory has a checkpoint resumes from the newest intact one, if
the config is the one it was started with (or ``allow_config_change``); the metrics log
is cut back to the checkpoint's step, so a killed-and-resumed run logs what an
uninterrupted one would. A run whose checkpoint is at its last step is complete: starting
it again builds nothing and says so.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch.distributed as dist

from nemo_red.algorithms import EntropyRegulator
from nemo_red.data.dataset import ProblemSampler, stop_token_ids, tokenize_problems
from nemo_red.data.loading import load_problems
from nemo_red.data.templates import PromptTemplate, template_from_config
from nemo_red.evaluation import ResponseGrader
from nemo_red.rewards import MathGrader
from nemo_red.rollout.base import SamplingParams
from nemo_red.training import checkpoint
from nemo_red.training.actor import MegatronActor
from nemo_red.training.config import TrainConfig
from nemo_red.training.evaluation import (
    EvalSet,
    TokenGrader,
    benchmark_sets,
    evaluate_sets,
    held_out_set,
)
from nemo_red.training.loop import StepRunner, stage_at
from nemo_red.training.optim import OptimConfig
from nemo_red.training.parallel import (
    ParallelLayout,
    init_distributed,
    on_rank0,
    shutdown_distributed,
)
from nemo_red.training.run_dir import RunDirectory
from nemo_red.training.setup import (
    build_engine,
    build_policy,
    export_policy,
    prepare_data_files,
    prepare_tokenizer,
)


@dataclasses.dataclass
class RunParts:
    """The live objects of a run."""

    tokenizer: Any
    train: list[Any]
    eval: list[EvalSet]
    actor: MegatronActor
    engine: Any
    grader: TokenGrader
    regulator: EntropyRegulator
    sampler: ProblemSampler
    stop_token_ids: list[int]


def _load(config: TrainConfig, path: Path, layout: str, limit: int | None, train: bool) -> Any:
    data = config.data
    return load_problems(
        path,
        layout=layout,
        fields=data.fields if train else None,
        on_bad_row=data.on_bad_row,
        require_teacher=train,
        limit=limit,
    )


def _template(config: TrainConfig) -> PromptTemplate:
    return template_from_config(config.data)


def _tokenize(
    config: TrainConfig, problems: list[Any], tokenizer: Any, teacher: bool
) -> tuple[list[Any], dict[str, int]]:
    data = config.data
    return tokenize_problems(
        problems,
        tokenizer,
        _template(config),
        data.max_prompt_tokens,
        data.max_response_tokens,
        tokenizer.eos_token_id,
        use_teacher=teacher,
    )


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
        init_distributed(ParallelLayout(config.parallel.tp, config.parallel.pp), config.run.seed)
        self.rank0 = dist.get_rank() == 0
        self.directory = RunDirectory(self.run_dir)
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
        self.parts = self._build(
            read_weights=latest is None and config.model.init_checkpoint is None,
            fresh=latest is None,
        )
        self.runner = StepRunner(config, self.parts)
        self.start_step = self._resume(latest)
        on_rank0(lambda: self.directory.record_start(config, self.start_step, changes))
        self.log = MetricsWriter(
            self.run_dir, self.config.trainer.tensorboard, self.rank0, resume_step=self.start_step
        )

    def _completed_step(self, latest: Path) -> int | None:
        """The step of ``latest`` when it ends the run (None while steps remain)."""
        step = int(checkpoint.read_meta(latest)["step"])
        return step if step >= self.total_steps else None

    @property
    def complete(self) -> bool:
        """Whether the run had already finished when this start found it."""
        return self.complete_at is not None

    # ---------------------------------------------------------------- building
    def _build(self, read_weights: bool, fresh: bool) -> RunParts:
        config = self.config
        files = prepare_data_files(config, self.run_dir, fresh)
        loaded = _load(config, files.train, config.data.layout, None, train=True)
        tokenizer = prepare_tokenizer(config, self.run_dir, loaded.problems, fresh)
        train, dropped = _tokenize(config, loaded.problems, tokenizer, teacher=True)
        evals: list[EvalSet] = []
        if files.eval is not None:
            eval_set = _load(
                config, files.eval, config.data.eval_layout, config.data.eval_limit, train=False
            )
            evals.append(held_out_set(_tokenize(config, eval_set.problems, tokenizer, False)[0]))
        data = config.data
        if data.eval_benchmarks:
            evals += benchmark_sets(
                data.eval_benchmarks,
                data.benchmark_dir,
                data.eval_limit,
                tokenizer,
                _template(config),
                data.max_prompt_tokens,
            )
        info = {"skipped_rows": len(loaded.skipped), **dropped}
        if not train:
            raise ValueError(f"no training problems left after filtering: {info}")
        if self.rank0:
            print(
                f"[nemo-red] {len(train)} training problems ({info}), "
                f"{sum(len(s.items) for s in evals)} evaluation problems",
                file=sys.stderr,
            )
        model, shape = build_policy(config, tokenizer, read_weights)
        trainer = config.trainer
        optim = OptimConfig(
            **dataclasses.asdict(trainer.optim),
            total_steps=self.total_steps * trainer.updates_per_step,
        )
        actor = MegatronActor(model, shape, optim, token_budget=trainer.token_budget)
        engine = build_engine(config, actor, tokenizer, self.run_dir)
        grader = TokenGrader(
            MathGrader(
                num_workers=trainer.grader_workers,
                timeout_s=trainer.grader_timeout_s,
                think_split=trainer.think_split,
            ),
            tokenizer,
        )
        reg = config.algorithm.regulator
        clip_high = float(config.rollout.n) if reg.clip_high is None else reg.clip_high
        regulator = EntropyRegulator(reg.window, reg.clip_low, clip_high)
        sampler = ProblemSampler(len(train), trainer.prompts_per_step, seed=config.run.seed)
        stops = stop_token_ids(tokenizer, shape.vocab_size)
        return RunParts(tokenizer, train, evals, actor, engine, grader, regulator, sampler, stops)

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.config.stages())

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
        progress = _progress(self.rank0 and trainer.progress, self.start_step, self.total_steps)
        for step in range(self.start_step, self.total_steps):
            indices = parts.sampler.next_batch()
            metrics = self.runner.run(step, indices, stage_at(stages, step))
            skips = skips + 1 if metrics.get("skipped", 0.0) > 0 else 0
            done = step + 1
            if trainer.eval_every and (done % trainer.eval_every == 0 or done == self.total_steps):
                metrics.update(self.evaluate())
            self.log.write(done, metrics)
            progress(metrics)
            last = metrics
            if skips > trainer.max_consecutive_skips:
                raise RuntimeError(f"stopping: {skips} consecutive steps had non-finite gradients")
            if done % trainer.checkpoint_every == 0 or done == self.total_steps:
                self.save(done)
        self.finish()
        return last

    def evaluate(self) -> dict[str, float]:
        """Held-out and benchmark-subset metrics (problems shared over data-parallel ranks)."""
        parts, rollout = self.parts, self.config.rollout
        if not parts.eval:
            return {}
        from megatron.core import parallel_state as ps

        group = ps.get_data_parallel_group()
        size = ps.get_data_parallel_world_size()

        def gather(records: list[dict]) -> list[dict]:
            everyone: list[Any] = [None] * size
            dist.all_gather_object(everyone, records, group=group)
            return [record for part in everyone for record in part]

        params = SamplingParams(
            n=rollout.eval_n,
            temperature=rollout.eval_temperature,
            max_new_tokens=rollout.eval_max_new_tokens or rollout.max_new_tokens,
            stop_token_ids=tuple(parts.stop_token_ids),
            seed=self.config.run.seed,
        )
        grader = ResponseGrader(parts.grader.grader, think_split=self.config.trainer.think_split)
        return evaluate_sets(
            parts.engine,
            parts.tokenizer,
            grader,
            parts.eval,
            params,
            shard=(ps.get_data_parallel_rank(), size),
            gather=gather,
        )

    def save(self, step: int) -> None:
        """Writes the checkpoint of ``step``."""
        checkpoint.save_checkpoint(
            self.run_dir / "checkpoints",
            step,
            self.parts.actor,
            self.parts.regulator,
            self.parts.sampler.state_dict(),
            self.runner.state_dict(),
            keep=self.config.trainer.keep_checkpoints,
        )

    def finish(self) -> None:
        """Exports the policy as a HF checkpoint with its tokenizer, and draws the plots."""
        export_policy(self.parts.actor, self.parts.tokenizer, self.run_dir / "hf")
        if self.rank0:
            try:
                self.log.plot()
            except ImportError as err:  # plotting needs matplotlib
                print(f"[nemo-red] no plots: {err}", file=sys.stderr)
        dist.barrier()

    def close(self) -> None:
        """Stops the grader workers, the engine and the process groups; frees the run."""
        if not self.complete:
            self.parts.grader.grader.close()
            self.parts.engine.shutdown()
            self.log.close()
        self.directory.close()
        shutdown_distributed()


class MetricsWriter:
    """JSONL + TensorBoard + plots on rank 0 (no-ops elsewhere)."""

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
        if not self.active:
            return
        self.jsonl.log(step, metrics)
        if self.tb is not None:
            self.tb.add_scalars(step, metrics)

    def plot(self) -> list[Path]:
        from nemo_red.monitoring.plots import plot_run

        return (
            plot_run(self.run_dir / "metrics.jsonl", self.run_dir / "plots") if self.active else []
        )

    def close(self) -> None:
        if not self.active:
            return
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()


def _progress(enabled: bool, start: int, total: int) -> Any:
    if not enabled:
        return lambda metrics: None
    from tqdm import tqdm

    bar = tqdm(total=total, initial=start, desc="nemo-red", dynamic_ncols=True, file=sys.stderr)
    # accuracies in percent, as in every table a person reads (files keep fractions)
    percent = {"reward/online_accuracy": "acc%", "eval/accuracy": "eval%"}
    plain = {
        "entropy/w": "w",
        "entropy/h_rl": "H_rl",
        "entropy/h_sft": "H_sft",
        "loss/total": "loss",
    }

    def update(metrics: dict[str, float]) -> None:
        have = {k for k, v in metrics.items() if isinstance(v, float)}
        shown = {s: f"{100 * metrics[k]:.1f}" for k, s in percent.items() if k in have}
        shown |= {s: f"{metrics[k]:.3g}" for k, s in plain.items() if k in have}
        bar.set_postfix(shown, refresh=False)
        bar.update(1)

    return update
