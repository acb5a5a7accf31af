"""torchrun worker: a transformers model of each family vs the converted megatron GPTModel,
logits parity.

Every rank builds the same random HF model (seeded), converts it to its (TP, PP) shard,
runs the megatron forward (pipeline stages hand activations over with send/recv), gathers
the vocabulary shards and compares with the HF logits. Rank 0 writes a JSON report.

A case's ``control`` breaks one thing on purpose, to show the comparison would catch it:
``naive_qkv`` (a plain ``[q; k; v]`` instead of megatron's grouped layout),
``swap_qk_norm`` (the q and k norm weights exchanged), ``no_rope_scaling`` (megatron
without the config's llama3 rope scaling).
"""

import argparse
import dataclasses
import json
import os
import sys

import torch
import torch.distributed as dist


def _hf_model(case: dict):
    from tests.tiny_models import random_model

    heads = case["heads"]
    model = random_model(
        case["family"],
        vocab=case["vocab"],
        hidden=heads * 8,
        heads=heads,
        kv_heads=case["kv_heads"],
        tied=case["tied"],
        max_positions=case.get("max_positions", 64),
        **case.get("extra", {}),
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
    return model


def _hf_state(model, control: str | None) -> dict:
    state = dict(model.state_dict())
    if control == "swap_qk_norm":
        for key in [k for k in state if k.endswith("q_norm.weight")]:
            other = key.replace("q_norm", "k_norm")
            state[key], state[other] = state[other], state[key]
    return state


def run_case(case: dict) -> float | None:
    """Max |logits - HF logits| for one case on this rank (None off the last stage)."""
    from megatron.core import parallel_state as ps
    from megatron.core import tensor_parallel

    from nemo_red.models import conversion
    from nemo_red.models.families import ModelShape
    from nemo_red.models.megatron_gpt import build_gpt_model

    tp, pp, control = case["tp"], case["pp"], case.get("control")
    ps.initialize_model_parallel(tp, pp)
    tensor_parallel.model_parallel_cuda_manual_seed(1234)
    hf_model = _hf_model(case)
    shape = ModelShape.from_hf_config(hf_model.config.to_dict())
    tp_rank, pp_rank = ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_rank()
    first, last = pp_rank == 0, pp_rank == pp - 1
    fuse = conversion.fuse_qkv
    if control == "naive_qkv":
        conversion.fuse_qkv = lambda q, k, v, shape: torch.cat([q, k, v])
    try:
        state = _hf_state(hf_model, control)
        shard = conversion.hf_to_megatron(state, shape, tp, tp_rank, pp, pp_rank)
    finally:
        conversion.fuse_qkv = fuse
    if control == "no_rope_scaling":
        shape = dataclasses.replace(shape, rope_scaling=None)
    model = build_gpt_model(shape, tp, pp, pre_process=first, post_process=last)
    model.load_state_dict(shard, strict=True)
    model.eval()

    torch.manual_seed(7)
    seq = case.get("seq", 11)
    ids = torch.randint(0, case["vocab"], (2, seq))
    positions = torch.arange(seq)[None].expand(2, -1)
    causal = torch.triu(torch.ones(seq, seq, dtype=torch.bool), 1)[None, None]
    error = None
    with torch.no_grad():
        if not first:  # megatron activations between stages are [s, b, h]
            received = torch.empty(seq, 2, shape.hidden_size)
            dist.recv(received, src=ps.get_pipeline_model_parallel_prev_rank())
            model.set_input_tensor(received)
        out = model(ids, positions, causal)
        if not last:
            dist.send(out.contiguous(), dst=ps.get_pipeline_model_parallel_next_rank())
        else:
            shards = [torch.empty_like(out) for _ in range(tp)]
            dist.all_gather(shards, out.contiguous(), group=ps.get_tensor_model_parallel_group())
            logits = torch.cat(shards, dim=-1)[..., : case["vocab"]]
            error = (logits - hf_model(ids).logits).abs().max().item()
    dist.barrier()
    ps.destroy_model_parallel()
    return error


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", required=True, help="JSON list of case dicts")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    from nemo_red.models.megatron_cpu import apply_cpu_patches

    apply_cpu_patches()
    results = []
    for case in json.loads(args.cases):
        error = run_case(case)
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, error)
        results.append({**case, "max_abs_error": max(e for e in gathered if e is not None)})
    if dist.get_rank() == 0:
        with open(args.out, "w") as handle:
            json.dump(results, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
