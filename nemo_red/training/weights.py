"""The actor's full weights in the Hugging Face layout, for rollout-engine refits and export."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from nemo_red.models.conversion import megatron_to_hf


def local_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """This rank's megatron shard (without megatron's ``_extra_state`` entries), on CPU."""
    return {
        k: v.detach().cpu().clone()
        for k, v in model.state_dict().items()
        if not k.endswith("_extra_state")
    }


def full_hf_state_dict(actor: Any) -> dict[str, torch.Tensor]:
    """Gathers every TP shard and pipeline stage of the actor's model (``actor.chunks``)
    into one HF state dict.

    Under a virtual pipeline of V chunks per stage, chunk v of stage p holds the layers of
    virtual stage ``v * pp + p`` of ``pp * V`` consecutive ones (megatron's interleaving),
    so the chunks convert like that many plain stages.

    Collective over the world: every rank must call it; every rank gets the full dict.
    """
    from megatron.core import parallel_state as ps

    actor.gather_weights()  # weights whose all-gather was deferred to the next forward pass
    mine = (
        ps.get_pipeline_model_parallel_rank(),
        ps.get_tensor_model_parallel_rank(),
        ps.get_data_parallel_rank(),
        [local_model_state(chunk) for chunk in actor.chunks],
    )
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    tp = ps.get_tensor_model_parallel_world_size()
    pp = ps.get_pipeline_model_parallel_world_size()
    chunks = len(actor.chunks)
    shards: list[list[Any]] = [[None] * tp for _ in range(pp * chunks)]
    for pp_rank, tp_rank, dp_rank, states in gathered:
        if dp_rank == 0:
            for chunk, state in enumerate(states):
                shards[chunk * pp + pp_rank][tp_rank] = state
    return megatron_to_hf(shards, actor.shape)
