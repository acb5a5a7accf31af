"""Hugging Face TRL's ``GRPOTrainer`` on the work of a nemo_red run, timed per step.

Run by ``benchmarks/trl_step.py`` with the python of the TRL environment (``make bench-trl``
builds ``.venv-trl``): it reads the same config as the nemo_red run (the tiny default and its
overrides), trains the HF export of that run's model with its tokenizer on the same
generated problems, rendered by the same prompt template, and writes the wall time of each
optimizer step (and of generation and grading within it) as JSON.

The translation of the config into ``GRPOConfig`` arguments and the prompt rows are plain
functions (:func:`grpo_args`, :func:`prompt_rows`) so that they are tested without TRL.
The reward is nemo_red's own grader (math-verify in worker processes): TRL's reward function
sees the same decoded completions and gold answers as nemo_red's, so the rewards are the
same by construction, and so is the grading cost.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nemo_red.data.records import Problem
from nemo_red.data.templates import PromptTemplate, template_from_config
from nemo_red.training.config import TrainConfig, load_config

# the preset whose loss TRL's GRPO reproduces: PPO-clip on group-normalised advantages,
# a token mean per sequence then a mean over sequences, no KL term
GRPO_PRESET = "grpo"


def grpo_args(config: TrainConfig, steps: int, output_dir: str) -> dict[str, Any]:
    """``GRPOConfig`` keyword arguments doing the work of ``steps`` nemo_red steps of
    ``config``: per step ``trainer.prompts_per_step`` prompts with ``rollout.n``
    completions each, one AdamW update on all of them (no gradient accumulation) with the
    same learning rate, schedule, betas, weight decay and clipping.

    Raises:
        ValueError: for a config TRL's GRPO cannot match (another preset, several updates
            per step, a schedule with warm-up or decay, or nucleus/top-k sampling).
    """
    rollout, optim, trainer = config.rollout, config.trainer.optim, config.trainer
    if config.algorithm.preset != GRPO_PRESET:
        raise ValueError(
            f"algorithm.preset: TRL's GRPO matches the {GRPO_PRESET!r} preset, "
            f"got {config.algorithm.preset!r}"
        )
    if trainer.updates_per_step != 1:
        raise ValueError(f"trainer.updates_per_step must be 1, got {trainer.updates_per_step}")
    if optim.schedule != "constant" or optim.warmup_steps != 0:
        raise ValueError(
            "trainer.optim: a constant learning rate without warm-up is needed, got "
            f"schedule={optim.schedule!r}, warmup_steps={optim.warmup_steps}"
        )
    if rollout.top_p != 1.0 or rollout.top_k not in (0, -1, None):
        raise ValueError(
            f"rollout: plain sampling is needed, got top_p={rollout.top_p}, top_k={rollout.top_k}"
        )
    completions = trainer.prompts_per_step * rollout.n
    return {
        "output_dir": output_dir,
        "max_steps": steps,
        "per_device_train_batch_size": completions,
        "gradient_accumulation_steps": 1,
        "num_generations": rollout.n,
        "max_completion_length": rollout.max_new_tokens,
        "temperature": rollout.temperature,
        "top_p": 1.0,
        "top_k": 0,
        "beta": 0.0,
        "loss_type": "grpo",
        "scale_rewards": "group",
        "num_iterations": 1,
        "epsilon": 0.2,
        "learning_rate": optim.lr,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "weight_decay": optim.weight_decay,
        "adam_beta1": optim.adam_beta1,
        "adam_beta2": optim.adam_beta2,
        "adam_epsilon": optim.adam_eps,
        "max_grad_norm": optim.clip_grad,
        "seed": config.run.seed,
        "use_cpu": True,
        "bf16": False,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
    }


def prompt_rows(
    problems: Sequence[Problem], template: PromptTemplate, tokenizer: Any = None
) -> list[dict[str, str]]:
    """One ``{"prompt", "answer"}`` row per problem: the prompt text nemo_red renders for it
    and its gold answer (the column TRL hands to the reward function)."""
    return [{"prompt": template.render(p.question, tokenizer), "answer": p.gold} for p in problems]


def grader_reward(
    grade: Callable[[list[str], list[str]], list[float]],
) -> Callable[..., list[float]]:
    """A TRL reward function (``completions`` and the ``answer`` column in, one float per
    completion out) that scores with ``grade``."""

    def math_reward(completions: list[str], answer: list[str], **_: Any) -> list[float]:
        return grade(list(completions), list(answer))

    return math_reward


class _Timed:
    """Wraps a method of an object to add its wall time per call to ``seconds``."""

    def __init__(self, owner: Any, name: str) -> None:
        self.seconds = 0.0
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        setattr(owner, name, timed)

    def take(self) -> float:
        """The time collected since the last call."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="HF directory with tokenizer")
    parser.add_argument("--train", type=Path, required=True, help="the run's training problems")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="JSON with the step times")
    parser.add_argument("overrides", nargs="*", help="the nemo_red run's key=value overrides")
    args = parser.parse_args()

    import transformers
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from nemo_red.data.loading import load_problems
    from nemo_red.rewards import MathGrader

    transformers.logging.set_verbosity_error()
    config = load_config(args.config, [*args.overrides, f"algorithm.preset={GRPO_PRESET}"])
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    data = config.data
    problems = load_problems(
        args.train, layout=data.layout, fields=data.fields, on_bad_row=data.on_bad_row
    ).problems
    rows = prompt_rows(problems, template_from_config(config.data), tokenizer)
    grader = MathGrader(
        num_workers=config.trainer.grader_workers,
        timeout_s=config.trainer.grader_timeout_s,
        think_split=config.trainer.think_split,
    )
    reward = grader_reward(lambda texts, golds: [r.reward for r in grader.grade(texts, golds)])
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=GRPOConfig(**grpo_args(config, args.steps, str(args.out.parent / "trl_out"))),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    generate = _Timed(trainer, "_generate")
    grade = _Timed(trainer, "_calculate_rewards")
    steps: list[dict[str, float]] = []

    class StepTimes(TrainerCallback):  # type: ignore[misc]
        last = 0.0

        def on_train_begin(self, *_: Any, **__: Any) -> None:
            StepTimes.last = time.perf_counter()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            now = time.perf_counter()
            rollout, grading = generate.take(), grade.take()
            step = now - StepTimes.last
            steps.append(
                {
                    "step": step,
                    "rollout": rollout,
                    "grading": grading,
                    "train": step - rollout - grading,
                }
            )
            StepTimes.last = now

    trainer.add_callback(StepTimes())
    try:
        trainer.train()
    finally:
        grader.close()
    logged = [row for row in trainer.state.log_history if "completions/mean_length" in row]
    result = {
        "steps": steps,
        "completion_length": [row["completions/mean_length"] for row in logged],
        "reward": [row["reward"] for row in logged],
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
