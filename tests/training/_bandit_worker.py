"""torchrun worker: the online RL path learns a one-token bandit.

A random tiny Qwen2 answers each prompt with one token; reward 1 when the token id is a
multiple of 4 (about a quarter of the vocabulary). Each step runs what the training loop
runs for the online part (native-engine rollouts, ``build_groups``, log pi_old, the actor's
``train_step`` with the preset) and records the mean sampled reward. Writes a JSON report.
"""

import argparse
import json

VOCAB = 61


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", required=True)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from nemo_red.training.parallel import ParallelLayout, init_distributed, shutdown_distributed

    init_distributed(ParallelLayout(1, 1), seed=3)
    from nemo_red.algorithms import StepContext, get_preset
    from nemo_red.models.conversion import hf_to_megatron
    from nemo_red.models.families import ModelShape
    from nemo_red.models.megatron_gpt import build_gpt_model
    from nemo_red.rollout.base import SamplingParams
    from nemo_red.rollout.native_engine import NativeEngine
    from nemo_red.training.actor import MegatronActor
    from nemo_red.training.groups import GroupInput, build_groups
    from nemo_red.training.optim import OptimConfig
    from tests.tiny_models import random_qwen2

    hf_model = random_qwen2(vocab=VOCAB, layers=2, max_positions=16, tied=True, seed=3)
    shape = ModelShape.from_hf_config(hf_model.config.to_dict())
    model = build_gpt_model(shape, 1)
    model.load_state_dict(hf_to_megatron(hf_model.state_dict(), shape, 1, 0))
    actor = MegatronActor(
        model, shape, OptimConfig(schedule="constant", lr=1e-2, clip_grad=1.0), token_budget=256
    )
    engine = NativeEngine.from_actor(actor, max_batch_size=64)
    spec = get_preset(args.preset)
    prompts = [[1 + i, 2 + i, 3 + i] for i in range(8)]
    teacher = [4, 8]  # a correct answer (8 is a multiple of 4), then a second token
    rewards_per_step = []
    for step in range(args.steps):
        params = SamplingParams(n=8, temperature=1.0, max_new_tokens=1, seed=100 + step)
        outputs = engine.generate(prompts, params)
        inputs = []
        sampled = []
        for prompt, per in zip(prompts, outputs, strict=True):
            rewards = [float(int(c.token_ids[0]) % 4 == 0) for c in per]
            sampled += rewards
            inputs.append(
                GroupInput(
                    prompt_ids=prompt,
                    completions=per,
                    online_rewards=rewards,
                    teacher_ids=teacher if spec.uses_offline else None,
                    teacher_reward=1.0,
                )
            )
        rewards_per_step.append(sum(sampled) / len(sampled))
        groups = build_groups(inputs, spec.advantage)
        stats = actor.compute_logprobs_and_entropy(groups.batch)
        batch = groups.batch.with_fields(old_logprobs=stats.logprobs)
        actor.train_step(batch, spec, StepContext(step=step, entropy_weight=1.0))
        engine.update_weights(actor)
    with open(args.out, "w") as handle:
        json.dump({"rewards": rewards_per_step}, handle)
    shutdown_distributed()


if __name__ == "__main__":
    main()
