"""Configs: every shipped YAML loads; bad keys, types and values fail naming the key."""

from pathlib import Path

import pytest

from nemo_red.training.config import ConfigError, TrainConfig, load_config

CONF = Path(__file__).resolve().parents[2] / "examples" / "conf"


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_yaml_loads(path):
    config = load_config(path)
    assert isinstance(config, TrainConfig)
    assert sum(s.steps for s in config.stages()) >= 1


def test_baselines_differ_from_the_tiny_default_only_in_the_loss():
    tiny = load_config(CONF / "tiny_red.yaml")
    for path in CONF.glob("baseline_*.yaml"):
        config = load_config(path)
        assert config.algorithm.preset == path.stem.removeprefix("baseline_")
        assert config.trainer == tiny.trainer
        assert config.rollout == tiny.rollout
        assert config.data == tiny.data


def test_paper_config_has_the_paper_hyperparameters():
    config = load_config(CONF / "red_qwen2.5_math_1.5b.yaml")
    assert config.algorithm.preset == "red"
    assert config.rollout.n == 7
    assert config.rollout.temperature == 1.0
    assert config.trainer.optim.lr == 2e-6
    assert config.trainer.optim.schedule == "linear"
    assert (config.algorithm.regulator.clip_low, config.algorithm.regulator.clip_high) == (1, 8)
    assert config.algorithm.regulator.window == 1
    assert config.trainer.prompts_per_step * (config.rollout.n + 1) == 512
    assert (config.data.max_prompt_tokens, config.data.max_response_tokens) == (1024, 8192)


def test_overrides_and_interpolation():
    config = load_config(CONF / "tiny_red.yaml", ["run.name=abc", "rollout.n=2"])
    assert config.run.output_dir == "runs/abc"
    assert config.rollout.n == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["trainer.optim.lrate=1"],
            "unknown key 'trainer.optim.lrate'; valid keys of trainer.optim",
        ),
        (["bogus=1"], "valid keys of top level: ['run', 'model'"),
        (["trainer.total_steps=many"], "key trainer.total_steps"),
        (["algorithm.preset=ppo"], "unknown preset 'ppo'"),
        (["algorithm.advantage=gae"], "algorithm.advantage 'gae' unknown"),
        (["rollout.engine=sglang"], "rollout.engine must be"),
        (["trainer.updates_per_step=3"], "must divide prompts_per_step"),
        (["model.dtype=float16"], "model.dtype"),
        (["model.init_checkpoint=runs/base/checkpoints"], "model.init_checkpoint needs model.path"),
        (["trainer.total_steps=5", "algorithm.sft_warmup_steps=0"], "must exceed trainer.optim"),
        (["algorithm.sft_warmup_steps=500"], "must be below trainer.total_steps"),
    ],
)
def test_bad_configs(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(CONF / "tiny_red.yaml", overrides)
    assert message in str(err.value)


def test_defaults_from_cycles_and_missing_files(tmp_path):
    (tmp_path / "a.yaml").write_text("defaults_from: b.yaml\n")
    (tmp_path / "b.yaml").write_text("defaults_from: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_a_yaml_list_is_not_a_config(tmp_path):
    (tmp_path / "list.yaml").write_text("- rollout.n=2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(tmp_path / "list.yaml")
