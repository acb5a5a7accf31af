"""Dist checkpoints in the key layouts of other megatron tools, written by megatron's own
``dist_checkpointing`` on CPU (one process) from a HF model.

* ``bridge``: Megatron-Bridge / Megatron-LM with Transformer Engine layers:
  ``latest_checkpointed_iteration.txt`` + ``iter_0000000/``, norms fused into
  ``linear_qkv.layer_norm_weight`` / ``linear_fc1.layer_norm_weight``, ``_extra_state``
  objects beside the linear layers.
* ``nemo2``: NeMo 2: the same keys prefixed with ``module.`` under ``weights/``, with a
  ``context/`` directory beside it.
* ``local``: Megatron-LM's local spec before its keys map: ``input_layernorm.weight`` and
  ``pre_mlp_layernorm.weight``.

Each directory gets the HF ``config.json`` next to the checkpoint, which is what nemo_red
needs to build the model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

LAYOUTS = ("bridge", "nemo2", "local")
_LOCAL = {
    "self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
    "mlp.linear_fc1.layer_norm_weight": "pre_mlp_layernorm.weight",
}


def write_foreign_checkpoint(hf_dir: Path, dst: Path, layout: str) -> Path:
    """Writes the HF model of ``hf_dir`` as a ``layout`` dist checkpoint in ``dst``."""
    import torch.distributed as dist
    from megatron.core import dist_checkpointing

    from nemo_red.models.checkpoint_io import load_hf_state_dict, read_hf_config
    from nemo_red.models.conversion import hf_to_megatron
    from nemo_red.models.dist_checkpoint import single_process
    from nemo_red.models.families import ModelShape
    from nemo_red.models.megatron_gpt import build_gpt_model, load_weights

    shape = ModelShape.from_hf_config(read_hf_config(hf_dir))
    dst.mkdir(parents=True)
    shutil.copy2(hf_dir / "config.json", dst / "config.json")
    with single_process():
        model = build_gpt_model(shape)
        load_weights(model, hf_to_megatron(load_hf_state_dict(hf_dir), shape))
        sharded = model.sharded_state_dict()
        for entry in sharded.values():
            if layout == "nemo2":
                entry.key = "module." + entry.key
            elif layout == "local":
                for te_name, local_name in _LOCAL.items():
                    if entry.key.endswith(te_name):
                        entry.key = entry.key[: -len(te_name)] + local_name
        if layout == "nemo2":
            directory = dst / "weights"
            (dst / "context").mkdir()
            (dst / "context" / "model.yaml").write_text("_target_: nemo.collections.llm.GPTModel\n")
        else:
            directory = dst / "iter_0000000"
            (dst / "latest_checkpointed_iteration.txt").write_text("0")
        directory.mkdir()
        state = {"model": sharded, "checkpoint_version": 3.0, "iteration": 0}
        dist_checkpointing.save(state, str(directory))
        dist.barrier()
    return dst
