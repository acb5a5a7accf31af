"""The README's "Extending nemo_red" recipes, each done once: a new rollout engine and a
new step rule, each one registration, run through ``nemo-red train`` in process."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from nemo_red.cli import main
from nemo_red.monitoring import names
from nemo_red.rollout.base import PolicyWeights, SamplingParams
from nemo_red.rollout.hf_engine import HFEngine
from nemo_red.rollout.registry import ENGINES, EngineInfo, EngineRequest
from nemo_red.training.step_rules import STEP_RULES, StepRule
from tests.training.runs import SHORT, TINY


def _train(run: Path, *overrides: str) -> list[dict]:
    args = ["train", "--config", str(TINY), f"run.output_dir={run}", *SHORT, *overrides]
    assert main(args) == 0
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


class RecordingEngine(HFEngine):
    """The hf engine, recording the calls the training loop makes."""

    calls: list[str]

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams):  # type: ignore[override]
        self.calls.append("generate")
        return super().generate(prompts, params)

    def update_weights(self, source) -> None:  # type: ignore[override]
        self.calls.append("update_weights")
        assert isinstance(source, PolicyWeights)  # the actor, as a weights provider
        super().update_weights(source)

    def sleep(self) -> None:
        self.calls.append("sleep")

    def wake(self) -> None:
        self.calls.append("wake")


@pytest.fixture
def recording_engine(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Registers the engine ``recording`` for this test; returns the calls it records."""
    calls: list[str] = []

    def build(request: EngineRequest) -> RecordingEngine:
        engine = RecordingEngine.from_config(request.hf_config, max_batch_size=4)
        engine.calls = calls
        assert request.policy is not None
        assert request.hf_dir is None
        engine.update_weights(request.policy)
        return engine

    info = EngineInfo("recording", build, holds_memory=True)
    monkeypatch.setitem(ENGINES._entries, "recording", info)
    return calls


@pytest.mark.slow
def test_a_new_engine_is_one_registration(tmp_path: Path, recording_engine: list[str]):
    rows = _train(tmp_path / "run", "rollout.engine=recording")
    assert [r["step"] for r in rows] == [1, 2, 3]
    # built and refit; the SFT step generates nothing; each RED step sleeps after its
    # rollouts and wakes before the refit
    red_step = ["generate", "sleep", "wake", "update_weights"]
    assert recording_engine == ["update_weights", "update_weights", *red_step, *red_step]


@pytest.mark.slow
def test_an_engine_can_be_kept_awake(tmp_path: Path, recording_engine: list[str]):
    _train(tmp_path / "run", "rollout.engine=recording", "rollout.sleep_while_training=false")
    assert "sleep" not in recording_engine
    assert "wake" not in recording_engine


@pytest.fixture
def correct_only_rule(monkeypatch: pytest.MonkeyPatch) -> type[StepRule]:
    class CorrectOnly(StepRule):
        """Trains only on the groups with at least one correct rollout (and all teacher
        traces): a rule that changes which items a step trains on."""

        name = "correct_only"

        def select(self, inputs, spec):
            if not spec.uses_online:
                return list(inputs), {}
            solved = [max(i.online_rewards, default=0.0) > 0.5 for i in inputs]
            chosen = [
                i if ok else replace(i, completions=[], online_rewards=[])
                for i, ok in zip(inputs, solved, strict=True)
            ]
            return chosen, {"correct_only/kept": sum(solved) / len(inputs)}

        def state_dict(self):
            return {"correct_only": {"seen": 1}}

    monkeypatch.setitem(STEP_RULES._entries, "correct_only", CorrectOnly)
    return CorrectOnly


@pytest.mark.slow
def test_a_new_step_rule_is_one_registration(tmp_path: Path, correct_only_rule):
    rows = _train(tmp_path / "run", "algorithm.step_rule=correct_only")
    assert "correct_only/kept" not in rows[0]  # the SFT step
    assert all(0.0 <= r["correct_only/kept"] <= 1.0 for r in rows[1:])
    assert all(names.H_SFT in r for r in rows)  # the teacher traces still train


def test_an_unknown_engine_or_rule_names_the_registered_ones(tmp_path: Path, capsys):
    assert main(["train", "--config", str(TINY), "rollout.engine=nope"]) == 2
    assert "['hf', 'native', 'trtllm', 'vllm']" in capsys.readouterr().err
    assert main(["train", "--config", str(TINY), "algorithm.step_rule=nope"]) == 2
    assert "['hpt', 'plain', 'relift']" in capsys.readouterr().err
