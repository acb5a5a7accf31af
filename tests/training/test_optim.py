"""Learning-rate schedules by hand, their validation, and megatron's scheduler setting them."""

import math
from types import SimpleNamespace

import pytest

from nemo_red.training.optim import OptimConfig


def test_constant_with_warmup():
    cfg = OptimConfig(schedule="constant", lr=1.0, warmup_steps=4)
    assert [cfg.lr_at(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_linear_decay():
    cfg = OptimConfig(lr=1.0, min_lr=0.2, schedule="linear", warmup_steps=2, total_steps=6)
    got = [cfg.lr_at(s) for s in range(8)]
    assert got == pytest.approx([0.5, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.2])


def test_cosine_decay():
    cfg = OptimConfig(lr=1.0, min_lr=0.0, schedule="cosine", total_steps=4)
    got = [cfg.lr_at(s) for s in range(5)]
    assert got == pytest.approx(
        [1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2, 0.0]
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"schedule": "step"}, "schedule must be one of"),
        ({"schedule": "cosine", "total_steps": 0}, "total_steps > warmup_steps"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"lr": 1e-3, "min_lr": 1e-2}, "min_lr must be in \\[0, lr=0.001\\]"),
        ({"adam_beta2": 1.0}, "adam_beta2 must be in \\[0, 1\\)"),
        ({"adam_eps": 0.0}, "adam_eps must be > 0"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OptimConfig(**{"schedule": "constant", **kwargs})


def test_the_optimizer_takes_its_defaults_from_the_config_schema():
    from nemo_red.training.config import OptimSection

    section, optim = OptimSection(), OptimConfig(total_steps=10)
    assert {f: getattr(optim, f) for f in section.__dataclass_fields__} == section.__dict__
    assert optim.betas == (section.adam_beta1, section.adam_beta2)
    assert optim.eps == section.adam_eps


def _groups() -> SimpleNamespace:
    return SimpleNamespace(param_groups=[{"wd_mult": 1.0}, {"lr_mult": 0.5, "wd_mult": 0.0}, {}])


@pytest.mark.parametrize(
    "cfg",
    [
        OptimConfig(schedule="constant", lr=1.0, warmup_steps=4),
        OptimConfig(lr=1.0, min_lr=0.2, schedule="linear", warmup_steps=2, total_steps=6),
        OptimConfig(lr=1.0, min_lr=0.0, schedule="cosine", total_steps=4),
    ],
)
def test_megatron_scheduler_sets_the_schedule_and_group_multipliers(cfg):
    # the learning rates of a run are those of lr_at, step by step, as before the scheduler
    from nemo_red.training.optim import build_scheduler

    optimizer = _groups()
    scheduler = build_scheduler(optimizer, OptimConfig(**{**cfg.__dict__, "weight_decay": 0.1}))
    for step in range(8):
        assert scheduler.num_steps == step
        assert [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [
            (cfg.lr_at(step), 0.1),
            (0.5 * cfg.lr_at(step), 0.0),  # biases and norm weights: wd_mult 0
            (cfg.lr_at(step), 0.1),
        ]
        scheduler.step(1)


def test_scheduler_resumes_its_position_with_this_runs_settings():
    from nemo_red.training.optim import build_scheduler

    old = build_scheduler(_groups(), OptimConfig(lr=1.0, schedule="linear", total_steps=10))
    old.step(3)
    optimizer = _groups()
    new_cfg = OptimConfig(lr=2.0, schedule="linear", total_steps=20)  # --allow-config-change
    new = build_scheduler(optimizer, new_cfg)
    new.load_state_dict(old.state_dict())
    assert new.num_steps == 3
    assert optimizer.param_groups[0]["lr"] == new_cfg.lr_at(3) == pytest.approx(2.0 * 17 / 20)


def test_build_optimizer_needs_per_token_loss_first():
    from types import SimpleNamespace

    from nemo_red.training.optim import build_optimizer

    model = SimpleNamespace(config=SimpleNamespace(calculate_per_token_loss=False))
    with pytest.raises(ValueError, match="calculate_per_token_loss"):
        build_optimizer(model, OptimConfig(schedule="constant"))


def _stages_config(*stages, **trainer_optim):
    from nemo_red.training.config import load_config

    return load_config(
        None,
        [
            f"algorithm.stages=[{','.join(stages)}]",
            "trainer.updates_per_step=2",
            *(f"trainer.optim.{k}={v}" for k, v in trainer_optim.items()),
        ],
    )


def test_stages_without_schedules_share_one_over_the_run():
    from nemo_red.training.assembly import actor_optim

    config = _stages_config("{preset: sft, steps: 2}", "{preset: red, steps: 2}", lr=1.0)
    optim = actor_optim(config)
    assert not config.per_stage_lr
    assert optim.segments == ()
    # linear to 0 over 2 stages x 2 steps x 2 updates
    assert [optim.lr_at(u) for u in range(9)] == pytest.approx(
        [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0]
    )


def test_a_stage_with_its_own_lr_gives_every_stage_a_schedule_over_its_own_updates():
    from nemo_red.training.assembly import actor_optim

    config = _stages_config(
        "{preset: sft, steps: 2, lr: 1.0, schedule: constant, warmup_steps: 2}",
        "{preset: red, steps: 2, lr: 0.5, min_lr: 0.1, schedule: linear}",
        lr=2.0,
        min_lr=0.0,
        schedule="cosine",
    )
    optim = actor_optim(config)
    assert config.per_stage_lr
    assert [updates for updates, _ in optim.segments] == [4, 4]
    # sft: warm-up over 2 updates, then constant 1.0; red: linear 0.5 -> 0.1 over its 4
    # updates (no warm-up: trainer.optim has none); the last schedule holds beyond its end
    assert [optim.lr_at(u) for u in range(10)] == pytest.approx(
        [0.5, 1.0, 1.0, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1]
    )


def test_a_stage_takes_what_it_does_not_set_from_trainer_optim():
    from nemo_red.training.assembly import actor_optim

    config = _stages_config(
        "{preset: sft, steps: 2}", "{preset: red, steps: 3, lr: 0.5}", lr=2.0, schedule="constant"
    )
    segments = actor_optim(config).segments
    assert [(u, s.lr, s.schedule) for u, s in segments] == [
        (4, 2.0, "constant"),
        (6, 0.5, "constant"),
    ]


@pytest.mark.parametrize(
    ("stage", "match"),
    [
        ("{preset: red, steps: 2, lr: 1.0, min_lr: 2.0}", r"stages\[\] \(preset 'red'\).*min_lr"),
        ("{preset: red, steps: 2, schedule: step}", r"stages\[\] \(preset 'red'\).*schedule"),
        (
            "{preset: red, steps: 2, schedule: cosine, warmup_steps: 2}",
            r"algorithm.stages\[1\] \(red\).*2 steps must exceed warmup_steps \(2\)",
        ),
    ],
)
def test_bad_stage_schedules_are_refused_at_load(stage, match):
    from nemo_red.training.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        _stages_config("{preset: sft, steps: 3}", stage)


def test_the_sft_warm_up_shorthand_takes_a_schedule_of_its_own():
    from nemo_red.training.assembly import actor_optim
    from nemo_red.training.config import load_config

    config = load_config(
        None,
        [
            "algorithm.sft_warmup_steps=2",
            "trainer.total_steps=5",
            "algorithm.sft_warmup_optim.lr=1.0",
            "algorithm.sft_warmup_optim.schedule=constant",
            "trainer.optim.lr=0.5",
            "trainer.optim.min_lr=0.2",
            "trainer.optim.schedule=linear",
        ],
    )
    optim = actor_optim(config)
    assert [optim.lr_at(u) for u in range(5)] == pytest.approx([1.0, 1.0, 0.5, 0.4, 0.3])
    plain = load_config(None, ["algorithm.sft_warmup_steps=2", "trainer.total_steps=5"])
    assert not plain.per_stage_lr
