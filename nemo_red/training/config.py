"""The training configuration: YAML -> OmegaConf -> typed, frozen dataclasses, validated once.

``load_config(path, overrides)`` merges a YAML file (and ``key=value`` overrides) onto this
schema: an unknown key fails naming the valid keys of its section, a wrong type fails naming
the key, and cross-field checks run before any model is built. Defaults live only here.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from nemo_red.algorithms.advantages import ADVANTAGE_ESTIMATORS
from nemo_red.algorithms.aggregation import AGGREGATIONS
from nemo_red.algorithms.presets import PRESETS


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key."""


@dataclass(frozen=True)
class RunConfig:
    """Where outputs go and the run's seed."""

    name: str = "run"
    output_dir: str = "runs/${run.name}"
    seed: int = 1


@dataclass(frozen=True)
class TinyModelConfig:
    """The Qwen2-architecture model built from scratch when ``model.path`` is null."""

    num_layers: int = 4
    hidden_size: int = 128
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    max_position_embeddings: int = 256
    rope_theta: float = 10000.0


@dataclass(frozen=True)
class ModelConfig:
    """The policy: a HF or megatron (``nemo-red convert``) directory, or a tiny model.

    Attributes:
        path: HF Qwen2 directory or megatron directory; null builds ``tiny`` from scratch
            with a tokenizer trained on the training data.
        tokenizer_path: the tokenizer directory (default: ``path``).
        dtype: float32 or bfloat16.
        tiny: the architecture of the from-scratch model.
        init_checkpoint: a training checkpoint (``step_N`` directory, a ``checkpoints``
            root or a run directory: its newest checkpoint) whose weights and AdamW moments
            start this run, as if that run's training went on with this run's settings;
            the step counter, LR schedule, regulator, data position and RNG start fresh.
            Needs ``path`` (the architecture and tokenizer, e.g. that run's ``hf`` export)
            and the same TP x PP x DP layout.
    """

    path: str | None = None
    tokenizer_path: str | None = None
    dtype: str = "float32"
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    init_checkpoint: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"model.dtype must be float32 or bfloat16, got {self.dtype!r}")
        if self.init_checkpoint is not None and self.path is None:
            raise ConfigError(
                "model.init_checkpoint needs model.path (the architecture and tokenizer of "
                "the checkpointed run, e.g. its hf/ export)"
            )


@dataclass(frozen=True)
class ArithmeticConfig:
    """The generated arithmetic task of the tiny default (written into the run directory)."""

    train_size: int = 2000
    test_size: int = 200
    min_operands: int = 2
    max_operands: int = 3
    max_value: int = 9
    operators: str = "+-"


@dataclass(frozen=True)
class DataConfig:
    """Training and evaluation problems, prompt template and length limits.

    With ``train_path`` null the generated arithmetic task (``arithmetic``) is written into
    the run directory and used for training and evaluation. Evaluation during training uses
    the first ``eval_limit`` problems of ``eval_path`` and of each benchmark named in
    ``eval_benchmarks`` (found in ``benchmark_dir``, default ``$NEMO_RED_BENCHMARK_DATA`` or
    ``data/benchmarks``; see ``nemo-red eval``).
    """

    train_path: str | None = None
    eval_path: str | None = None
    layout: str = "auto"
    fields: dict[str, str] | None = None
    eval_layout: str = "auto"
    eval_limit: int = 64
    eval_benchmarks: list[str] = field(default_factory=list)
    benchmark_dir: str | None = None
    template: str = "qwen_boxed"
    system_prompt: str | None = None
    think_prefix: bool = False
    max_prompt_tokens: int = 1024
    max_response_tokens: int = 8192
    on_bad_row: str = "error"
    trust_offline: bool = False
    arithmetic: ArithmeticConfig = field(default_factory=ArithmeticConfig)

    def __post_init__(self) -> None:
        if self.on_bad_row not in ("error", "skip"):
            raise ConfigError(f"data.on_bad_row must be error or skip, got {self.on_bad_row!r}")


@dataclass(frozen=True)
class ParallelConfig:
    """Tensor and pipeline parallel sizes (data parallel = world / (tp * pp))."""

    tp: int = 1
    pp: int = 1


@dataclass(frozen=True)
class RolloutConfig:
    """How online responses are sampled (G = ``n`` per prompt)."""

    engine: str = "native"
    n: int = 7
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 8192
    max_batch_size: int = 64
    eval_temperature: float = 0.6
    eval_max_new_tokens: int | None = None
    eval_n: int = 1

    def __post_init__(self) -> None:
        if self.engine not in ("native", "hf", "vllm", "trtllm"):
            raise ConfigError(
                f"rollout.engine must be native, hf, vllm or trtllm, not {self.engine!r}"
            )
        if self.n < 1 or self.eval_n < 1:
            raise ConfigError(
                f"rollout.n and rollout.eval_n must be >= 1, got {self.n} and {self.eval_n}"
            )


@dataclass(frozen=True)
class RegulatorConfig:
    """Entropy regulator: window k and clip range of w (clip_high null = G)."""

    window: int = 1
    clip_low: float = 1.0
    clip_high: float | None = None


@dataclass(frozen=True)
class StageConfig:
    """One stage of a schedule: a loss preset for a number of steps."""

    preset: str = "red"
    steps: int = 1


@dataclass(frozen=True)
class HPTConfig:
    """HPT's per-prompt switch (``algorithm.schedule: hpt``, see ``training/schedules.py``).

    Attributes:
        gate: a prompt with at most this many correct online rollouts trains on its teacher
            trace (SFT) instead of its rollouts.
        sft_coef: the coefficient of the NLL term on those teacher traces.
    """

    gate: int = 0
    sft_coef: float = 0.3

    def __post_init__(self) -> None:
        if self.gate < 0 or self.sft_coef < 0:
            raise ConfigError(f"algorithm.hpt: gate and sft_coef must be >= 0, got {self}")


@dataclass(frozen=True)
class ReliftConfig:
    """ReLIFT's buffer of failed questions (``algorithm.schedule: relift``).

    Attributes:
        buffer_size: an SFT update on the buffered teacher traces runs once the buffer holds
            this many questions; the buffer then empties.
        preset: the loss of that update (an offline-only preset).
    """

    buffer_size: int = 32
    preset: str = "sft"

    def __post_init__(self) -> None:
        if self.buffer_size < 1:
            raise ConfigError(f"algorithm.relift.buffer_size must be >= 1, got {self.buffer_size}")


SCHEDULES = ("plain", "hpt", "relift")


@dataclass(frozen=True)
class AlgorithmConfig:
    """The loss: a preset, optional overrides of its parts, and the regulator.

    The schedule is ``sft_warmup_steps`` steps of the ``sft`` preset (a cold start for a
    model that has never seen the answer format), then ``preset`` until
    ``trainer.total_steps``; ``stages`` replaces that with an explicit list. ``schedule``
    adds a per-step rule on top of the stages' presets: ``hpt`` (per-prompt SFT or GRPO)
    or ``relift`` (SFT updates on a buffer of failed questions); see
    ``nemo_red/training/schedules.py``.
    """

    preset: str = "red"
    advantage: str | None = None
    aggregation: str | None = None
    term_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    coefficient_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    kl_coef: float = 0.0
    regulator: RegulatorConfig = field(default_factory=RegulatorConfig)
    stages: list[StageConfig] = field(default_factory=list)
    sft_warmup_steps: int = 0
    dynamic_sampling: bool = False
    overlong_buffer: int = 0
    schedule: str = "plain"
    hpt: HPTConfig = field(default_factory=HPTConfig)
    relift: ReliftConfig = field(default_factory=ReliftConfig)

    def __post_init__(self) -> None:
        for name in [self.preset, *(s.preset for s in self.stages), self.relift.preset]:
            if name not in PRESETS:
                raise ConfigError(f"algorithm: unknown preset {name!r}; valid: {PRESETS.names()}")
        self._check_schedule()
        if self.advantage is not None and self.advantage not in ADVANTAGE_ESTIMATORS:
            raise ConfigError(
                f"algorithm.advantage {self.advantage!r} unknown; "
                f"valid: {ADVANTAGE_ESTIMATORS.names()}"
            )
        if self.aggregation is not None and self.aggregation not in AGGREGATIONS:
            raise ConfigError(
                f"algorithm.aggregation {self.aggregation!r} unknown; valid: {AGGREGATIONS.names()}"
            )

    def _check_schedule(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"algorithm.schedule {self.schedule!r} unknown; valid: {SCHEDULES}")
        specs = [PRESETS.get(n) for n in [self.preset, *(s.preset for s in self.stages)]]
        online = [s for s in specs if s.uses_online]
        if self.schedule != "plain" and not online:
            raise ConfigError(
                f"algorithm.schedule {self.schedule!r} needs a preset with online rollouts"
            )
        if self.schedule == "hpt" and any(s.uses_offline for s in online):
            raise ConfigError(
                "algorithm.schedule 'hpt' adds its own SFT term: its online presets must not "
                f"train on teacher traces (got {[s.name for s in online if s.uses_offline]})"
            )
        relift = PRESETS.get(self.relift.preset)
        if self.schedule == "relift" and (relift.uses_online or not relift.uses_offline):
            raise ConfigError(
                f"algorithm.relift.preset {relift.name!r} must train on teacher traces only"
            )


@dataclass(frozen=True)
class OptimSection:
    """AdamW and its schedule: the fields of ``nemo_red.training.optim.OptimConfig`` that a
    config sets (the trainer adds ``total_steps`` from the schedule of stages)."""

    lr: float = 2e-6
    min_lr: float = 0.0
    schedule: str = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    clip_grad: float = 1.0


@dataclass(frozen=True)
class TrainerConfig:
    """The loop: batch sizes, lengths of the run, checkpoints, evaluation, failure handling."""

    prompts_per_step: int = 64
    updates_per_step: int = 1
    total_steps: int = 500
    token_budget: int = 16384
    optim: OptimSection = field(default_factory=OptimSection)
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    eval_every: int = 50
    max_consecutive_skips: int = 5
    grader_workers: int = 2
    grader_timeout_s: float = 5.0
    think_split: bool = False
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.prompts_per_step < 1 or self.total_steps < 1 or self.updates_per_step < 1:
            raise ConfigError(
                "trainer: prompts_per_step, total_steps, updates_per_step must be >= 1"
            )
        if self.prompts_per_step % self.updates_per_step:
            raise ConfigError("trainer.updates_per_step must divide prompts_per_step")


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``nemo-red train`` needs."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    @property
    def output_dir(self) -> Path:
        return Path(self.run.output_dir)

    def __post_init__(self) -> None:
        optim, steps = self.trainer.optim, sum(s.steps for s in self.stages())
        if optim.schedule != "constant" and steps <= optim.warmup_steps:
            raise ConfigError(
                f"trainer.optim.schedule {optim.schedule!r} decays after the warm-up: the run's "
                f"{steps} steps must exceed trainer.optim.warmup_steps ({optim.warmup_steps})"
            )
        if (
            not self.algorithm.stages
            and self.algorithm.sft_warmup_steps >= self.trainer.total_steps
        ):
            raise ConfigError(
                f"algorithm.sft_warmup_steps ({self.algorithm.sft_warmup_steps}) must be below "
                f"trainer.total_steps ({self.trainer.total_steps})"
            )

    def stages(self) -> list[StageConfig]:
        """The stage schedule (see :class:`AlgorithmConfig`)."""
        algo = self.algorithm
        if algo.stages:
            return list(algo.stages)
        warmup = [StageConfig("sft", algo.sft_warmup_steps)] if algo.sft_warmup_steps else []
        return [*warmup, StageConfig(algo.preset, self.trainer.total_steps - algo.sft_warmup_steps)]


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Reads a YAML file (optional) and ``key=value`` overrides into a :class:`TrainConfig`.

    A YAML file may start from another one with ``defaults_from: other.yaml`` (a path
    relative to it); its own keys then override the other's.
    """
    layers = [OmegaConf.structured(TrainConfig)]
    if path is not None:
        layers += _yaml_layers(Path(path), seen=())
    layers.append(OmegaConf.from_dotlist(list(overrides)))
    try:
        merged = OmegaConf.merge(*layers)
        config = OmegaConf.to_object(merged)
    except ConfigKeyError as err:
        key = str(err.full_key) if getattr(err, "full_key", None) else str(err)
        section = key.rsplit(".", 1)[0] if "." in key else "top level"
        valid = _section_keys(section)
        raise ConfigError(
            f"{path or 'config'}: unknown key {key!r}; valid keys of {section}: {valid}"
        ) from None
    except OmegaConfBaseException as err:
        raise ConfigError(
            f"{path or 'config'}: {str(err).splitlines()[0]} (key {err.full_key})"
        ) from None
    # The schema is the structured TrainConfig, so to_object builds one.
    assert isinstance(config, TrainConfig)
    return config


def _yaml_layers(path: Path, seen: tuple[Path, ...]) -> list[Any]:
    """The YAML file's layers: those of its ``defaults_from`` file (relative to it) first."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: defaults_from forms a cycle")
    layer = OmegaConf.load(path)
    if not isinstance(layer, DictConfig):
        raise ConfigError(f"{path}: expected a mapping of config keys, got a list")
    base = layer.pop("defaults_from", None)
    if base is None:
        return [layer]
    return [*_yaml_layers(path.parent / str(base), (*seen, path.resolve())), layer]


def _section_keys(section: str) -> list[str]:
    """The keys of a config section (``"trainer.optim"``), from the schema's type hints."""
    node: Any = TrainConfig
    if section != "top level":
        for part in section.split("."):
            hint = typing.get_type_hints(node).get(part)
            candidates = [hint, *typing.get_args(hint)]
            node = next((c for c in candidates if dataclasses.is_dataclass(c)), None)
            if node is None:
                return []
    return [f.name for f in dataclasses.fields(node)]
