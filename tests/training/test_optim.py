"""Learning-rate schedules by hand, their validation, and per-step optimizer settings."""

import math

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


def test_step_hyperparameters_honour_megatron_group_multipliers():
    from types import SimpleNamespace

    from nemo_red.training.optim import set_step_hyperparameters

    groups = [{"lr_mult": 1.0, "wd_mult": 1.0}, {"lr_mult": 0.5, "wd_mult": 0.0}, {}]
    set_step_hyperparameters(SimpleNamespace(param_groups=groups), lr=2e-6, weight_decay=0.1)
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [
        (2e-6, 0.1),
        (1e-6, 0.0),  # biases and norm weights: wd_mult 0
        (2e-6, 0.1),
    ]


def test_build_optimizer_needs_per_token_loss_first():
    from types import SimpleNamespace

    from nemo_red.training.optim import build_optimizer

    model = SimpleNamespace(config=SimpleNamespace(calculate_per_token_loss=False))
    with pytest.raises(ValueError, match="calculate_per_token_loss"):
        build_optimizer(model, OptimConfig(schedule="constant"))
