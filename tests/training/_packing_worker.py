"""torchrun worker: a sequence's log-probs do not depend on what it is packed with.

A tiny random actor computes the log-probs of one 120-token sequence alone, then packed
behind a 3,000-token sequence in a row that ends in padding, in fp32 and bf16, and writes the
largest differences as JSON. Control: the same packed row given to the model as a dense
block-diagonal mask (rotary positions are then the row's, not the sequence's) differs.
"""

import argparse
import json
import sys

import torch
import torch.distributed as dist


def _batch(tokens):
    from nemo_red.training.packing import SequenceBatch

    n = len(tokens)
    return SequenceBatch(
        tokens=tokens,
        prompt_lengths=torch.ones(n, dtype=torch.long),
        is_offline=torch.zeros(n, dtype=torch.bool),
        advantages=torch.zeros(n),
        rewards=torch.zeros(n),
        group_accuracy=torch.zeros(n),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    from nemo_red.training.parallel import ParallelLayout, init_distributed, shutdown_distributed

    init_distributed(ParallelLayout(), seed=0)
    from nemo_red.models.families import ModelShape
    from nemo_red.models.megatron_gpt import build_gpt_model
    from nemo_red.models.sdpa_attention import (
        _packed_row_segments,
        packed_row_params,
        segments_mask,
    )
    from nemo_red.training.actor import MegatronActor
    from nemo_red.training.optim import OptimConfig
    from nemo_red.training.packing import pack_step

    shape = ModelShape("qwen2", 256, 64, 128, 2, 4, 2, 16, 1e-6, 1e6, 4096, True)
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(0, 256, (120,), generator=g)
    filler = torch.randint(0, 256, (3000,), generator=g)
    longer = torch.randint(0, 256, (3150,), generator=g)
    report = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = build_gpt_model(shape, 1, 1, dtype=dtype)
        with torch.no_grad():  # sharper attention than the initialisation's
            for param in model.parameters():
                if param.dim() > 1:
                    param.mul_(8.0)
        actor = MegatronActor(
            model, shape, OptimConfig(schedule="constant", lr=1e-5), token_budget=3200
        )
        alone = actor.compute_logprobs_and_entropy(_batch([seq])).logprobs[0, :119]
        # the longer third sequence gets a row of its own and sets the row length: 3,150
        packed_batch = _batch([filler, seq, longer])
        micro = pack_step(packed_batch, 3200)[1]
        assert micro.rows.tolist() == [0, 1]
        assert micro.input_ids.shape[1] == 3150  # 30 padding tokens after seq
        packed = actor.compute_logprobs_and_entropy(packed_batch).logprobs[1, :119]
        name = str(dtype).removeprefix("torch.")
        report[name] = float((packed - alone).abs().max())

        # control: the dense mask of the same row; rotary positions run over the row
        params = packed_row_params(micro.cu_seqlens, 3150)
        mask = segments_mask(_packed_row_segments(params, 3150, 3150), 3150)
        with torch.no_grad():
            model.eval()
            logits = model(micro.input_ids, micro.position_ids, mask).float()
        logp = torch.log_softmax(logits[0], dim=-1)
        index = micro.gather_index[1, :119]
        row_positions = logp[index, micro.targets[index]]
        report[f"{name}_control_row_positions"] = float((row_positions - alone).abs().max())
    if dist.get_rank() == 0:
        with open(args.out, "w") as handle:
            json.dump(report, handle)
    shutdown_distributed()


if __name__ == "__main__":
    sys.exit(main())
