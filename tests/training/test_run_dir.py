"""The run directory's record of starts and the config check on resume (no training)."""

import json

import pytest

from nemo_red.outputs import LockedError
from nemo_red.training.config import ConfigError, load_config
from nemo_red.training.run_dir import RunDirectory, config_changes, flatten_config
from tests.training.runs import TINY


def _config(tmp_path, *overrides):
    return load_config(TINY, [f"run.output_dir={tmp_path / 'run'}", *overrides])


def test_changes_name_each_differing_key_and_skip_cosmetic_ones(tmp_path):
    old = flatten_config(_config(tmp_path))
    new = flatten_config(_config(tmp_path, "algorithm.preset=grpo", "trainer.progress=false"))
    assert config_changes(old, new) == {"algorithm.preset": ("red", "grpo")}
    # a key an older version did not write counts only when it leaves today's default
    del old["trainer.optim.weight_decay"]
    assert "trainer.optim.weight_decay" not in config_changes(old, new)


def test_resuming_with_another_config_is_refused_unless_allowed(tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.open()
    try:
        run.record_start(_config(tmp_path), 0, {})
        changed = _config(tmp_path, "trainer.total_steps=300", "trainer.optim.lr=1e-3")
        with pytest.raises(ConfigError) as err:
            run.check_config(changed, resuming=True, allow_change=False)
        assert "trainer.optim.lr: 3e-05 -> 0.001" in str(err.value)
        assert "trainer.total_steps: 320 -> 300" in str(err.value)
        assert "--allow-config-change" in str(err.value)
        changes = run.check_config(changed, resuming=True, allow_change=True)
        assert set(changes) == {"trainer.total_steps", "trainer.optim.lr"}
        # a start from step 0 (no checkpoint) may change anything
        assert run.check_config(changed, resuming=False, allow_change=False) == changes
        run.record_start(changed, 150, changes)
        history = [json.loads(line) for line in (tmp_path / "run" / "config_history.jsonl").open()]
        assert [h["start_step"] for h in history] == [0, 150]
        assert history[1]["changed"]["trainer.total_steps"] == {"from": 320, "to": 300}
        assert history[1]["config"]["trainer"]["total_steps"] == 300
        assert "total_steps: 300" in (tmp_path / "run" / "config.yaml").read_text()
    finally:
        run.close()


def test_what_the_checkpoints_depend_on_cannot_change_even_when_allowed(tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.open()
    try:
        run.record_start(_config(tmp_path), 0, {})
        for override in ("model.tiny.num_layers=2", "data.arithmetic.max_value=5"):
            with pytest.raises(ConfigError, match="cannot change when resuming"):
                run.check_config(_config(tmp_path, override), resuming=True, allow_change=True)
        # checkpoints reshard: another layout is a change like any other
        with pytest.raises(ConfigError, match=r"parallel\.tp"):
            run.check_config(_config(tmp_path, "parallel.tp=2"), resuming=True, allow_change=False)
        changes = run.check_config(_config(tmp_path, "parallel.tp=2"), True, allow_change=True)
        assert "parallel.tp" in changes
    finally:
        run.close()


def test_a_run_directory_has_one_owner(tmp_path):
    first = RunDirectory(tmp_path / "run")
    first.open()
    try:
        with pytest.raises(LockedError, match="is in use"):
            RunDirectory(tmp_path / "run").open()
    finally:
        first.close()
    second = RunDirectory(tmp_path / "run")
    second.open()
    second.close()


def test_a_run_started_under_a_renamed_key_resumes_unchanged(tmp_path):
    # config.yaml of a run started when algorithm.step_rule was algorithm.schedule
    new = _config(tmp_path, "algorithm.preset=grpo", "algorithm.step_rule=hpt")
    old = flatten_config(new)
    old["algorithm.schedule"] = old.pop("algorithm.step_rule")
    assert config_changes(old, flatten_config(new)) == {}
    old["algorithm.schedule"] = "relift"
    assert config_changes(old, flatten_config(new)) == {"algorithm.step_rule": ("relift", "hpt")}
