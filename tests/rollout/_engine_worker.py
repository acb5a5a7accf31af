"""torchrun worker: native (megatron) and hf engines on the same tiny model, side by side, for
each family asked for.

Writes a JSON report per family: greedy outputs of both engines, their log-prob gaps to the
actor's recomputed log-probs, seeded-sampling reproducibility, finish reasons, and the
outputs after a training step has changed the weights (native follows the actor; hf after a
refit). The hf engine is built from the shape's HF config (``AutoModelForCausalLM``) and
refit from the actor.
"""

import argparse
import json
import sys

import torch
import torch.distributed as dist

VOCAB = 61
# per family: its tiny model's config extras (Qwen3 with head_dim != hidden / heads)
FAMILY_EXTRAS = {
    "qwen2": {},
    "qwen3": {"head_dim": 12},
    "llama": {"rope_scaling": "llama3", "rope_theta": 5e5, "max_positions": 16384},
}


def run_family(family: str, tp: int) -> dict:
    from megatron.core import parallel_state as ps

    from nemo_red.algorithms import StepContext, get_preset
    from nemo_red.models.conversion import hf_to_megatron
    from nemo_red.models.families import ModelShape
    from nemo_red.models.megatron_gpt import build_gpt_model
    from nemo_red.rollout.base import SamplingParams, logprob_gap
    from nemo_red.rollout.hf_engine import HFEngine
    from nemo_red.rollout.native_engine import NativeEngine
    from nemo_red.training.actor import MegatronActor
    from nemo_red.training.optim import OptimConfig
    from nemo_red.training.packing import SequenceBatch
    from tests.tiny_models import LLAMA3_ROPE_SCALING, random_model

    extra = {"max_positions": 48, **FAMILY_EXTRAS[family]}
    if extra.get("rope_scaling") == "llama3":
        extra["rope_scaling"] = LLAMA3_ROPE_SCALING
    hf_model = random_model(family, vocab=VOCAB, layers=2, tied=True, noise=0.3, **extra)
    shape = ModelShape.from_hf_config(hf_model.config.to_dict())
    model = build_gpt_model(shape, tp)
    model.load_state_dict(
        hf_to_megatron(hf_model.state_dict(), shape, tp, ps.get_tensor_model_parallel_rank())
    )
    actor = MegatronActor(
        model, shape, OptimConfig(schedule="constant", lr=0.05, clip_grad=0), token_budget=64
    )
    native = NativeEngine.from_actor(actor, max_batch_size=4)
    hf = HFEngine.from_config(shape.to_hf_config(), max_batch_size=3)
    hf.update_weights(actor)

    prompts = [[5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8], [9], [3, 3, 3, 3]]
    greedy = SamplingParams(n=2, temperature=0, max_new_tokens=10)
    report: dict = {}

    def ids(outputs):
        return [[c.token_ids.tolist() for c in per_prompt] for per_prompt in outputs]

    report["native_greedy"] = ids(native.generate(prompts, greedy))
    report["hf_greedy"] = ids(hf.generate(prompts, greedy))

    sampled = SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=123)
    outputs = {"native": native.generate(prompts, sampled), "hf": hf.generate(prompts, sampled)}
    report["native_seed_repeat_equal"] = ids(native.generate(prompts, sampled)) == ids(
        outputs["native"]
    )
    other = SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=124)
    report["native_other_seed_differs"] = ids(native.generate(prompts, other)) != ids(
        outputs["native"]
    )
    for name, outs in outputs.items():
        rows = [(p, c) for p, per in zip(prompts, outs, strict=True) for c in per]
        batch = SequenceBatch(
            tokens=[torch.tensor(p + c.token_ids.tolist()) for p, c in rows],
            prompt_lengths=torch.tensor([len(p) for p, _ in rows]),
            is_offline=torch.zeros(len(rows), dtype=torch.bool),
            advantages=torch.zeros(len(rows)),
            rewards=torch.zeros(len(rows)),
            group_accuracy=torch.zeros(len(rows)),
        )
        recomputed = actor.compute_logprobs_and_entropy(batch).logprobs
        engine = torch.zeros_like(recomputed)
        for r, (_, c) in enumerate(rows):
            engine[r, : len(c.logprobs)] = c.logprobs
        report[f"{name}_gap"] = logprob_gap(engine, recomputed, batch.response_mask)

    first = report["native_greedy"][0][0]
    index = next(i for i in range(1, len(first)) if first[i] not in first[:i])  # a new token
    stop = SamplingParams(n=1, temperature=0, max_new_tokens=10, stop_token_ids=(first[index],))
    stopped = native.generate(prompts[:1], stop)[0][0]
    report["stop"] = {
        "tokens": stopped.token_ids.tolist(),
        "reason": stopped.finish_reason,
        "index": index,
    }
    report["length_reason"] = native.generate(prompts[:1], greedy)[0][0].finish_reason

    # One large step changes the weights: native follows the actor, hf after update_weights.
    batch = batch.with_fields(old_logprobs=recomputed, advantages=torch.linspace(-1, 1, len(batch)))
    actor.train_step(batch, get_preset("grpo"), StepContext())
    report["native_after_step"] = ids(native.generate(prompts, greedy))
    report["hf_before_refit"] = ids(hf.generate(prompts, greedy))
    hf.update_weights(actor)
    report["hf_after_refit"] = ids(hf.generate(prompts, greedy))
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--families", default="qwen2", help="comma-separated family names")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from nemo_red.training.parallel import ParallelLayout, init_distributed, shutdown_distributed

    init_distributed(ParallelLayout(args.tp, 1), seed=1)
    report = {family: run_family(family, args.tp) for family in args.families.split(",")}
    if dist.get_rank() == 0:
        with open(args.out, "w") as handle:
            json.dump(report, handle)
    shutdown_distributed()


if __name__ == "__main__":
    sys.exit(main())
