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
    """Gathers every TP shard and pipeline stage of ``actor.model`` into one HF state dict.

    Collective over the world: every rank must call it; every rank gets the full dict.
    """
    from megatron.core import parallel_state as ps

    mine = (
        ps.get_pipeline_model_parallel_rank(),
        ps.get_tensor_model_parallel_rank(),
        ps.get_data_parallel_rank(),
        local_model_state(actor.model),
    )
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    tp = ps.get_tensor_model_parallel_world_size()
    pp = ps.get_pipeline_model_parallel_world_size()
    shards: list[list[Any]] = [[None] * tp for _ in range(pp)]
    for pp_rank, tp_rank, dp_rank, state in gathered:
        if dp_rank == 0:
            shards[pp_rank][tp_rank] = state
    return megatron_to_hf(shards, actor.shape)
