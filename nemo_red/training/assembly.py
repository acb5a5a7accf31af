"""Assembling a run: from a validated :class:`TrainConfig` to the typed :class:`RunParts`
the training loop drives.

The one place where a run's parts are chosen and built, in order: data files (or the
generated task), tokenizer, tokenized training and evaluation problems, the megatron policy
and its optimizer (the actor), the rollout engine (from the engine registry), the reward,
the entropy regulator and the prompt sampler. The building blocks are in ``setup.py``;
``trainer.py`` drives the loop over what this module returns.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nemo_red.algorithms import EntropyRegulator
from nemo_red.data.dataset import (
    ProblemSampler,
    TokenizedProblem,
    stop_token_ids,
    tokenize_problems,
)
from nemo_red.data.loading import LoadResult, load_problems
from nemo_red.data.templates import template_from_config
from nemo_red.rewards import MathGrader, TokenRewards
from nemo_red.rollout.base import RolloutEngine
from nemo_red.rollout.registry import EngineRequest, build_engine, engine_info
from nemo_red.training.actor import MegatronActor
from nemo_red.training.config import TrainConfig
from nemo_red.training.evaluation import EvalSet, benchmark_sets, held_out_set, named_set
from nemo_red.training.optim import OptimConfig
from nemo_red.training.setup import (
    build_policy,
    export_policy,
    prepare_data_files,
    prepare_tokenizer,
)


@dataclass
class RunParts:
    """The live objects of a run.

    Attributes:
        tokenizer: the run's HF tokenizer.
        train: the tokenized training problems (with teacher traces).
        eval: the sets evaluated during training (held-out split, benchmark subsets).
        actor: this rank's policy shard and its optimizer.
        engine: the rollout engine, holding the actor's current weights.
        rewards: grades completions given as token ids.
        regulator: the entropy-ratio weight w(t) (paper Eq. 13).
        sampler: which training problems each step draws (its state is checkpointed).
        stop_token_ids: the ids that end a response.
    """

    tokenizer: Any
    train: list[TokenizedProblem]
    eval: list[EvalSet]
    actor: MegatronActor
    engine: RolloutEngine
    rewards: TokenRewards
    regulator: EntropyRegulator
    sampler: ProblemSampler
    stop_token_ids: list[int]

    def close(self) -> None:
        """Stops the reward's worker processes and the engine."""
        self.rewards.close()
        self.engine.shutdown()


def actor_optim(config: TrainConfig) -> OptimConfig:
    """The actor's optimizer config: ``trainer.optim`` and the schedule(s) of the run, in
    optimizer updates (``trainer.updates_per_step`` per step)."""
    trainer = config.trainer
    per_stage = tuple(
        (steps * trainer.updates_per_step, section) for _, steps, section in config.lr_segments()
    )
    return OptimConfig(
        **dataclasses.asdict(trainer.optim),
        total_steps=total_steps(config) * trainer.updates_per_step,
        segments=per_stage if config.per_stage_lr else (),
    )


def total_steps(config: TrainConfig) -> int:
    """The run's length: the steps of all its stages."""
    return sum(s.steps for s in config.stages())


def _load(config: TrainConfig, path: Path, train: bool) -> LoadResult:
    """The training problems (with teacher traces) or the held-out ones."""
    data = config.data
    return load_problems(
        path,
        layout=data.layout if train else data.eval_layout,
        fields=data.fields if train else None,
        on_bad_row=data.on_bad_row,
        require_teacher=train,
        limit=None if train else data.eval_limit,
    )


def _tokenize(
    config: TrainConfig, problems: list[Any], tokenizer: Any, teacher: bool
) -> tuple[list[TokenizedProblem], dict[str, int]]:
    data = config.data
    return tokenize_problems(
        problems,
        tokenizer,
        template_from_config(data),
        data.max_prompt_tokens,
        data.max_response_tokens,
        tokenizer.eos_token_id,
        use_teacher=teacher,
    )


def _eval_sets(config: TrainConfig, path: Path | None, tokenizer: Any) -> list[EvalSet]:
    data = config.data
    sets: list[EvalSet] = []
    if path is not None:
        problems = _load(config, path, train=False).problems
        sets.append(held_out_set(_tokenize(config, problems, tokenizer, teacher=False)[0]))
    for name, set_path in data.eval_sets.items():
        problems = _load(config, Path(set_path), train=False).problems
        tokenized = _tokenize(config, problems, tokenizer, teacher=False)[0]
        sets.append(named_set(name, tokenized))
    if data.eval_benchmarks:
        sets += benchmark_sets(
            data.eval_benchmarks,
            data.benchmark_dir,
            data.eval_limit,
            tokenizer,
            template_from_config(data),
            data.max_prompt_tokens,
        )
    return sets


def _engine(
    config: TrainConfig, actor: MegatronActor, tokenizer: Any, run_dir: Path
) -> RolloutEngine:
    """The configured engine, holding the actor's current weights; an engine that starts
    from a HF directory gets the actor exported into ``run_dir/rollout_init``."""
    rollout = config.rollout
    info = engine_info(rollout.engine)
    hf_dir = None
    if info.starts_from_hf_dir:
        hf_dir = export_policy(actor, tokenizer, run_dir / "rollout_init")
    cuda = torch.cuda.is_available()
    request = EngineRequest(
        hf_config=actor.shape.to_hf_config(),
        dtype=config.model.dtype,
        device="cuda" if cuda else "cpu",
        seed=config.run.seed,
        max_batch_size=rollout.max_batch_size,
        max_model_len=actor.shape.max_position_embeddings,
        hf_dir=hf_dir,
        policy=actor,
    )
    return build_engine(rollout.engine, request)


def assemble_run(
    config: TrainConfig, run_dir: Path, read_weights: bool, fresh: bool, verbose: bool
) -> RunParts:
    """Builds every part of the run of ``config`` in ``run_dir`` (collective).

    Args:
        config: the validated config.
        run_dir: the claimed run directory (generated data and tokenizer go there).
        read_weights: read the weights of ``model.path`` (False when a checkpoint loaded
            next replaces them: a resume, ``model.init_checkpoint``).
        fresh: the run starts at step 0 (generated files are made anew).
        verbose: print what was loaded (rank 0).

    Raises:
        ValueError: when no training problem is left after filtering.
    """
    files = prepare_data_files(config, run_dir, fresh)
    loaded = _load(config, files.train, train=True)
    tokenizer = prepare_tokenizer(config, run_dir, loaded.problems, fresh)
    train, dropped = _tokenize(config, loaded.problems, tokenizer, teacher=True)
    evals = _eval_sets(config, files.eval, tokenizer)
    info = {"skipped_rows": len(loaded.skipped), **dropped}
    if not train:
        raise ValueError(f"no training problems left after filtering: {info}")
    if verbose:
        print(
            f"[nemo-red] {len(train)} training problems ({info}), "
            f"{sum(len(s.items) for s in evals)} evaluation problems",
            file=sys.stderr,
        )
    model, shape = build_policy(config, tokenizer, read_weights)
    trainer = config.trainer
    optim = actor_optim(config)
    actor = MegatronActor(model, shape, optim, trainer.token_budget, config.parallel)
    engine = _engine(config, actor, tokenizer, run_dir)
    grader = MathGrader(
        num_workers=trainer.grader_workers,
        timeout_s=trainer.grader_timeout_s,
        think_split=trainer.think_split,
    )
    reg = config.algorithm.regulator
    clip_high = float(config.rollout.n) if reg.clip_high is None else reg.clip_high
    return RunParts(
        tokenizer=tokenizer,
        train=train,
        eval=evals,
        actor=actor,
        engine=engine,
        rewards=TokenRewards(grader, tokenizer),
        regulator=EntropyRegulator(reg.window, reg.clip_low, clip_high),
        sampler=ProblemSampler(len(train), trainer.prompts_per_step, seed=config.run.seed),
        stop_token_ids=stop_token_ids(tokenizer, shape.vocab_size),
    )
