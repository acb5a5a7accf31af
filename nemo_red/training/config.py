"""The training configuration: YAML -> OmegaConf -> typed, frozen dataclasses, validated once.

``load_config(path, overrides)`` merges a YAML file (and ``key=value`` overrides) onto this
schema: an unknown key fails naming the valid keys of its section, a wrong type fails naming
the key, and cross-field checks run before any model is built. Defaults live only here.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from nemo_red.algorithms.advantages import ADVANTAGE_ESTIMATORS
from nemo_red.algorithms.aggregation import AGGREGATIONS
from nemo_red.algorithms.presets import PRESETS, LossSpec, TermSpec


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key."""


def _require(ok: bool, key: str, rule: str, value: Any) -> None:
    """Raises a :class:`ConfigError` naming ``key`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key} must be {rule}, got {value!r}")


def _at_least(section: str, minimum: float, **values: Any) -> None:
    for name, value in values.items():
        _require(value >= minimum, f"{section}.{name}", f">= {minimum}", value)


@dataclass(frozen=True)
class RunConfig:
    """Where outputs go and the run's seed."""

    name: str = "run"
    output_dir: str = "runs/${run.name}"
    seed: int = 1

    def __post_init__(self) -> None:
        _require(bool(self.name.strip()), "run.name", "a non-empty name", self.name)
        _require(bool(self.output_dir.strip()), "run.output_dir", "a path", self.output_dir)
        _require(self.seed >= 0, "run.seed", ">= 0", self.seed)


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

    def __post_init__(self) -> None:
        _at_least(
            "model.tiny",
            1,
            num_layers=self.num_layers,
            hidden_size=self.hidden_size,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings,
        )
        _require(
            self.hidden_size % self.num_heads == 0,
            "model.tiny.hidden_size",
            f"a multiple of num_heads ({self.num_heads})",
            self.hidden_size,
        )
        _require(
            self.num_heads % self.num_kv_heads == 0,
            "model.tiny.num_heads",
            f"a multiple of num_kv_heads ({self.num_kv_heads})",
            self.num_heads,
        )
        _require(self.rope_theta > 0, "model.tiny.rope_theta", "> 0", self.rope_theta)


@dataclass(frozen=True)
class ModelConfig:
    """The policy: a HF or megatron (``nemo-red convert``) directory, or a tiny model.

    Attributes:
        path: HF directory of a supported family (Qwen2, Qwen3, Llama) or megatron
            directory; null builds ``tiny`` (a Qwen2) from scratch with a tokenizer trained on
            the training data.
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

    def __post_init__(self) -> None:
        from nemo_red.data.arithmetic import OPERATORS

        key = "data.arithmetic"
        _at_least(key, 1, train_size=self.train_size, test_size=self.test_size)
        _at_least(key, 1, min_operands=self.min_operands, max_value=self.max_value)
        _require(
            self.max_operands >= self.min_operands,
            f"{key}.max_operands",
            f">= min_operands ({self.min_operands})",
            self.max_operands,
        )
        ops = self.operators
        _require(
            bool(ops) and not set(ops) - set(OPERATORS) and len(set(ops)) == len(ops),
            f"{key}.operators",
            f"distinct characters of {OPERATORS!r}",
            ops,
        )


@dataclass(frozen=True)
class DataConfig:
    """Training and evaluation problems, prompt template and length limits.

    With ``train_path`` null the generated arithmetic task (``arithmetic``) is written into
    the run directory and used for training and evaluation. Evaluation during training uses
    the first ``eval_limit`` problems of ``eval_path`` and of each benchmark named in
    ``eval_benchmarks`` (found in ``benchmark_dir``, default ``$NEMO_RED_BENCHMARK_DATA`` or
    ``data/benchmarks``; see ``nemo-red eval``), and the first ``eval_limit`` problems of each
    file in ``eval_sets`` (name -> path, in ``eval_layout``), logged as ``eval/<name>/...``
    (e.g. a validation split, or the parts of a test set scored apart).
    """

    train_path: str | None = None
    eval_path: str | None = None
    layout: str = "auto"
    fields: dict[str, str] | None = None
    eval_layout: str = "auto"
    eval_limit: int = 64
    eval_benchmarks: list[str] = field(default_factory=list)
    eval_sets: dict[str, str] = field(default_factory=dict)
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
        from nemo_red.data.layouts import LAYOUT_NAMES
        from nemo_red.data.templates import TEMPLATES

        _require(
            self.on_bad_row in ("error", "skip"),
            "data.on_bad_row",
            "error or skip",
            self.on_bad_row,
        )
        for key, layout in (("layout", self.layout), ("eval_layout", self.eval_layout)):
            _require(
                layout in ("auto", *LAYOUT_NAMES),
                f"data.{key}",
                f"one of {['auto', *LAYOUT_NAMES]}",
                layout,
            )
        _require(
            self.template in TEMPLATES, "data.template", f"one of {list(TEMPLATES)}", self.template
        )
        _at_least(
            "data",
            1,
            eval_limit=self.eval_limit,
            max_prompt_tokens=self.max_prompt_tokens,
            max_response_tokens=self.max_response_tokens,
        )
        for name in self.eval_sets:
            _require(
                re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) is not None
                and name not in ("overall", *self.eval_benchmarks),
                f"data.eval_sets.{name}",
                "a name of letters, digits, '_', '.', '-' that is not 'overall' or a benchmark",
                name,
            )
        if self.eval_path is not None and self.train_path is None:
            raise ConfigError(
                "data.eval_path needs data.train_path (without it the generated task's own "
                "test split is evaluated)"
            )


RECOMPUTE_GRANULARITIES = ("none", "selective", "full")
RECOMPUTE_METHODS = ("uniform", "block")


@dataclass(frozen=True)
class ParallelConfig:
    """The parallel layout and megatron's memory-saving features.

    Data parallel takes the rest of the world: world / (tp * pp). Context parallelism is
    not offered: megatron runs it only through Transformer Engine's attention, and the
    actor's attention is the local spec's (SDPA over packed rows, see
    ``nemo_red/models/sdpa_attention.py``).

    Attributes:
        tp: tensor-parallel size.
        pp: pipeline-parallel size.
        sequence_parallel: split the activations outside attention and MLP along the
            sequence over the tensor-parallel ranks (needs tp > 1).
        recompute: activation recomputation: ``none``, ``selective`` (the core attention
            of every layer) or ``full`` (whole layers, see ``recompute_method``).
        recompute_method: with ``full``: ``uniform`` (the layers of each stage in groups
            of ``recompute_num_layers``, only each group's input kept) or ``block`` (the
            first ``recompute_num_layers`` layers of each stage); default uniform.
        recompute_num_layers: with ``full``: the group size (uniform) or the number of
            recomputed layers per stage (block); default 1.
        virtual_pp: model chunks per pipeline stage for the interleaved 1F1B schedule
            (null: plain 1F1B); needs pp > 1 and the layers divisible by pp * virtual_pp.
        overlap_grad_reduce: reduce-scatter gradients bucket by bucket during the
            backward pass of the last micro-batch instead of after it.
        overlap_param_gather: all-gather the updated weights of the distributed
            optimizer bucket by bucket during the next forward pass instead of after the
            step (needs overlap_grad_reduce).
    """

    tp: int = 1
    pp: int = 1
    sequence_parallel: bool = False
    recompute: str = "none"
    recompute_method: str | None = None
    recompute_num_layers: int | None = None
    virtual_pp: int | None = None
    overlap_grad_reduce: bool = False
    overlap_param_gather: bool = False

    def __post_init__(self) -> None:
        _at_least("parallel", 1, tp=self.tp, pp=self.pp)
        if self.sequence_parallel and self.tp == 1:
            raise ConfigError("parallel.sequence_parallel needs parallel.tp > 1, got tp = 1")
        _require(
            self.recompute in RECOMPUTE_GRANULARITIES,
            "parallel.recompute",
            f"one of {list(RECOMPUTE_GRANULARITIES)}",
            self.recompute,
        )
        if self.recompute != "full":
            for key in ("recompute_method", "recompute_num_layers"):
                if getattr(self, key) is not None:
                    raise ConfigError(
                        f"parallel.{key} applies to parallel.recompute full only "
                        f"(recompute is {self.recompute!r}); remove it or set recompute: full"
                    )
        if self.recompute_method is not None:
            _require(
                self.recompute_method in RECOMPUTE_METHODS,
                "parallel.recompute_method",
                f"one of {list(RECOMPUTE_METHODS)}",
                self.recompute_method,
            )
        if self.recompute_num_layers is not None:
            _at_least("parallel", 1, recompute_num_layers=self.recompute_num_layers)
        if self.virtual_pp is not None:
            _require(self.virtual_pp >= 2, "parallel.virtual_pp", ">= 2 (or null)", self.virtual_pp)
            if self.pp == 1:
                raise ConfigError("parallel.virtual_pp needs parallel.pp > 1, got pp = 1")
        if self.overlap_param_gather and not self.overlap_grad_reduce:
            raise ConfigError(
                "parallel.overlap_param_gather needs parallel.overlap_grad_reduce: true "
                "(megatron dispatches the weight all-gathers from the gradient buckets)"
            )

    @property
    def model_chunks(self) -> int:
        """Model chunks per pipeline stage (1 without a virtual pipeline)."""
        return self.virtual_pp or 1

    def check_layers(self, num_layers: int, source: str) -> None:
        """Raises a :class:`ConfigError` when ``num_layers`` layers (of ``source``) cannot
        be split over the pipeline's chunks or recomputed as asked."""
        chunks = self.pp * self.model_chunks
        if num_layers % chunks:
            what = "parallel.pp * parallel.virtual_pp" if self.virtual_pp else "parallel.pp"
            raise ConfigError(f"{what} = {chunks} must divide the {num_layers} layers of {source}")
        per_chunk = num_layers // chunks
        if self.recompute_num_layers is not None and self.recompute_num_layers > per_chunk:
            raise ConfigError(
                f"parallel.recompute_num_layers must be <= the {per_chunk} layers of each "
                f"pipeline chunk of {source}, got {self.recompute_num_layers}"
            )


@dataclass(frozen=True)
class RolloutConfig:
    """How online responses are sampled (G = ``n`` per prompt).

    ``engine`` names a registered engine (``nemo_red/rollout/registry.py``). With
    ``sleep_while_training``, an engine that keeps its own weights on the device (hf,
    vLLM, TensorRT-LLM) sleeps from the end of a step's rollouts until its refit, freeing
    that memory for the update; an engine that shares the actor's weights (native) does
    not, and on CPU sleeping frees nothing.
    """

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
    sleep_while_training: bool = True

    def __post_init__(self) -> None:
        from nemo_red.rollout.registry import engine_names

        engines = engine_names()
        _require(self.engine in engines, "rollout.engine", f"one of {engines}", self.engine)
        _at_least(
            "rollout",
            1,
            n=self.n,
            eval_n=self.eval_n,
            max_new_tokens=self.max_new_tokens,
            max_batch_size=self.max_batch_size,
        )
        _require(self.temperature > 0, "rollout.temperature", "> 0", self.temperature)
        _at_least("rollout", 0, eval_temperature=self.eval_temperature, top_k=self.top_k)
        _require(0 < self.top_p <= 1, "rollout.top_p", "in (0, 1]", self.top_p)
        if self.eval_max_new_tokens is not None:
            _at_least("rollout", 1, eval_max_new_tokens=self.eval_max_new_tokens)


@dataclass(frozen=True)
class RegulatorConfig:
    """Entropy regulator: window k and clip range of w (clip_high null = G)."""

    window: int = 1
    clip_low: float = 1.0
    clip_high: float | None = None

    def __post_init__(self) -> None:
        _at_least("algorithm.regulator", 1, window=self.window)
        _at_least("algorithm.regulator", 0, clip_low=self.clip_low)
        if self.clip_high is not None:
            _require(
                self.clip_high >= self.clip_low,
                "algorithm.regulator.clip_high",
                f">= clip_low ({self.clip_low}) or null (= rollout.n)",
                self.clip_high,
            )


@dataclass(frozen=True)
class StageSchedule:
    """The learning-rate keys a stage may set for itself (the keys of a stage of
    ``algorithm.stages``, and ``algorithm.sft_warmup_optim``); what is left null comes from
    ``trainer.optim``. See :class:`StageConfig`."""

    lr: float | None = None
    min_lr: float | None = None
    schedule: str | None = None
    warmup_steps: int | None = None

    def overrides(self) -> dict[str, Any]:
        """The keys this schedule sets, with their values."""
        keys = (f.name for f in dataclasses.fields(StageSchedule))
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


@dataclass(frozen=True)
class StageConfig(StageSchedule):
    """One stage of a run: a loss preset for a number of steps, optionally with a learning-
    rate schedule of its own.

    Attributes:
        preset: the stage's loss preset.
        steps: its length in steps.
        lr, min_lr, schedule, warmup_steps: when any stage of a run sets one of these, every
            stage runs a schedule of its own over its own steps (warm-up from 0, then decay),
            taking from ``trainer.optim`` what it does not set; when none does, one schedule
            runs over the whole run.
        fresh_optimizer: start the stage with AdamW's moments and step counts at zero, as a
            new run would (the weights carry over). Carried moments of an SFT stage are
            sized by its gradients, so they damp the smaller RL gradients of the next stage.
    """

    preset: str = "red"
    steps: int = 1
    fresh_optimizer: bool = False

    def __post_init__(self) -> None:
        _at_least("algorithm.stages[]", 1, steps=self.steps)

    @property
    def sets_optim(self) -> bool:
        """Whether this stage sets any key of its learning-rate schedule."""
        return bool(self.overrides())

    def optim(self, base: OptimSection) -> OptimSection:
        """``base`` (the run's ``trainer.optim``) with this stage's schedule keys."""
        try:
            return dataclasses.replace(base, **self.overrides())
        except ConfigError as err:
            raise ConfigError(f"algorithm.stages[] (preset {self.preset!r}): {err}") from None


@dataclass(frozen=True)
class HPTConfig:
    """HPT's per-prompt switch (``algorithm.step_rule: hpt``, see ``training/step_rules.py``).

    Attributes:
        gate: a prompt with at most this many correct online rollouts trains on its teacher
            trace (SFT) instead of its rollouts.
        sft_coef: the coefficient of the NLL term on those teacher traces.
    """

    gate: int = 0
    sft_coef: float = 0.3

    def __post_init__(self) -> None:
        _at_least("algorithm.hpt", 0, gate=self.gate, sft_coef=self.sft_coef)


@dataclass(frozen=True)
class ReliftConfig:
    """ReLIFT's buffer of failed questions (``algorithm.step_rule: relift``).

    Attributes:
        buffer_size: an SFT update on the buffered teacher traces runs once the buffer holds
            this many questions; the buffer then empties.
        preset: the loss of that update (an offline-only preset).
    """

    buffer_size: int = 32
    preset: str = "sft"

    def __post_init__(self) -> None:
        _at_least("algorithm.relift", 1, buffer_size=self.buffer_size)


@dataclass(frozen=True)
class AlgorithmConfig:
    """The loss: a preset, optional overrides of its parts, and the regulator.

    The stages are ``sft_warmup_steps`` steps of the ``sft`` preset (a cold start for a
    model that has never seen the answer format; ``sft_warmup_optim`` may give it a
    learning-rate schedule of its own, see :class:`StageConfig`), then ``preset`` until
    ``trainer.total_steps``; ``stages`` replaces that with an explicit list. ``step_rule``
    says how a step of a stage with rollouts uses them: ``plain``, ``hpt`` (per-prompt SFT
    or GRPO) or ``relift`` (SFT updates on a buffer of failed questions); see
    ``nemo_red/training/step_rules.py``. (``step_rule`` was called ``schedule`` before; that
    key is still read.)
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
    sft_warmup_optim: StageSchedule = field(default_factory=StageSchedule)
    dynamic_sampling: bool = False
    overlong_buffer: int = 0
    step_rule: str = "plain"
    hpt: HPTConfig = field(default_factory=HPTConfig)
    relift: ReliftConfig = field(default_factory=ReliftConfig)

    def __post_init__(self) -> None:
        for name in [self.preset, *(s.preset for s in self.stages), self.relift.preset]:
            if name not in PRESETS:
                raise ConfigError(f"algorithm: unknown preset {name!r}; valid: {PRESETS.names()}")
        self._check_step_rule()
        if self.advantage is not None and self.advantage not in ADVANTAGE_ESTIMATORS:
            raise ConfigError(
                f"algorithm.advantage {self.advantage!r} unknown; "
                f"valid: {ADVANTAGE_ESTIMATORS.names()}"
            )
        if self.aggregation is not None and self.aggregation not in AGGREGATIONS:
            raise ConfigError(
                f"algorithm.aggregation {self.aggregation!r} unknown; valid: {AGGREGATIONS.names()}"
            )
        _at_least(
            "algorithm",
            0,
            kl_coef=self.kl_coef,
            sft_warmup_steps=self.sft_warmup_steps,
            overlong_buffer=self.overlong_buffer,
        )
        self._check_term_params()
        needs_reference = [
            n for n in self.presets_used() if "ref_logprobs" in self.loss_spec(n).needs
        ]
        if needs_reference:
            raise ConfigError(
                f"algorithm: the loss of {needs_reference} has a KL term to a reference policy "
                "(algorithm.kl_coef > 0), and training does not compute reference log-probs "
                "yet; set algorithm.kl_coef=0 (RED and LUFFY use no KL term)"
            )

    def presets_used(self) -> list[str]:
        """Every preset a step of this algorithm may train with (SFT warm-up included)."""
        names = [self.preset, *(s.preset for s in self.stages)]
        if self.sft_warmup_steps and not self.stages:
            names.append("sft")
        if self.step_rule == "relift":
            names.append(self.relift.preset)
        return list(dict.fromkeys(names))

    def _check_term_params(self) -> None:
        """Each overridden term exists in some preset used, and its params are valid."""
        for section, overrides in (
            ("term_params", self.term_params),
            ("coefficient_params", self.coefficient_params),
        ):
            for term in overrides:
                used = [p for p in self.presets_used() if term in PRESETS.get(p).term_names]
                if not used:
                    raise ConfigError(
                        f"algorithm.{section}.{term}: no preset of this run has a term "
                        f"{term!r} (presets {self.presets_used()})"
                    )
        for preset in self.presets_used():
            try:
                self.loss_spec(preset)
            except (ValueError, KeyError) as err:
                raise ConfigError(f"algorithm (preset {preset!r}): {err}") from None

    def loss_spec(self, preset: str) -> LossSpec:
        """The preset with this config's overrides (advantage, aggregation, params, KL)."""
        spec = PRESETS.get(preset)
        changes: dict[str, Any] = {}
        if self.advantage is not None:
            changes["advantage"] = self.advantage
        if self.aggregation is not None:
            changes["aggregation"] = self.aggregation
        if changes:
            spec = dataclasses.replace(spec, **changes)
        for term, params in self.term_params.items():
            if term in spec.term_names:
                spec = spec.with_term(term, params=dict(params))
        for term, params in self.coefficient_params.items():
            if term in spec.term_names:
                spec = spec.with_term(term, coefficient_params=dict(params))
        if self.kl_coef > 0:
            spec = spec.with_extra_term(
                TermSpec("kl_k3", "online", coefficient_params={"value": self.kl_coef})
            )
        return spec

    def _check_step_rule(self) -> None:
        from nemo_red.training.step_rules import STEP_RULES

        if self.step_rule not in STEP_RULES:
            raise ConfigError(
                f"algorithm.step_rule must be one of {STEP_RULES.names()}, got {self.step_rule!r}"
            )
        specs = [PRESETS.get(n) for n in [self.preset, *(s.preset for s in self.stages)]]
        online = [s for s in specs if s.uses_online]
        if self.step_rule != "plain" and not online:
            raise ConfigError(
                f"algorithm.step_rule {self.step_rule!r} needs a preset with online rollouts"
            )
        why = STEP_RULES.get(self.step_rule).check(self, online)
        if why is not None:
            raise ConfigError(f"algorithm.step_rule {self.step_rule!r}: {why}")


LR_SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class OptimSection:
    """AdamW and its learning-rate schedule; the one place their defaults live (the actor's
    ``nemo_red.training.optim.OptimConfig`` adds the schedule's length).

    Attributes:
        lr: peak learning rate (paper RL: 2e-6).
        min_lr: learning rate at the end of a linear or cosine decay.
        schedule: "constant", "linear" or "cosine" (after warm-up).
        warmup_steps: linear warm-up from 0 to ``lr``.
        weight_decay, adam_beta1, adam_beta2, adam_eps: AdamW.
        clip_grad: max global grad norm (0 disables clipping).
    """

    lr: float = 2e-6
    min_lr: float = 0.0
    schedule: str = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    clip_grad: float = 1.0

    def __post_init__(self) -> None:
        key = "trainer.optim"
        _require(self.lr > 0, f"{key}.lr", "> 0", self.lr)
        _require(0 <= self.min_lr <= self.lr, f"{key}.min_lr", f"in [0, lr={self.lr}]", self.min_lr)
        _require(
            self.schedule in LR_SCHEDULES,
            f"{key}.schedule",
            f"one of {list(LR_SCHEDULES)}",
            self.schedule,
        )
        _at_least(key, 0, warmup_steps=self.warmup_steps, weight_decay=self.weight_decay)
        for name in ("adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            _require(0 <= value < 1, f"{key}.{name}", "in [0, 1)", value)
        _require(self.adam_eps > 0, f"{key}.adam_eps", "> 0", self.adam_eps)
        _require(self.clip_grad >= 0, f"{key}.clip_grad", ">= 0 (0: no clipping)", self.clip_grad)


DEFAULT_LOGGERS = ("jsonl", "tensorboard")
WANDB_MODES = ("online", "offline", "disabled")


@dataclass(frozen=True)
class WandbSection:
    """The ``wandb`` logger (``nemo_red/monitoring/wandb_logger.py``). A null field leaves
    the choice to W&B's environment variable: ``WANDB_PROJECT`` (else ``nemo-red``),
    ``WANDB_ENTITY``, ``WANDB_NAME`` (else ``run.name``), ``WANDB_RUN_GROUP``,
    ``WANDB_TAGS``, ``WANDB_MODE`` (online, offline, disabled)."""

    project: str | None = None
    entity: str | None = None
    name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    mode: str | None = None

    def __post_init__(self) -> None:
        if self.mode is not None:
            _require(
                self.mode in WANDB_MODES,
                "trainer.wandb.mode",
                f"one of {list(WANDB_MODES)} or null (WANDB_MODE)",
                self.mode,
            )


@dataclass(frozen=True)
class MlflowSection:
    """The ``mlflow`` logger (``nemo_red/monitoring/mlflow_logger.py``). Null fields:
    ``tracking_uri`` from ``MLFLOW_TRACKING_URI``, else ``sqlite:///<run dir>/mlflow.db``;
    ``experiment`` from ``MLFLOW_EXPERIMENT_NAME``, else ``nemo-red``; ``run_name`` is
    ``run.name``."""

    tracking_uri: str | None = None
    experiment: str | None = None
    run_name: str | None = None


def _check_loggers(loggers: Sequence[str]) -> None:
    """``trainer.loggers``: registered names, each once, ``jsonl`` among them."""
    from nemo_red.monitoring.loggers import logger_names

    known = logger_names()
    unknown = [name for name in loggers if name not in known]
    if unknown:
        raise ConfigError(f"trainer.loggers: unknown loggers {unknown}; valid names: {known}")
    _require(
        len(set(loggers)) == len(loggers), "trainer.loggers", "names given once", list(loggers)
    )
    _require(
        "jsonl" in loggers,
        "trainer.loggers",
        "a list with jsonl (metrics.jsonl is the run's record: plots, compare, resume)",
        list(loggers),
    )


def check_logger_packages(config: TrainConfig) -> None:
    """Raises a :class:`ConfigError` naming the pip extra when a logger of
    ``trainer.loggers`` lacks its packages (``load_config`` checks this unless told not to).
    """
    from nemo_red.monitoring.loggers import logger_info, missing_modules

    for name in config.trainer.loggers:
        missing = missing_modules(name)
        if missing:
            extra = logger_info(name).extra
            hint = f"pip install 'nemo_red[{extra}]'" if extra else f"pip install {missing[0]}"
            raise ConfigError(
                f"trainer.loggers: the {name} logger needs {', '.join(missing)}, which is not "
                f"installed: {hint}"
            )


@dataclass(frozen=True)
class TrainerConfig:
    """The loop: batch sizes, lengths of the run, checkpoints, evaluation, failure handling,
    and the loggers of its metrics (``trainer.loggers``: ``jsonl`` (``metrics.jsonl``,
    required), ``tensorboard``, ``wandb``, ``mlflow``; see ``nemo_red/monitoring/loggers.py``).
    """

    prompts_per_step: int = 64
    updates_per_step: int = 1
    total_steps: int = 500
    token_budget: int = 16384
    optim: OptimSection = field(default_factory=OptimSection)
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    async_save: bool = False
    eval_every: int = 50
    eval_at_start: bool = True
    max_consecutive_skips: int = 5
    grader_workers: int = 2
    grader_timeout_s: float = 5.0
    think_split: bool = False
    loggers: list[str] = field(default_factory=lambda: list(DEFAULT_LOGGERS))
    wandb: WandbSection = field(default_factory=WandbSection)
    mlflow: MlflowSection = field(default_factory=MlflowSection)
    progress: bool = True

    def __post_init__(self) -> None:
        _at_least(
            "trainer",
            1,
            prompts_per_step=self.prompts_per_step,
            updates_per_step=self.updates_per_step,
            total_steps=self.total_steps,
            token_budget=self.token_budget,
            checkpoint_every=self.checkpoint_every,
            grader_workers=self.grader_workers,
        )
        _require(
            self.keep_checkpoints >= 2,
            "trainer.keep_checkpoints",
            ">= 2 (a damaged newest checkpoint falls back to the one before)",
            self.keep_checkpoints,
        )
        _at_least(
            "trainer",
            0,
            eval_every=self.eval_every,
            max_consecutive_skips=self.max_consecutive_skips,
        )
        _require(
            self.grader_timeout_s > 0, "trainer.grader_timeout_s", "> 0", self.grader_timeout_s
        )
        _require(
            self.prompts_per_step % self.updates_per_step == 0,
            "trainer.updates_per_step",
            f"a divisor of prompts_per_step ({self.prompts_per_step})",
            self.updates_per_step,
        )
        _check_loggers(self.loggers)


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
        algo, rollout = self.algorithm, self.rollout
        parallel = self.parallel
        if parallel.sequence_parallel and rollout.engine == "native":
            raise ConfigError(
                "parallel.sequence_parallel does not work with rollout.engine native: the "
                "native engine decodes one token at a time through the actor's own model, "
                "which sequence parallelism cannot split over the tensor-parallel ranks; "
                "use rollout.engine hf, vllm or trtllm"
            )
        if self.model.path is None:
            parallel.check_layers(self.model.tiny.num_layers, "model.tiny.num_layers")
        _require(
            algo.overlong_buffer < rollout.max_new_tokens,
            "algorithm.overlong_buffer",
            f"below rollout.max_new_tokens ({rollout.max_new_tokens})",
            algo.overlong_buffer,
        )
        if (
            not self.algorithm.stages
            and self.algorithm.sft_warmup_steps >= self.trainer.total_steps
        ):
            raise ConfigError(
                f"algorithm.sft_warmup_steps ({self.algorithm.sft_warmup_steps}) must be below "
                f"trainer.total_steps ({self.trainer.total_steps})"
            )
        for what, steps, optim in self.lr_segments():
            if optim.schedule != "constant" and steps <= optim.warmup_steps:
                key = "trainer.optim.warmup_steps" if what == "trainer.optim" else "warmup_steps"
                raise ConfigError(
                    f"{what}: schedule {optim.schedule!r} decays after the warm-up: its "
                    f"{steps} steps must exceed {key} ({optim.warmup_steps})"
                )

    @property
    def per_stage_lr(self) -> bool:
        """Whether the stages run learning-rate schedules of their own."""
        return any(stage.sets_optim for stage in self.stages())

    def lr_segments(self) -> list[tuple[str, int, OptimSection]]:
        """``(where, steps, schedule)`` of each learning-rate schedule of the run, in order:
        one over the whole run, or one per stage when a stage sets its own (see
        :class:`StageConfig`)."""
        stages, base = self.stages(), self.trainer.optim
        if not self.per_stage_lr:
            return [("trainer.optim", sum(s.steps for s in stages), base)]
        return [
            (f"algorithm.stages[{i}] ({stage.preset})", stage.steps, stage.optim(base))
            for i, stage in enumerate(stages)
        ]

    def stages(self) -> list[StageConfig]:
        """The stage schedule (see :class:`AlgorithmConfig`)."""
        algo = self.algorithm
        if algo.stages:
            return list(algo.stages)
        schedule = algo.sft_warmup_optim.overrides()
        warmup = (
            [StageConfig(preset="sft", steps=algo.sft_warmup_steps, **schedule)]
            if algo.sft_warmup_steps
            else []
        )
        rest = self.trainer.total_steps - algo.sft_warmup_steps
        return [*warmup, StageConfig(preset=algo.preset, steps=rest)]


def load_config(
    path: str | Path | None, overrides: Sequence[str] = (), for_training: bool = True
) -> TrainConfig:
    """Reads a YAML file (optional) and ``key=value`` overrides into a :class:`TrainConfig`.

    A YAML file may start from another one with ``defaults_from: other.yaml`` (a path
    relative to it); its own keys then override the other's. ``for_training``: also check
    that the packages of the configured loggers are installed (a run's config read for
    another purpose, such as evaluating it, does not need them).
    """
    layers = [OmegaConf.structured(TrainConfig)]
    if path is not None:
        layers += _yaml_layers(Path(path), seen=())
    layers.append(OmegaConf.from_dotlist([_renamed_override(o) for o in overrides]))
    for layer in layers[1:]:
        _rename_keys(layer)
    _tensorboard_flag(layers[1:])
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
    if for_training:
        check_logger_packages(config)
    return config


# keys that were renamed: old dotted key -> new (configs and run directories that use an
# old name keep working)
RENAMED_KEYS = {"algorithm.schedule": "algorithm.step_rule"}


def renamed_key(key: str) -> str:
    """Today's name of a dotted config key (the key itself unless it was renamed)."""
    return RENAMED_KEYS.get(key, key)


def _renamed_override(override: str) -> str:
    key, sep, value = override.partition("=")
    return renamed_key(key) + sep + value if sep else override


def _rename_keys(layer: DictConfig) -> None:
    """Moves the renamed keys of a config layer to their new names, in place."""
    for old, new in RENAMED_KEYS.items():
        section, _, leaf = old.rpartition(".")
        node = OmegaConf.select(layer, section) if section else layer
        if isinstance(node, DictConfig) and leaf in node:
            value = node.pop(leaf)
            OmegaConf.update(layer, new, value, merge=False)


def _tensorboard_flag(layers: list[Any]) -> None:
    """Reads the former ``trainer.tensorboard: bool`` into ``trainer.loggers`` (in place):
    false leaves ``tensorboard`` out of the loggers set so far, true adds it."""
    loggers = list(DEFAULT_LOGGERS)
    for layer in layers:
        trainer = layer.get("trainer") if isinstance(layer, DictConfig) else None
        if not isinstance(trainer, DictConfig):
            continue
        if isinstance(trainer.get("loggers"), ListConfig):
            loggers = list(trainer.loggers)
        if "tensorboard" in trainer:
            on = trainer.pop("tensorboard")
            loggers = [n for n in loggers if n != "tensorboard"]
            trainer.loggers = [*loggers, "tensorboard"] if on else loggers
            loggers = list(trainer.loggers)


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
