"""torchrun worker: vocab-parallel token stats vs the unsharded function (gloo, CPU).

Every rank builds the same seeded full logits, keeps its vocabulary shard, and compares
values and its slice of the logits gradient with the unsharded computation. Each rank writes
``rank{r}.json`` into ``--out`` and exits non-zero if any case is out of tolerance.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
import torch.distributed as dist

from nemo_red.algorithms.token_stats import (
    token_logprobs_and_entropy,
    vocab_parallel_token_logprobs_and_entropy,
)

TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-5}
# (padded vocabulary, valid vocabulary): no padding, padding inside the last shard, and a
# last shard made only of padding.
VOCABS = [(12, None), (12, 10), (12, 6), (16, None)]


def _case(
    dtype: torch.dtype, vocab: int, valid: int | None, entropy_grad: bool, chunk: int | None
) -> dict[str, object]:
    rank, world = dist.get_rank(), dist.get_world_size()
    gen = torch.Generator().manual_seed(1234 + vocab + (valid or 0))
    tokens = 9
    full = (torch.randn(tokens, vocab, generator=gen, dtype=torch.float64) * 4).to(dtype)
    targets = torch.randint(0, valid or vocab, (tokens,), generator=gen)
    w_logp = torch.randn(tokens, generator=gen, dtype=torch.float64).to(dtype)
    w_ent = torch.randn(tokens, generator=gen, dtype=torch.float64).to(dtype)

    ref_in = full.clone().requires_grad_(True)
    ref_logp, ref_ent = token_logprobs_and_entropy(
        ref_in, targets, with_entropy_grad=entropy_grad, valid_vocab_size=valid
    )
    shard = vocab // world
    start = rank * shard
    par_in = full[:, start : start + shard].clone().requires_grad_(True)
    logp, ent = vocab_parallel_token_logprobs_and_entropy(
        par_in,
        targets,
        vocab_start=start,
        group=dist.group.WORLD,
        with_entropy_grad=entropy_grad,
        valid_vocab_size=valid,
        chunk_size=chunk,
    )
    for lp, en in ((ref_logp, ref_ent), (logp, ent)):
        loss = (w_logp * lp).sum() + ((w_ent * en).sum() if entropy_grad else 0.0)
        loss.backward()
    grad_err = (par_in.grad - ref_in.grad[:, start : start + shard]).abs().max().item()
    result = {
        "dtype": str(dtype),
        "vocab": vocab,
        "valid": valid,
        "entropy_grad": entropy_grad,
        "chunk": chunk,
        "logp_err": (logp - ref_logp).abs().max().item(),
        "entropy_err": (ent - ref_ent).abs().max().item(),
        "grad_err": grad_err,
        "entropy_requires_grad": ent.requires_grad,
    }
    tol = TOLERANCE[dtype]
    result["ok"] = (
        max(result["logp_err"], result["entropy_err"], grad_err) <= tol
        and ent.requires_grad == entropy_grad
        and logp.dtype == ref_logp.dtype
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    out_dir = parser.parse_args().out
    dist.init_process_group("gloo")
    try:
        results = [
            _case(dtype, vocab, valid, entropy_grad, chunk)
            for dtype, (vocab, valid), entropy_grad, chunk in itertools.product(
                TOLERANCE, VOCABS, (False, True), (None, 2)
            )
        ]
        rank = dist.get_rank()
        failed = [r for r in results if not r["ok"]]
        payload = {"rank": rank, "world": dist.get_world_size(), "cases": results}
        (out_dir / f"rank{rank}.json").write_text(json.dumps(payload, indent=1))
        if failed:
            raise SystemExit(f"rank {rank}: {len(failed)} case(s) out of tolerance: {failed}")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
