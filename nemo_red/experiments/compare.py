"""``nemo-red compare``: the paper's method comparisons as a set of ordinary training runs.

A comparison config (YAML, validated into :class:`CompareConfig`) names a training config
file, overrides shared by every run, an optional generated task in parts, an optional
base-model stage, the arms (each a name and ``key=value`` overrides of the training
config), the seeds, an optional per-arm sweep of one setting and a reference arm. Layout of
``output_dir``::

    task/                  with ``task``: the task's files (``nemo_red.data.task_parts``):
                           base_train.jsonl, train.jsonl, validation_<part>.jsonl,
                           test_<part>.jsonl, and task.json (the task's config)
    base_model/            one training run, done once; its ``hf/`` export becomes every
                           arm's ``model.path`` (it stands in for pretraining), and with
                           ``carry_optimizer`` its last checkpoint every arm's
                           ``model.init_checkpoint``
    runs/<arm>/seed_<s>/   one ``nemo-red train`` run directory per (arm, seed); with a
                           sweep ``runs/<arm>/<name>_<value>/seed_<s>/``
    selection.json         with a sweep: every arm's validation score per value, the
                           chosen value
    results.json           per arm: per-seed final accuracy (overall and per part), mean,
                           std, 95% interval, paired verdict against the reference arm,
                           response length, times, raw and mean curves
    results.md             the markdown tables (also printed), accuracies in percent
    plots/*.png            accuracy (per part), H_rl, H_sft and w over steps, one line per arm

With ``task`` the base model trains on the base parts only and every arm on all parts;
every run evaluates each part's validation and test files (``data.eval_sets``). With
``sweep`` (which needs ``task``) each arm first trains once per value of the swept setting
for the sweep's seeds; its value is the one with the highest validation accuracy (the mean
over parts of the final ``eval/validation_<part>/accuracy``, averaged over the sweep's
seeds; ties go to the value listed first). The arm's runs for ``seeds`` then use that
value (a sweep run of the chosen value and a seed in ``seeds`` is one of them), and the
table reports the **test** files only, so no reported number chose a setting.

Each run is a subprocess (``python -m nemo_red.cli train``, or ``launcher`` when set, e.g.
``scripts/launch_torchrun.sh`` for runs that span GPUs), ``workers`` at a time, each with
``threads_per_worker`` CPU threads, its output appended to ``compare.log`` in its run
directory; runs start in the current directory, so relative paths (``output_dir``)
are relative to it. A run that exited successfully leaves ``compare_done.json`` (its overrides and
wall time) and is skipped when the comparison is started again; an unfinished one is
started again and resumes from its checkpoint as ``train`` does. When the base model's data
are generated (``data.train_path`` null), the arms train and evaluate on the base model's
generated files, so every arm and seed sees the same problems.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from nemo_red.data.task_parts import TaskParts, eval_set_files, write_task_parts
from nemo_red.monitoring import names
from nemo_red.outputs import DirectoryLock, claim_directory
from nemo_red.training.config import ConfigError, load_config

DONE_FILE = "compare_done.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class ArmConfig:
    """One method of the comparison: a name and its overrides of the training config."""

    name: str = ""
    overrides: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BaseModelConfig:
    """The shared base-model stage: one run with these overrides, seed ``seed``.

    With ``carry_optimizer`` every arm also starts from the base run's AdamW moments
    (``model.init_checkpoint``), so an arm continues the base's training rather than
    restarting the optimizer on a freshly trained model.
    """

    overrides: list[str] = field(default_factory=list)
    seed: int = 0
    carry_optimizer: bool = False


@dataclass(frozen=True)
class SweepConfig:
    """Per-arm tuning of one numeric setting on the task's validation files.

    Attributes:
        keys: the training-config keys set to each value (e.g. ``trainer.optim.lr`` and
            ``trainer.optim.min_lr`` for a constant schedule).
        values: the values tried, for every arm alike.
        seeds: the seeds of the sweep runs.
        name: the setting's name in run directories and tables.
    """

    keys: list[str] = field(default_factory=lambda: ["trainer.optim.lr"])
    values: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [1])
    name: str = "lr"


@dataclass(frozen=True)
class CompareConfig:
    """Everything ``nemo-red compare`` needs.

    Attributes:
        train_config: the training YAML every run starts from (relative to this file).
        output_dir: where the runs and results go (relative to the working directory).
        overrides: ``key=value`` overrides of the training config for every run (the shared
            training settings), the base model's included.
        base_model: the optional base-model stage.
        arms: the methods compared, in table order.
        seeds: the seeds of every arm.
        task: a generated task in parts (see the module docstring), or None: the
            training config's own data.
        sweep: per-arm tuning on the validation files, or None.
        reference: the arm every other is compared with, paired per seed (see
            ``nemo_red.experiments.intervals``), or None.
        workers: runs trained at the same time (processes).
        threads_per_worker: CPU threads of each run (``OMP_NUM_THREADS``).
        accuracy_key: the metric the accuracy columns and plot use.
        launcher: a command that starts ``nemo-red train`` in place of
            ``python -m nemo_red.cli train`` (it gets ``--config`` and the overrides), e.g.
            ``[scripts/launch_torchrun.sh]`` so every run spans the GPUs that
            ``GPUS_PER_NODE`` etc. in the environment give; empty: one process per run.
    """

    train_config: str = ""
    output_dir: str = "runs/compare"
    overrides: list[str] = field(default_factory=list)
    base_model: BaseModelConfig | None = None
    arms: list[ArmConfig] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    task: TaskParts | None = None
    sweep: SweepConfig | None = None
    reference: str | None = None
    workers: int = 1
    threads_per_worker: int = 1
    accuracy_key: str = names.HELD_OUT_ACCURACY
    launcher: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the comparison."""

    arm: str
    seed: int
    run_dir: Path
    overrides: list[str]
    value: float | None = None  # the swept setting's value, with a sweep


def _valid_keys(section: str) -> list[str]:
    node: Any = CompareConfig
    for part in [] if section == "top level" else section.split("."):
        hint = typing.get_type_hints(node).get(part)
        args = [hint, *typing.get_args(hint)]
        args += [a for h in typing.get_args(hint) for a in typing.get_args(h)]
        node = next((c for c in args if dataclasses.is_dataclass(c)), None)
        if node is None:
            return []
    return [f.name for f in dataclasses.fields(node)]


def load_compare_config(path: str | Path, overrides: list[str] | None = None) -> CompareConfig:
    """Reads and validates a comparison YAML (``key=value`` overrides allowed).

    ``train_config`` is resolved relative to the YAML file; every arm's training config is
    loaded once here, so a bad override fails before any run starts, naming the arm.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"compare config {path} does not exist")
    try:
        merged = OmegaConf.merge(
            OmegaConf.structured(CompareConfig),
            OmegaConf.load(path),
            OmegaConf.from_dotlist(list(overrides or [])),
        )
        config = OmegaConf.to_object(merged)
    except ConfigKeyError as err:
        key = str(err.full_key or err)
        section = re.sub(r"\[\d+\]", "", key.rsplit(".", 1)[0]) if "." in key else "top level"
        raise ConfigError(
            f"{path}: unknown key {key!r}; valid keys of {section}: {_valid_keys(section)}"
        ) from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path}: {str(err).splitlines()[0]} (key {err.full_key})") from None
    assert isinstance(config, CompareConfig)
    if not config.train_config:
        raise ConfigError(f"{path}: train_config is required")
    train = (path.parent / config.train_config).resolve()
    config = dataclasses.replace(config, train_config=str(train))
    _validate(config, path)
    return config


def _validate(config: CompareConfig, path: Path) -> None:
    names = [arm.name for arm in config.arms]
    if not names:
        raise ConfigError(f"{path}: arms is empty")
    for name in names:
        if not _NAME.match(name):
            raise ConfigError(f"{path}: arm name {name!r} must match {_NAME.pattern}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: arm names must be unique, got {names}")
    if not config.seeds or len(set(config.seeds)) != len(config.seeds):
        raise ConfigError(f"{path}: seeds must be a non-empty list of distinct ints")
    if config.workers < 1 or config.threads_per_worker < 1:
        raise ConfigError(f"{path}: workers and threads_per_worker must be >= 1")
    if config.reference is not None and config.reference not in names:
        raise ConfigError(f"{path}: reference {config.reference!r} is not an arm of {names}")
    if config.task is not None:
        try:
            config.task.check()
        except ValueError as err:
            raise ConfigError(f"{path}: {err}") from None
    _validate_sweep(config, path)
    groups = {"overrides": config.overrides}
    if config.base_model is not None:
        groups["base_model.overrides"] = config.base_model.overrides
    groups.update({f"arm {arm.name!r}": arm.overrides for arm in config.arms})
    for where, items in groups.items():
        bad = [o for o in items if "=" not in o]
        if bad:
            raise ConfigError(f"{path}: {where}: overrides must be key=value, got {bad}")
    if config.base_model is not None:
        _check_train(config, [*config.overrides, *config.base_model.overrides], "base_model")
    values: list[float | None] = [None] if config.sweep is None else list(config.sweep.values)
    for arm in config.arms:
        for value in values:
            where = f"arm {arm.name!r}" + ("" if value is None else f" at {value!r}")
            overrides = [*config.overrides, *arm.overrides, *_sweep_overrides(config, value)]
            _check_train(config, overrides, where)


def _validate_sweep(config: CompareConfig, path: Path) -> None:
    sweep = config.sweep
    if sweep is None:
        return
    if config.task is None:
        raise ConfigError(f"{path}: sweep needs task (its validation files choose the value)")
    if not sweep.values or len(set(sweep.values)) != len(sweep.values):
        raise ConfigError(f"{path}: sweep.values must be a non-empty list of distinct numbers")
    if not sweep.seeds or len(set(sweep.seeds)) != len(sweep.seeds):
        raise ConfigError(f"{path}: sweep.seeds must be a non-empty list of distinct ints")
    if not sweep.keys or not _NAME.match(sweep.name):
        raise ConfigError(f"{path}: sweep needs keys and a name matching {_NAME.pattern}")


def _sweep_overrides(config: CompareConfig, value: float | None) -> list[str]:
    if value is None or config.sweep is None:
        return []
    return [f"{key}={value!r}" for key in config.sweep.keys]


def _check_train(config: CompareConfig, overrides: list[str], where: str) -> None:
    try:
        load_config(config.train_config, overrides)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def task_dir(config: CompareConfig) -> Path:
    """Where the task's files go."""
    return Path(config.output_dir) / "task"


def _task_data(config: CompareConfig, train_file: str) -> list[str]:
    """Overrides that train on ``train_file`` of the task and evaluate its every part."""
    if config.task is None:
        return []
    folder = task_dir(config)
    sets = eval_set_files(folder, config.task.parts)
    listing = ", ".join(f"{name}: '{file}'" for name, file in sets.items())
    return [f"data.train_path={folder / train_file}", f"data.eval_sets={{{listing}}}"]


def prepare_task(config: CompareConfig) -> None:
    """Writes the task's files once (``task/task.json`` records the task they were made
    for; a different task in the same ``output_dir`` is refused)."""
    if config.task is None:
        return
    folder = task_dir(config)
    record = folder / "task.json"
    wanted = dataclasses.asdict(config.task)
    if record.is_file():
        if json.loads(record.read_text()) != wanted:
            raise ConfigError(
                f"{folder} holds the files of another task ({record}); "
                "remove it or change output_dir"
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_task_parts(config.task, folder)
    record.write_text(json.dumps(wanted, indent=1))


def parts_keys(config: CompareConfig, split: str = "test") -> dict[str, str] | None:
    """Part label -> the accuracy key of its ``split`` file (None without a task)."""
    if config.task is None:
        return None
    return {part: names.eval_metric(f"{split}_{part}", "accuracy") for part in config.task.parts}


def base_model_run(config: CompareConfig) -> PlannedRun | None:
    """The base-model stage's run, or None without one."""
    if config.base_model is None:
        return None
    run_dir = Path(config.output_dir) / "base_model"
    overrides = [*config.overrides, *_task_data(config, "base_train.jsonl")]
    overrides += config.base_model.overrides
    overrides += [f"run.seed={config.base_model.seed}", "run.name=base_model"]
    return PlannedRun("base_model", config.base_model.seed, run_dir, overrides)


def _from_base(config: CompareConfig, base: PlannedRun) -> list[str]:
    """Overrides that start an arm from the base model (and its generated data)."""
    out = [f"model.path={base.run_dir / 'hf'}"]
    if config.base_model is not None and config.base_model.carry_optimizer:
        out.append(f"model.init_checkpoint={base.run_dir / 'checkpoints'}")
    if config.task is not None:
        return out
    base_train = load_config(config.train_config, base.overrides)
    if base_train.data.train_path is None:
        data = base.run_dir / "data"
        out += [f"data.train_path={data / 'train.jsonl'}", f"data.eval_path={data / 'test.jsonl'}"]
    return out


def _arm_run(
    config: CompareConfig, arm: ArmConfig, seed: int, start: list[str], value: float | None
) -> PlannedRun:
    run_dir = Path(config.output_dir) / "runs" / arm.name
    if value is not None and config.sweep is not None:
        run_dir = run_dir / f"{config.sweep.name}_{value:g}"
    overrides = [*config.overrides, *start, *arm.overrides, *_sweep_overrides(config, value)]
    overrides += [f"run.seed={seed}", f"run.name={arm.name}_seed{seed}"]
    return PlannedRun(arm.name, seed, run_dir / f"seed_{seed}", overrides, value)


def _start(config: CompareConfig) -> list[str]:
    base = base_model_run(config)
    start = [] if base is None else _from_base(config, base)
    return start if config.task is None else [*start, *_task_data(config, "train.jsonl")]


def plan_sweep(config: CompareConfig) -> list[PlannedRun]:
    """The sweep's (arm, value, seed) runs, arm-major; empty without a sweep."""
    if config.sweep is None:
        return []
    start = _start(config)
    return [
        _arm_run(config, arm, seed, start, value)
        for arm in config.arms
        for value in config.sweep.values
        for seed in config.sweep.seeds
    ]


def plan_runs(config: CompareConfig, chosen: dict[str, float] | None = None) -> list[PlannedRun]:
    """The (arm, seed) runs, arm-major in config order; with a sweep, at each arm's chosen
    value (``chosen``: arm -> value; arms without one are left out)."""
    start = _start(config)
    runs = []
    for arm in config.arms:
        value = None
        if config.sweep is not None:
            if chosen is None or arm.name not in chosen:
                continue
            value = chosen[arm.name]
        runs += [_arm_run(config, arm, seed, start, value) for seed in config.seeds]
    return runs


def validation_score(run_dir: Path, keys: dict[str, str]) -> float | None:
    """A finished run's last validation accuracy, the mean over parts (``keys``: part ->
    metric), read as the comparison reads every run's accuracy (``aggregate.summarize_run``)."""
    from nemo_red.experiments.aggregate import summarize_run
    from nemo_red.monitoring.metrics_log import read_metrics

    rows = read_metrics(run_dir / "metrics.jsonl")
    return summarize_run("sweep", 0, rows, None, parts=keys).final_accuracy


def select(config: CompareConfig, sweep_runs: list[PlannedRun]) -> dict[str, Any]:
    """Each arm's value of the swept setting (see the module docstring).

    Returns:
        ``name``, ``keys``, ``values``, ``seeds``, ``rule``, ``scores`` (arm -> value label
        -> mean validation accuracy over the sweep's seeds, None where a run failed),
        ``chosen`` (arm -> value) and ``chosen_labels`` (arm -> the value as written).
    """
    assert config.sweep is not None
    keys = parts_keys(config, "validation") or {}
    scores: dict[str, dict[float, list[float | None]]] = {}
    for run in sweep_runs:
        assert run.value is not None
        score = validation_score(run.run_dir, keys) if finished(run) is not None else None
        scores.setdefault(run.arm, {}).setdefault(run.value, []).append(score)
    chosen: dict[str, float] = {}
    means: dict[str, dict[str, float | None]] = {}
    for arm, per_value in scores.items():
        mean = {
            v: None if None in got else sum(s for s in got if s is not None) / len(got)
            for v, got in per_value.items()
        }
        means[arm] = {f"{v:g}": m for v, m in mean.items()}
        scored = [(m, -i, v) for i, (v, m) in enumerate(mean.items()) if m is not None]
        if scored:
            chosen[arm] = max(scored)[2]
    return {
        "name": config.sweep.name,
        "keys": list(config.sweep.keys),
        "values": list(config.sweep.values),
        "seeds": list(config.sweep.seeds),
        "rule": "highest mean over parts of the final validation accuracy, averaged over "
        "the sweep's seeds; ties to the value listed first",
        "scores": means,
        "chosen": chosen,
        "chosen_labels": {arm: f"{v:g}" for arm, v in chosen.items()},
    }


def finished(run: PlannedRun) -> dict[str, Any] | None:
    """The done record of a finished run, None if unfinished.

    Raises:
        ConfigError: when the run finished with other overrides than planned now.
    """
    done = run.run_dir / DONE_FILE
    if not done.is_file():
        return None
    record = json.loads(done.read_text())
    if record["overrides"] != run.overrides:
        raise ConfigError(
            f"{run.run_dir} finished with other overrides ({record['overrides']}) than the "
            f"config gives now ({run.overrides}); remove it or change output_dir"
        )
    return record


def train_command(
    train_config: str, run: PlannedRun, launcher: list[str] | None = None
) -> list[str]:
    """The ``nemo-red train`` command line of a run, started by ``launcher`` when given."""
    start = launcher or [sys.executable, "-m", "nemo_red.cli", "train"]
    return [
        *start,
        "--config",
        train_config,
        *run.overrides,
        f"run.output_dir={run.run_dir}",
        "trainer.progress=false",
    ]


def execute(config: CompareConfig, run: PlannedRun) -> bool:
    """Trains one run unless it finished before; returns whether it is finished now."""
    if finished(run) is not None:
        return True
    claim_directory(run.run_dir, "run")  # before compare.log: train then continues it
    threads = str(config.threads_per_worker)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    start = time.perf_counter()
    with (run.run_dir / "compare.log").open("a") as log:
        code = subprocess.call(
            train_command(config.train_config, run, config.launcher),
            env=env,
            stdout=log,
            stderr=log,
        )
    if code != 0:
        return False
    record = {"overrides": run.overrides, "wall_s": time.perf_counter() - start}
    (run.run_dir / DONE_FILE).write_text(json.dumps(record, indent=1))
    return True


def run_comparison(config: CompareConfig, log: Any = sys.stderr) -> dict[str, Any]:
    """Trains what is unfinished (base model first), then aggregates the finished runs.

    Returns:
        The aggregate document (see ``aggregate.aggregate``) with ``failed``: the run
        directories whose training failed (their ``compare.log`` says why).
    """
    start = time.perf_counter()
    output = Path(config.output_dir)
    claim_directory(output, "compare")
    with DirectoryLock(output, "comparing"):
        return _run_locked(config, log, start)


def _run_locked(config: CompareConfig, log: Any, start: float) -> dict[str, Any]:
    from nemo_red.evaluation.report import run_info
    from nemo_red.experiments.aggregate import aggregate

    prepare_task(config)
    base = base_model_run(config)
    if base is not None and not execute(config, base):
        raise RuntimeError(f"the base model run failed: see {base.run_dir / 'compare.log'}")
    failed: list[str] = []
    trained = 0
    selection = None
    if config.sweep is not None:
        sweep_runs = plan_sweep(config)
        failed, trained = _train_all(config, sweep_runs, "sweep runs", log)
        selection = select(config, sweep_runs)
        output = Path(config.output_dir)
        (output / "selection.json").write_text(json.dumps(selection, indent=1))
        print(f"[compare] chosen {config.sweep.name}: {selection['chosen_labels']}", file=log)
    runs = plan_runs(config, None if selection is None else selection["chosen"])
    more_failed, more_trained = _train_all(config, runs, "runs", log)
    failed += [f for f in more_failed if f not in failed]
    trained += more_trained
    by_arm: dict[str, dict[int, Path]] = {}
    walls: dict[Path, float | None] = {}
    for run in runs:
        record = finished(run)
        if record is not None:
            by_arm.setdefault(run.arm, {})[run.seed] = run.run_dir
            walls[run.run_dir] = record.get("wall_s")
    info = {
        **run_info(),
        "cpu_count": os.cpu_count(),
        "workers": config.workers,
        "threads_per_worker": config.threads_per_worker,
        "runs_trained": trained,  # in this invocation (finished runs are skipped)
        "wall_s": round(time.perf_counter() - start, 1),
    }
    document = aggregate(
        by_arm,
        walls,
        Path(config.output_dir),
        config.accuracy_key,
        base_run=None if base is None else base.run_dir,
        info=info,
        parts=parts_keys(config),
        reference=config.reference,
        selection=selection,
    )
    return {**document, "failed": failed}


def _train_all(
    config: CompareConfig, runs: list[PlannedRun], what: str, log: Any
) -> tuple[list[str], int]:
    """Trains the unfinished ``runs``, ``workers`` at a time; returns the failed run
    directories and the number of runs trained."""
    todo = [r for r in runs if finished(r) is None]
    print(f"[compare] {len(runs) - len(todo)} of {len(runs)} {what} finished before", file=log)
    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        done = list(pool.map(lambda r: execute(config, r), todo))
    return [str(r.run_dir) for r, good in zip(todo, done, strict=True) if not good], len(todo)


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Registers ``compare`` on a ``nemo-red`` subparsers object."""
    parser = subparsers.add_parser(
        "compare", help="train every (arm, seed) of a comparison config and tabulate them"
    )
    parser.add_argument("--config", type=Path, required=True, help="comparison YAML")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the comparison")
    return parser


def main(args: argparse.Namespace) -> int:
    """Runs ``nemo-red compare``; 1 when some run failed, else 0."""
    config = load_compare_config(args.config, args.overrides)
    document = run_comparison(config)
    print(document["table"], end="")
    print(f"[compare] results in {Path(config.output_dir) / 'results.json'}", file=sys.stderr)
    for run_dir in document["failed"]:
        print(f"[compare] FAILED: {run_dir} (see its compare.log)", file=sys.stderr)
    return 1 if document["failed"] else 0
