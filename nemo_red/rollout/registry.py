"""The registry of rollout engines, shared by training, evaluation and config validation.

An engine is one module that registers a builder with :func:`register_engine`::

    @register_engine("my_engine", starts_from_hf_dir=True, holds_memory=True)
    def build(request: EngineRequest) -> RolloutEngine:
        return MyEngine(request.hf_dir, dtype=request.dtype, max_model_len=request.max_model_len)

Built-in engines are the modules of this package whose names end in ``_engine``; engines of
other packages register through the ``nemo_red.rollout_engines`` entry-point group (the
entry point names the module). Modules are imported on the first lookup, so an engine's
heavy dependency (vLLM, TensorRT-LLM) must be imported inside its builder, not at module
level. Engines receive weights in the Hugging Face layout (a state dict, or a
:class:`~nemo_red.rollout.base.PolicyWeights` provider such as the training actor) and
never import the trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_red.algorithms.registry import Registry, import_plugins
from nemo_red.rollout.base import PolicyWeights, RolloutEngine

ENTRY_POINT_GROUP = "nemo_red.rollout_engines"


@dataclass(frozen=True)
class EngineRequest:
    """What a builder may use to build an engine.

    Attributes:
        hf_config: the policy's architecture as a HF ``config.json`` dict.
        hf_dir: a HF checkpoint directory with the weights to start from (set for engines
            registered with ``starts_from_hf_dir``, and for every evaluation).
        policy: the training actor, for engines that follow it (None in evaluation); an
            engine built from it must hold its current weights when built.
        dtype: "float32" or "bfloat16".
        device: "cpu" or "cuda".
        seed: the sampling seed of engines that take one at start.
        max_batch_size: completions decoded together (engines that batch by count).
        max_model_len: prompt + completion tokens.
        tensor_parallel_size: the engine's own tensor parallelism.
    """

    hf_config: dict[str, Any]
    dtype: str
    device: str
    seed: int
    max_batch_size: int
    max_model_len: int
    hf_dir: Path | None = None
    policy: PolicyWeights | None = None
    tensor_parallel_size: int = 1


@dataclass(frozen=True)
class EngineInfo:
    """A registered engine.

    Attributes:
        name: its config name (``rollout.engine``, ``nemo-red eval --engine``).
        build: the builder.
        starts_from_hf_dir: the builder reads ``request.hf_dir`` (training exports the
            actor into the run directory first).
        follows_policy: the builder needs ``request.policy`` (it shares the actor's weights,
            so it cannot evaluate a checkpoint on its own).
        holds_memory: the engine keeps its own weights and KV cache on the device, so
            training puts it to sleep while the actor updates (``rollout.sleep``).
    """

    name: str
    build: Callable[[EngineRequest], RolloutEngine] = field(repr=False)
    starts_from_hf_dir: bool = False
    follows_policy: bool = False
    holds_memory: bool = False


ENGINES: Registry[EngineInfo] = Registry("rollout engine")
_loaded = False


def register_engine(
    name: str,
    *,
    starts_from_hf_dir: bool = False,
    follows_policy: bool = False,
    holds_memory: bool = False,
) -> Callable[[Callable[[EngineRequest], RolloutEngine]], Callable[[EngineRequest], RolloutEngine]]:
    """Decorator registering a builder as the engine ``name`` (see :class:`EngineInfo`)."""

    def decorator(
        build: Callable[[EngineRequest], RolloutEngine],
    ) -> Callable[[EngineRequest], RolloutEngine]:
        info = EngineInfo(name, build, starts_from_hf_dir, follows_policy, holds_memory)
        ENGINES.add(name, info, replace=_same_builder(name, build))
        return build

    return decorator


def _same_builder(name: str, build: Callable[..., Any]) -> bool:
    """Whether ``name`` is registered to this very builder (its module was reloaded)."""
    if name not in ENGINES:
        return False
    old = ENGINES.get(name).build
    return (old.__module__, old.__qualname__) == (build.__module__, build.__qualname__)


def _load_engines() -> None:
    """Imports the built-in engine modules and the entry points' modules, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import nemo_red.rollout as package

    import_plugins(package, lambda name: name.endswith("_engine"), ENTRY_POINT_GROUP)


def engine_info(name: str) -> EngineInfo:
    """The engine registered as ``name`` (``UnknownNameError`` lists the valid names)."""
    _load_engines()
    return ENGINES.get(name)


def engine_names(evaluation: bool = False) -> list[str]:
    """Registered engine names; with ``evaluation``, those that can run a checkpoint alone."""
    _load_engines()
    return [n for n in ENGINES.names() if not (evaluation and ENGINES.get(n).follows_policy)]


def build_engine(name: str, request: EngineRequest) -> RolloutEngine:
    """Builds the engine ``name`` for ``request``, checking what the engine needs."""
    info = engine_info(name)
    if info.starts_from_hf_dir and request.hf_dir is None:
        raise ValueError(f"rollout engine {name!r} starts from a HF directory; none was given")
    if info.follows_policy and request.policy is None:
        raise ValueError(f"rollout engine {name!r} follows a training actor; none was given")
    return info.build(request)
