"""The engine registry: one list of engines for training, evaluation and config checks;
engines take HF-layout weights and know nothing of the trainer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import nemo_red.rollout as rollout_package
from nemo_red.algorithms import UnknownNameError
from nemo_red.rollout.base import hf_weights
from nemo_red.rollout.registry import (
    EngineRequest,
    build_engine,
    engine_info,
    engine_names,
)
from nemo_red.training.config import ConfigError, RolloutConfig


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_rollout_never_imports_the_trainer():
    folder = Path(rollout_package.__file__).parent
    offenders = {
        p.name: sorted(m for m in _imports(p) if m.startswith("nemo_red.training"))
        for p in folder.glob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_built_in_engines_and_what_they_need():
    assert engine_names() == ["hf", "native", "trtllm", "vllm"]
    assert engine_names(evaluation=True) == ["hf", "trtllm", "vllm"]  # native follows an actor
    assert engine_info("native").follows_policy
    assert engine_info("vllm").starts_from_hf_dir
    assert engine_info("vllm").holds_memory
    assert engine_info("trtllm").holds_memory
    assert engine_info("hf").holds_memory  # its own copy of the weights (moved off the GPU)
    assert not engine_info("native").holds_memory  # the actor's own weights


def test_config_validation_and_eval_use_the_registry():
    with pytest.raises(ConfigError, match=r"rollout.engine must be one of \['hf', 'native'"):
        RolloutConfig(engine="sglang")
    with pytest.raises(UnknownNameError, match="valid names: hf, native, trtllm, vllm"):
        engine_info("sglang")


def _request(**fields) -> EngineRequest:
    base = {
        "hf_config": {},
        "dtype": "float32",
        "device": "cpu",
        "seed": 0,
        "max_batch_size": 1,
        "max_model_len": 8,
    }
    return EngineRequest(**{**base, **fields})


def test_an_engine_gets_what_it_needs_or_a_clear_error():
    with pytest.raises(ValueError, match="'vllm' starts from a HF directory; none was given"):
        build_engine("vllm", _request())
    with pytest.raises(ValueError, match="'native' follows a training actor; none was given"):
        build_engine("native", _request())
    with pytest.raises(ValueError, match="needs a HF directory or a policy"):
        build_engine("hf", _request())


def test_weights_come_as_a_state_dict_or_from_a_provider():
    state = {"w": torch.ones(2)}

    class Provider:
        def hf_state_dict(self) -> dict[str, torch.Tensor]:
            return state

    assert hf_weights(state) == state
    assert hf_weights(Provider()) is state
    with pytest.raises(TypeError, match="HF state dict or a PolicyWeights provider, got int"):
        hf_weights(3)  # type: ignore[arg-type]


def test_two_engines_cannot_share_a_name_but_a_reloaded_module_registers_again():
    import importlib

    import nemo_red.rollout.trtllm_engine as trtllm_engine
    from nemo_red.rollout.registry import register_engine

    with pytest.raises(ValueError, match="rollout engine 'hf' is already registered"):
        register_engine("hf")(lambda request: None)
    importlib.reload(trtllm_engine)
    assert engine_info("trtllm").build is trtllm_engine._build
