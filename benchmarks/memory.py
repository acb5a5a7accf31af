"""Benchmark: the peak memory per rank of one RED training step, per memory-saving feature.

Each variant (a ``parallel`` config section) runs in fresh processes under
``torchrun --nproc_per_node 2`` (gloo, CPU): a random Qwen2-shaped model big enough for the
activations to dominate (by default 8 layers of width 512, 4096-token vocabulary, packed rows
of 2048 tokens), the actor with its distributed optimizer, one warm-up step (which allocates
the Adam moments), then one measured step (log-probs forward + training step).

Method: each rank's resident set size (RSS) is sampled every millisecond by a thread reading
``/proc/self/statm`` during the measured step; the result is the peak minus the RSS just
before the step, i.e. the memory the step itself needs on top of weights, gradient buffers
and optimizer states (activations kept for the backward pass, logits, temporaries). glibc is
told to serve every allocation above 64 KiB by ``mmap`` (``MALLOC_MMAP_THRESHOLD_``), so a
freed tensor leaves the RSS at once and the RSS follows the live tensors. The sampler
thread runs while torch's kernels release the GIL, so it sees peaks that last longer than a
millisecond (activations live from their forward pass to their backward pass). The
persistent memory (RSS before the step) is reported too.

Writes ``benchmarks/results/memory_features_cpu.json``: per variant, per rank, the step's
peak and the persistent memory, and the saving of each feature against the same layout
without it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_env import RESULTS, device_info, now, versions, write_result  # noqa: E402

# name -> (parallel section, the variant it is compared with)
VARIANTS: dict[str, tuple[dict, str | None]] = {
    "dp2": ({}, None),
    "dp2_selective": ({"recompute": "selective"}, "dp2"),
    "dp2_full_uniform_1": (
        {"recompute": "full", "recompute_method": "uniform", "recompute_num_layers": 1},
        "dp2",
    ),
    "dp2_full_block_4": (
        {"recompute": "full", "recompute_method": "block", "recompute_num_layers": 4},
        "dp2",
    ),
    "dp2_overlap": ({"overlap_grad_reduce": True, "overlap_param_gather": True}, "dp2"),
    "tp2": ({"tp": 2}, None),
    "tp2_sp": ({"tp": 2, "sequence_parallel": True}, "tp2"),
    "tp2_sp_full_uniform_1": (
        {"tp": 2, "sequence_parallel": True, "recompute": "full", "recompute_num_layers": 1},
        "tp2",
    ),
    "pp2": ({"pp": 2}, None),
    "pp2_vpp2": ({"pp": 2, "virtual_pp": 2}, "pp2"),
}
PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


class PeakRss:
    """Samples this process's RSS every ``interval`` seconds while in the ``with`` block."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self.peak = _rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _batch(vocab: int, sequences: int, length: int, prompt: int):
    import torch

    from nemo_red.training.packing import SequenceBatch

    g = torch.Generator().manual_seed(0)
    return SequenceBatch(
        tokens=[torch.randint(0, vocab, (length,), generator=g) for _ in range(sequences)],
        prompt_lengths=torch.full((sequences,), prompt),
        is_offline=torch.tensor([i % 4 == 3 for i in range(sequences)]),
        advantages=torch.randn(sequences, generator=g),
        rewards=torch.randint(0, 2, (sequences,), generator=g).float(),
        group_accuracy=torch.rand(sequences, generator=g),
    )


def worker(args: argparse.Namespace) -> None:
    """One variant on this rank: warm-up step, measured step, JSON line per rank."""
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    from nemo_red.algorithms import EntropyRegulator, StepContext, get_preset
    from nemo_red.models.families import ModelShape
    from nemo_red.models.megatron_gpt import build_gpt_model
    from nemo_red.training.actor import MegatronActor
    from nemo_red.training.config import ParallelConfig
    from nemo_red.training.optim import OptimConfig
    from nemo_red.training.parallel import ParallelLayout, init_distributed, shutdown_distributed

    parallel = ParallelConfig(**VARIANTS[args.variant][0])
    init_distributed(ParallelLayout.of(parallel), seed=0)
    torch.set_num_threads(1)
    shape = ModelShape(
        family="qwen2",
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 3,
        num_layers=args.layers,
        num_heads=args.hidden // 64,
        num_kv_heads=args.hidden // 64,
        head_dim=64,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        max_position_embeddings=args.length,
        tie_word_embeddings=False,
    )
    chunks, pp = parallel.model_chunks, parallel.pp
    models = []
    for v in range(chunks):
        stage = v * pp + ps.get_pipeline_model_parallel_rank()
        models.append(
            build_gpt_model(
                shape,
                parallel.tp,
                pp,
                pre_process=stage == 0,
                post_process=stage == pp * chunks - 1,
                parallel=parallel,
                vp_stage=None if parallel.virtual_pp is None else v,
            )
        )
    optim = OptimConfig(schedule="constant", lr=1e-5, clip_grad=1.0)
    actor = MegatronActor(
        models if chunks > 1 else models[0], shape, optim, args.token_budget, parallel
    )
    regulator = EntropyRegulator(window=1, clip_low=0.0, clip_high=7.0)
    spec = get_preset("red")
    sequences = args.rows * args.token_budget // args.length * ps.get_data_parallel_world_size()
    batch = _batch(args.vocab, sequences, args.length, args.length // 8)

    def step(number: int) -> None:
        stats = actor.compute_logprobs_and_entropy(batch)
        trained = batch.with_fields(old_logprobs=stats.logprobs)
        w = regulator.update(stats.h_rl, stats.h_sft).weight
        actor.train_step(trained, spec, StepContext(step=number, entropy_weight=w))

    step(0)
    dist.barrier()
    before = _rss()
    start = time.perf_counter()
    with PeakRss() as peak:
        step(1)
    seconds = time.perf_counter() - start
    row = {
        "rank": dist.get_rank(),
        "tp_rank": ps.get_tensor_model_parallel_rank(),
        "pp_rank": ps.get_pipeline_model_parallel_rank(),
        "persistent_bytes": before,
        "step_peak_bytes": peak.peak - before,
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "step_seconds": seconds,
        "micro_batches_per_rank": len(actor._micro_batches(batch)),
    }
    rows: list = [None] * dist.get_world_size()
    dist.all_gather_object(rows, row)
    if dist.get_rank() == 0:
        Path(args.out).write_text(json.dumps(rows))
    shutdown_distributed()


def _launch(variant: str, args: argparse.Namespace, out: Path) -> list[dict]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "OMP_NUM_THREADS": "1",
        "MALLOC_MMAP_THRESHOLD_": "65536",
    }
    sizes = [
        f"--{k}={getattr(args, k.replace('-', '_'))}"
        for k in ("hidden", "layers", "vocab", "length", "token-budget", "rows")
    ]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        __file__,
        "--worker",
        f"--variant={variant}",
        f"--out={out}",
        *sizes,
    ]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=1800)
    return json.loads(out.read_text())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _mib(value: float) -> float:
    return round(value / 2**20, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--length", type=int, default=512, help="tokens per sequence")
    parser.add_argument("--token-budget", type=int, default=2048, help="tokens per row")
    parser.add_argument("--rows", type=int, default=2, help="micro-batches per DP rank")
    parser.add_argument("--out", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants.split(","):
            rows = _launch(name, args, Path(tmp) / f"{name}.json")
            runs[name] = {
                "parallel": VARIANTS[name][0],
                "compared_with": VARIANTS[name][1],
                "ranks": rows,
                "step_peak_mib_max_rank": _mib(max(r["step_peak_bytes"] for r in rows)),
                "persistent_mib_max_rank": _mib(max(r["persistent_bytes"] for r in rows)),
            }
            print(name, runs[name]["step_peak_mib_max_rank"], "MiB step peak", flush=True)
    for run in runs.values():
        base = runs.get(run["compared_with"] or "")
        if base is not None:
            saved = base["step_peak_mib_max_rank"] - run["step_peak_mib_max_rank"]
            run["step_peak_saved_mib"] = round(saved, 1)
            run["step_peak_saved_fraction"] = round(saved / base["step_peak_mib_max_rank"], 3)
    result = {
        "benchmark": "peak memory per rank of one RED step, per memory-saving feature (CPU)",
        "date": now(),
        "device": device_info("cpu"),
        "versions": versions("megatron-core"),
        "method": (
            "RSS of each rank sampled every 1 ms during the measured step (log-probs forward "
            "+ training step, after a warm-up step); step peak = max RSS - RSS before the "
            "step; MALLOC_MMAP_THRESHOLD_=65536 so freed tensors leave the RSS; fresh "
            "processes per variant under torchrun --nproc_per_node 2 (gloo)"
        ),
        "config": {
            "hidden": args.hidden,
            "layers": args.layers,
            "vocab": args.vocab,
            "sequence_tokens": args.length,
            "row_tokens": args.token_budget,
            "micro_batches_per_dp_rank": args.rows,
            "dtype": "float32",
        },
        "variants": runs,
    }
    write_result(result, Path(args.out) if args.out else RESULTS / "memory_features_cpu.json")


if __name__ == "__main__":
    main()
