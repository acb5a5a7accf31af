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
        (["trainer.updates_per_step=3"], "a divisor of prompts_per_step"),
        (["model.dtype=float16"], "model.dtype"),
        (["model.init_checkpoint=runs/base/checkpoints"], "model.init_checkpoint needs model.path"),
        (
            [
                "trainer.total_steps=5",
                "algorithm.sft_warmup_steps=0",
                "trainer.optim.schedule=cosine",
                "trainer.optim.warmup_steps=9",
            ],
            "must exceed trainer.optim.warmup_steps (9)",
        ),
        (
            ["algorithm.sft_warmup_optim.warmup_steps=270"],
            "algorithm.stages[0] (sft): schedule 'cosine' decays after the warm-up: its 270 steps",
        ),
        (["algorithm.sft_warmup_steps=500"], "must be below trainer.total_steps"),
        # every value is checked at load, naming its key (not at first use)
        (["trainer.checkpoint_every=0"], "trainer.checkpoint_every must be >= 1, got 0"),
        (["rollout.temperature=-1"], "rollout.temperature must be > 0, got -1"),
        (["trainer.optim.lr=-1e-5"], "trainer.optim.lr must be > 0, got -1e-05"),
        (["trainer.optim.min_lr=1"], "trainer.optim.min_lr must be in [0, lr="),
        (["trainer.optim.schedule=step"], "trainer.optim.schedule must be one of"),
        (["trainer.keep_checkpoints=1"], "trainer.keep_checkpoints must be >= 2"),
        (["trainer.eval_every=-1"], "trainer.eval_every must be >= 0"),
        (["trainer.token_budget=0"], "trainer.token_budget must be >= 1"),
        (["trainer.grader_timeout_s=0"], "trainer.grader_timeout_s must be > 0"),
        (["rollout.top_p=0"], "rollout.top_p must be in (0, 1]"),
        (["rollout.top_k=-2"], "rollout.top_k must be >= 0"),
        (["rollout.max_new_tokens=0"], "rollout.max_new_tokens must be >= 1"),
        (["rollout.eval_temperature=-0.5"], "rollout.eval_temperature must be >= 0"),
        (["model.tiny.num_heads=3"], "model.tiny.hidden_size must be a multiple of num_heads"),
        (["data.template=chatml"], "data.template must be one of"),
        (["data.layout=csv"], "data.layout must be one of"),
        (["data.max_prompt_tokens=0"], "data.max_prompt_tokens must be >= 1"),
        (["data.arithmetic.operators=+/"], "data.arithmetic.operators must be"),
        (["data.arithmetic.max_operands=1"], "data.arithmetic.max_operands must be >= min"),
        (["algorithm.regulator.window=0"], "algorithm.regulator.window must be >= 1"),
        (["algorithm.regulator.clip_high=0.5"], "algorithm.regulator.clip_high must be >="),
        (["algorithm.kl_coef=-0.1"], "algorithm.kl_coef must be >= 0"),
        (["algorithm.kl_coef=0.1"], "does not compute reference log-probs yet"),
        (["algorithm.overlong_buffer=32"], "algorithm.overlong_buffer must be below"),
        (["parallel.tp=0"], "parallel.tp must be >= 1"),
        (["parallel.sequence_parallel=true"], "sequence_parallel needs parallel.tp > 1"),
        (
            ["parallel.tp=2", "parallel.sequence_parallel=true"],
            "does not work with rollout.engine native",
        ),
        (["parallel.recompute=all"], "parallel.recompute must be one of"),
        (["parallel.recompute_method=block"], "applies to parallel.recompute full only"),
        (
            ["parallel.recompute=selective", "parallel.recompute_num_layers=2"],
            "parallel.recompute_num_layers applies to parallel.recompute full only",
        ),
        (
            ["parallel.recompute=full", "parallel.recompute_method=even"],
            "parallel.recompute_method must be one of",
        ),
        (
            ["parallel.recompute=full", "parallel.recompute_num_layers=0"],
            "parallel.recompute_num_layers must be >= 1",
        ),
        (
            ["parallel.pp=2", "parallel.recompute=full", "parallel.recompute_num_layers=3"],
            "recompute_num_layers must be <= the 2 layers of each pipeline chunk",
        ),
        (["parallel.virtual_pp=2"], "parallel.virtual_pp needs parallel.pp > 1"),
        (["parallel.pp=2", "parallel.virtual_pp=1"], "parallel.virtual_pp must be >= 2"),
        (
            ["parallel.pp=2", "parallel.virtual_pp=4"],
            "parallel.pp * parallel.virtual_pp = 8 must divide the 4 layers",
        ),
        (["parallel.pp=3"], "parallel.pp = 3 must divide the 4 layers of model.tiny"),
        (["parallel.overlap_param_gather=true"], "needs parallel.overlap_grad_reduce: true"),
        (["parallel.cp=2"], "unknown key 'parallel.cp'"),
        (["run.seed=-3"], "run.seed must be >= 0"),
        (["data.eval_sets={overall: x.jsonl}"], "data.eval_sets.overall"),
        (["data.eval_sets={'a b': x.jsonl}"], "data.eval_sets.a b"),
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


def test_parallel_features_become_megatron_transformer_config_fields():
    from nemo_red.training.config import ParallelConfig
    from nemo_red.training.parallel import transformer_config_kwargs

    assert transformer_config_kwargs(None) == {}
    assert transformer_config_kwargs(ParallelConfig()) == {"sequence_parallel": False}
    full = ParallelConfig(tp=2, pp=2, sequence_parallel=True, recompute="full", virtual_pp=2)
    assert transformer_config_kwargs(full) == {
        "sequence_parallel": True,
        "recompute_granularity": "full",
        "recompute_method": "uniform",  # the defaults of full
        "recompute_num_layers": 1,
        "virtual_pipeline_model_parallel_size": 2,
    }
    block = ParallelConfig(recompute="full", recompute_method="block", recompute_num_layers=3)
    assert transformer_config_kwargs(block)["recompute_method"] == "block"
    assert transformer_config_kwargs(block)["recompute_num_layers"] == 3
    selective = transformer_config_kwargs(ParallelConfig(recompute="selective"))
    assert selective == {"sequence_parallel": False, "recompute_granularity": "selective"}


def test_a_loaded_config_keeps_the_parallel_features():
    config = load_config(
        CONF / "tiny_red.yaml",
        [
            "parallel.tp=2",
            "parallel.pp=2",
            "parallel.virtual_pp=2",
            "parallel.sequence_parallel=true",
            "rollout.engine=hf",
            "parallel.recompute=full",
            "parallel.recompute_method=block",
            "parallel.recompute_num_layers=1",
            "parallel.overlap_grad_reduce=true",
            "parallel.overlap_param_gather=true",
        ],
    )
    parallel = config.parallel
    assert (parallel.model_chunks, parallel.recompute_method) == (2, "block")
    assert parallel.sequence_parallel
    assert parallel.overlap_param_gather
