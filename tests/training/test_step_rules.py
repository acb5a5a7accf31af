"""HPT routing and the ReLIFT buffer by hand: which items go where for given rewards."""

import pytest
import torch

from nemo_red.algorithms import get_preset
from nemo_red.rollout.base import Completion
from nemo_red.training.config import ConfigError, load_config
from nemo_red.training.groups import GroupInput, build_groups
from nemo_red.training.step_rules import ReliftBuffer, hpt_loss, num_correct, route_hpt


def _group(rewards, teacher=(1, 2, 3)):
    return GroupInput(
        prompt_ids=[7, 8],
        completions=[Completion(torch.arange(2), torch.full((2,), -0.5), "stop") for _ in rewards],
        online_rewards=rewards,
        teacher_ids=list(teacher) if teacher is not None else None,
        teacher_reward=1.0,
    )


def test_num_correct_counts_rewards_above_one_half():
    assert num_correct([0.0, 1.0, 1.0, 0.0]) == 2
    assert num_correct([0.0, 0.4]) == 0
    assert num_correct([]) == 0


def test_hpt_gate_zero_sends_all_wrong_prompts_to_sft_and_the_rest_to_grpo():
    inputs = [_group([0.0, 0.0, 0.0]), _group([1.0, 0.0, 0.0]), _group([1.0, 1.0, 1.0])]
    routed, to_sft = route_hpt(inputs, gate=0)
    assert to_sft == [True, False, False]
    assert routed[0].completions == []
    assert routed[0].online_rewards == []
    assert routed[0].teacher_ids == [1, 2, 3]
    assert routed[1].teacher_ids is None
    assert len(routed[1].completions) == 3
    assert routed[2].teacher_ids is None
    batch = build_groups(routed, "grpo").batch
    # prompt 0: its teacher only; prompts 1 and 2: their 3 rollouts each, no teacher.
    assert batch.is_offline.tolist() == [True] + [False] * 6
    assert batch.tokens[0].tolist() == [7, 8, 1, 2, 3]
    # prompt 1's GRPO advantages use its rollouts only: rewards 1, 0, 0 -> mean 1/3.
    std = (1 / 3) ** 0.5 + 1e-6
    assert batch.advantages[1:4].tolist() == pytest.approx(
        [(2 / 3) / std, (-1 / 3) / std, (-1 / 3) / std], rel=1e-5
    )
    assert batch.advantages[4:].tolist() == [0.0, 0.0, 0.0]  # all correct: no signal
    assert batch.group_accuracy.tolist()[1:4] == pytest.approx([1 / 3] * 3)


def test_hpt_gate_one_also_sends_prompts_with_one_correct_rollout_to_sft():
    inputs = [_group([1.0, 0.0, 0.0]), _group([1.0, 1.0, 0.0])]
    _, to_sft = route_hpt(inputs, gate=1)
    assert to_sft == [True, False]


def test_hpt_needs_the_teacher_of_an_sft_prompt():
    with pytest.raises(ValueError, match="no teacher trace"):
        route_hpt([_group([0.0], teacher=None)], gate=0)


def test_hpt_loss_is_the_online_preset_plus_an_nll_term_on_offline_items():
    spec = hpt_loss(get_preset("grpo"), 0.3)
    assert [(t.term, t.on) for t in spec.terms] == [("clipped_pg", "online"), ("nll", "offline")]
    assert spec.terms[1].coef_params.value == 0.3
    assert spec.normaliser == "per_term"
    assert hpt_loss(get_preset("sft"), 0.3) == get_preset("sft")  # warm-up stages unchanged
    with pytest.raises(ValueError, match="already has one"):
        hpt_loss(get_preset("red"), 0.3)


def test_relift_buffer_collects_all_failed_questions_once_and_drains_when_full():
    buffer = ReliftBuffer(size=3)
    assert buffer.add_failures([10, 11, 12], [[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]) == 2
    assert buffer.items == [10, 12]
    assert not buffer.full
    assert buffer.add_failures([10, 13], [[0.0, 0.0], [0.0, 0.0]]) == 1  # 10 already held
    assert buffer.full
    state = buffer.state_dict()
    restored = ReliftBuffer(size=3)
    restored.load_state_dict(state)
    assert restored.items == [10, 12, 13]
    assert buffer.drain() == [10, 12, 13]
    assert buffer.items == []
    assert not buffer.full
    assert buffer.add_failures([14], [[]]) == 0  # no rollouts: nothing to judge


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["algorithm.step_rule=hpt", "algorithm.preset=red"], "must not train on teacher"),
        (["algorithm.step_rule=relift", "algorithm.preset=sft"], "needs a preset with online"),
        (["algorithm.step_rule=relift", "algorithm.relift.preset=grpo"], "teacher traces only"),
        (["algorithm.step_rule=bread"], "one of \\['hpt', 'plain', 'relift'\\]"),
        (["algorithm.relift.buffer_size=0"], "buffer_size must be >= 1"),
    ],
)
def test_bad_step_rule_configs_fail_naming_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_the_old_key_algorithm_schedule_still_names_the_step_rule(tmp_path):
    assert (
        load_config(None, ["algorithm.schedule=hpt", "algorithm.preset=grpo"]).algorithm.step_rule
        == "hpt"
    )
    yaml = tmp_path / "old.yaml"
    yaml.write_text("algorithm:\n  preset: grpo\n  schedule: relift\n")
    assert load_config(yaml).algorithm.step_rule == "relift"


def test_step_rule_configs_load():
    config = load_config(None, ["algorithm.step_rule=hpt", "algorithm.preset=grpo"])
    assert config.algorithm.hpt.gate == 0
    assert config.algorithm.hpt.sft_coef == 0.3
    config = load_config(None, ["algorithm.step_rule=relift", "algorithm.preset=grpo"])
    assert config.algorithm.relift.preset == "sft"


def test_coefficient_params_override_a_terms_coefficient():
    config = load_config(
        None, ["algorithm.coefficient_params={nll: {value: 0.5}}", "algorithm.sft_warmup_steps=1"]
    )
    assert config.algorithm.loss_spec("sft").terms[0].coef_params.value == 0.5
    assert config.algorithm.loss_spec("grpo") == get_preset("grpo")  # no nll term: unchanged


def test_params_of_a_term_no_preset_of_the_run_has_are_refused():
    with pytest.raises(ConfigError, match=r"algorithm.coefficient_params.nll: no preset"):
        load_config(None, ["algorithm.coefficient_params={nll: {value: 0.5}}"])
    with pytest.raises(ConfigError, match=r"preset 'red'.*unknown .*params \['bogus'\]"):
        load_config(None, ["algorithm.term_params={offline_pg: {bogus: 1}}"])
