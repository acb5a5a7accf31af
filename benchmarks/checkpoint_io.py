"""Benchmark: checkpoint save / load times, torch_dist against the earlier formats.

In one process (a world of one), on one random Qwen2-architecture model, side by side:

* model checkpoints: the earlier safetensors layout (one ``model_tpXX_ppYYY.safetensors``
  per shard, here TP1 x PP1) against a megatron dist checkpoint (``torch_dist``, what
  ``nemo-red convert hf-to-megatron`` writes);
* training checkpoints: the earlier per-rank ``torch.save`` files (the model shard, and the
  fp32 main weights and Adam moments of every parameter read through megatron's
  ``_get_main_param_and_optimizer_states``, as earlier versions did) against
  ``nemo_red.training.checkpoint.save_checkpoint`` / ``load_checkpoint``.

Each is timed ``--repeats`` times after one warm-up; the medians are reported. Writes
``benchmarks/results/checkpoint_io_<device>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_env import RESULTS, device_info, now, versions, write_result


def _median_seconds(action: Callable[[], object], repeats: int) -> float:
    action()  # warm-up: first-call costs (imports, the writer's first fork)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from safetensors.torch import load_file, save_file

    from nemo_red.models.dist_checkpoint import load_model, save_model
    from nemo_red.models.families import ModelShape
    from nemo_red.models.megatron_gpt import build_gpt_model, load_weights
    from nemo_red.training.actor import MegatronActor
    from nemo_red.training.checkpoint import load_checkpoint, save_checkpoint
    from nemo_red.training.optim import OptimConfig
    from nemo_red.training.parallel import ParallelLayout, init_distributed, shutdown_distributed

    init_distributed(ParallelLayout(), seed=0)
    heads = max(args.hidden // 64, 2)
    shape = ModelShape(
        "qwen2",
        args.vocab,
        args.hidden,
        4 * args.hidden,
        args.layers,
        heads,
        2,
        args.hidden // heads,
        1e-6,
        1e4,
        128,
        True,
    )
    model = build_gpt_model(shape)
    actor = MegatronActor(model, shape, OptimConfig(schedule="constant", lr=1e-4), 4096)
    from nemo_red.models.megatron_checkpointing import distributed_optimizer

    inner = distributed_optimizer(actor.optimizer)
    # one optimizer step's worth of state (Adam moments) without a forward pass
    for param in model.parameters():
        param.main_grad.normal_()
    actor.optimizer.step()
    params = sum(p.numel() for p in model.parameters())
    weights = {k: v for k, v in model.state_dict().items() if not k.endswith("_extra_state")}

    seconds: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        counter = iter(range(10**6))

        def fresh(name: str) -> Path:
            path = root / f"{name}_{next(counter)}"
            path.mkdir()
            return path

        shards = root / "safetensors"
        shards.mkdir()
        seconds["model_safetensors"] = {
            "save": _median_seconds(
                lambda: save_file(weights, shards / "model_tp00_pp000.safetensors"), args.repeats
            ),
            "load": _median_seconds(
                lambda: load_weights(model, load_file(shards / "model_tp00_pp000.safetensors")),
                args.repeats,
            ),
        }
        dist_dir = fresh("dist")
        save_model(model, dist_dir)
        seconds["model_torch_dist"] = {
            "save": _median_seconds(lambda: save_model(model, fresh("dist")), args.repeats),
            "load": _median_seconds(lambda: load_model(model, dist_dir), args.repeats),
        }

        def old_optimizer_state() -> dict:
            return {
                name: dict(inner._get_main_param_and_optimizer_states(p))
                for name, p in model.named_parameters()
            }

        def old_save(directory: Path) -> None:
            torch.save({"model": weights, "steps_done": 1}, directory / "model_tp00_pp000.pt")
            torch.save(
                {"common": actor.optimizer.state_dict(), "shards": old_optimizer_state()},
                directory / "optim_rank00000.pt",
            )

        @torch.no_grad()
        def old_load(directory: Path) -> None:
            state = torch.load(directory / "model_tp00_pp000.pt", weights_only=False)
            load_weights(model, state["model"])
            optim = torch.load(directory / "optim_rank00000.pt", weights_only=False)
            actor.optimizer.load_state_dict(optim["common"])
            for name, param in model.named_parameters():
                inner._set_main_param_and_optimizer_states(param, optim["shards"][name])

        old_dir = fresh("old")
        old_save(old_dir)
        seconds["training_per_rank_torch_save"] = {
            "save": _median_seconds(lambda: old_save(fresh("old")), args.repeats),
            "load": _median_seconds(lambda: old_load(old_dir), args.repeats),
        }
        train_root = root / "train"
        save_checkpoint(train_root, 1, actor, None, {}, keep=2)
        saved = train_root / "step_000001"
        seconds["training_torch_dist"] = {
            "save": _median_seconds(
                lambda: save_checkpoint(root / "train2", 1, actor, None, {}, keep=2), args.repeats
            ),
            "load": _median_seconds(lambda: load_checkpoint(saved, actor, None), args.repeats),
        }
    shutdown_distributed()
    for name, times in seconds.items():
        print(f"{name:32s} save {times['save']:.3f}s  load {times['load']:.3f}s")
    result = {
        "benchmark": "checkpoint save / load: torch_dist against the earlier formats",
        "date": now(),
        "device": device_info("cuda" if torch.cuda.is_available() else "cpu"),
        "versions": versions("megatron-core", "safetensors", "psutil"),
        "config": {
            "model": {"hidden": args.hidden, "layers": args.layers, "vocab": args.vocab},
            "parameters": params,
            "fp32_weight_bytes": 4 * params,
            "processes": 1,
            "repeats": args.repeats,
            "statistic": "median after one warm-up",
        },
        "median_seconds": seconds,
    }
    kind = "cuda" if torch.cuda.is_available() else "cpu"
    write_result(result, args.out or RESULTS / f"checkpoint_io_{kind}.json")


if __name__ == "__main__":
    main()
