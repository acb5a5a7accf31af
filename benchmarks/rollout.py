"""Benchmark: generation throughput of the rollout engines side by side, one run.

A random-weight tiny Qwen2 (4 layers, hidden 256, 8/2 heads, vocab 4096) generates 64 new
tokens (greedy, no stop) after 64-token prompts at several batch sizes. The ``native``
(megatron, static KV cache) and ``hf`` (transformers, dynamic KV cache) engines hold the
same weights and run in this process one after the other. Reported:
generated tokens per second (median of ``--repeats`` after a warm-up) and the native/hf
ratio per batch size. Writes ``benchmarks/results/rollout_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_env import RESULTS, device_info, now, versions, write_result  # noqa: E402

CONFIG = {
    "vocab_size": 4096,
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
}


def _tokens_per_s(engine, prompts, params, repeats: int) -> float:
    engine.generate(prompts[:2], params)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = engine.generate(prompts, params)
        times.append(time.perf_counter() - start)
    generated = sum(len(c.token_ids) for per in outputs for c in per)
    return generated / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--prompt-length", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from transformers import Qwen2Config, Qwen2ForCausalLM

    from nemo_red.models.conversion import hf_to_megatron
    from nemo_red.models.families import ModelShape
    from nemo_red.models.megatron_gpt import build_gpt_model
    from nemo_red.rollout.base import SamplingParams
    from nemo_red.rollout.hf_engine import HFEngine
    from nemo_red.rollout.native_engine import NativeEngine
    from nemo_red.training.parallel import ParallelLayout, init_distributed, shutdown_distributed

    init_distributed(ParallelLayout(), seed=0)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    torch.manual_seed(0)
    hf_model = Qwen2ForCausalLM(Qwen2Config(**CONFIG)).to(dtype=dtype, device=args.device)
    shape = ModelShape.from_hf_config(hf_model.config.to_dict())
    model = build_gpt_model(shape, dtype=dtype).to(args.device)
    model.load_state_dict(hf_to_megatron(hf_model.state_dict(), shape))
    params = SamplingParams(temperature=0, max_new_tokens=args.new_tokens)
    g = torch.Generator().manual_seed(0)
    runs = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        prompts = torch.randint(0, CONFIG["vocab_size"], (batch, args.prompt_length), generator=g)
        prompts = prompts.tolist()
        row = {"batch_size": batch}
        for name, engine in (
            ("native", NativeEngine(model, shape, max_batch_size=batch)),
            ("hf", HFEngine(hf_model, max_batch_size=batch)),
        ):
            row[f"{name}_tokens_per_s"] = _tokens_per_s(engine, prompts, params, args.repeats)
        row["native_over_hf"] = row["native_tokens_per_s"] / row["hf_tokens_per_s"]
        print(json.dumps(row), flush=True)
        runs.append(row)
    result = {
        "benchmark": "rollout engines: generated tokens/s (greedy, no stop)",
        "date": now(),
        "device": device_info(args.device),
        "versions": versions("megatron-core", "transformers"),
        "config": {
            **CONFIG,
            "prompt_length": args.prompt_length,
            "new_tokens": args.new_tokens,
            "repeats": args.repeats,
            "dtype": str(dtype),
            "torch_threads": torch.get_num_threads(),
        },
        "runs": runs,
        "not_run": {
            "vllm": "run with the vLLM interpreter (see README)",
            "trtllm": "not installable here",
        },
    }
    write_result(result, args.out or RESULTS / f"rollout_{args.device}.json")
    shutdown_distributed()


if __name__ == "__main__":
    main()
