"""The TRL step benchmark's translation of a nemo_red config into TRL's GRPO arguments, its
prompt rows and reward function (no TRL needed), and one short run of TRL when its
environment (``make bench-trl``) is there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_red.data.records import Problem
from nemo_red.data.templates import get_template
from nemo_red.training.config import load_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_env import tiny_run_overrides  # noqa: E402
from trl_grpo import grader_reward, grpo_args, prompt_rows  # noqa: E402
from trl_step import CONFIG, SAMPLING, TRL_PYTHON  # noqa: E402


def _tiny(*overrides: str):  # type: ignore[no-untyped-def]
    return load_config(
        CONFIG, [*tiny_run_overrides(6), *SAMPLING, "algorithm.preset=grpo", *overrides]
    )


def test_grpo_args_do_the_tiny_steps_work() -> None:
    args = grpo_args(_tiny(), steps=6, output_dir="out")
    # 32 prompts x 4 completions in one batch, one AdamW update on it, per step
    assert args["per_device_train_batch_size"] == 128
    assert args["gradient_accumulation_steps"] == 1
    assert args["num_generations"] == 4
    assert args["num_iterations"] == 1
    assert args["max_steps"] == 6
    assert args["max_completion_length"] == 32
    assert args["temperature"] == 1.0
    assert (args["top_p"], args["top_k"]) == (1.0, 0)
    assert args["learning_rate"] == 3e-5
    assert args["lr_scheduler_type"] == "constant"
    assert args["max_grad_norm"] == 1.0
    assert (args["adam_beta1"], args["adam_beta2"], args["adam_epsilon"]) == (0.9, 0.999, 1e-8)
    assert args["weight_decay"] == 0.0
    # nemo_red's grpo: token mean per sequence, then over sequences; no KL; eps 0.2
    assert (args["loss_type"], args["beta"], args["epsilon"]) == ("grpo", 0.0, 0.2)
    assert args["seed"] == 1


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("algorithm.preset=red", "algorithm.preset"),
        ("trainer.updates_per_step=2", "trainer.updates_per_step"),
        ("trainer.optim.schedule=cosine", "trainer.optim"),
        ("rollout.top_p=0.9", "rollout"),
    ],
)
def test_grpo_args_refuse_what_trl_cannot_match(override: str, field: str) -> None:
    config = _tiny(override, "trainer.optim.min_lr=0")
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        grpo_args(config, steps=6, output_dir="out")


def test_prompt_rows_render_nemo_red_prompts_with_gold_answers() -> None:
    problems = [
        Problem(uid="a", question="3 + 4", gold="7", teacher=None, source="f:1"),
        Problem(uid="b", question="2 + 5 + 9", gold="16", teacher=None, source="f:2"),
    ]
    rows = prompt_rows(problems, get_template("plain"))
    assert rows == [
        {"prompt": "Question: 3 + 4\nAnswer:", "answer": "7"},
        {"prompt": "Question: 2 + 5 + 9\nAnswer:", "answer": "16"},
    ]


def test_grader_reward_passes_completions_and_answers_in_order() -> None:
    seen: list[tuple[list[str], list[str]]] = []

    def grade(texts: list[str], golds: list[str]) -> list[float]:
        seen.append((texts, golds))
        return [float(t.strip() == g) for t, g in zip(texts, golds, strict=True)]

    reward = grader_reward(grade)
    out = reward(completions=[" 7", " 8", "16"], answer=["7", "7", "16"], prompts=["p"] * 3)
    assert out == [1.0, 0.0, 1.0]
    assert seen == [([" 7", " 8", "16"], ["7", "7", "16"])]


@pytest.mark.slow
@pytest.mark.skipif(not TRL_PYTHON.is_file(), reason="no .venv-trl (`make bench-trl` builds it)")
def test_trl_runs_two_timed_steps(tmp_path: Path) -> None:
    from nemo_red.data.tokenizer import train_tokenizer
    from tests.tiny_models import random_qwen2

    model, train = tmp_path / "hf", tmp_path / "train.jsonl"
    problems = [  # the generated task's layout
        {"problem": f"Compute {a} + {b}.", "answer": str(a + b), "distill": f"{a} + {b} = {a + b}."}
        for a in range(9)
        for b in range(9)
    ]
    tokenizer = train_tokenizer(
        [f"Question: {p['problem']}\nAnswer: {p['distill']}" for p in problems], 300, model
    )
    random_qwen2(vocab=len(tokenizer), hidden=32, noise=0.02).save_pretrained(model)
    train.write_text("".join(json.dumps(p) + "\n" for p in problems))
    out = tmp_path / "steps.json"
    cmd = [str(TRL_PYTHON), str(REPO / "benchmarks" / "trl_grpo.py"), "--config", str(CONFIG)]
    cmd += ["--model", str(model), "--train", str(train), "--steps", "2", "--out", str(out)]
    cmd += [*tiny_run_overrides(2), "trainer.prompts_per_step=2", "rollout.max_new_tokens=4"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(cmd, check=True, env=env, timeout=600)
    result = json.loads(out.read_text())
    assert len(result["steps"]) == 2
    for step in result["steps"]:
        assert step["step"] >= step["rollout"] > 0
        assert step["grading"] > 0
        assert step["train"] == pytest.approx(step["step"] - step["rollout"] - step["grading"])
    assert all(0 < length <= 4 for length in result["completion_length"])
    assert all(0 <= reward <= 1 for reward in result["reward"])
