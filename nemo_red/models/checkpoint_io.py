"""Reading and writing model checkpoints: HF safetensors directories and megatron shards.

HF directory: ``config.json`` plus ``model.safetensors`` or sharded ``model-0000x-of-0000y``
files with a ``model.safetensors.index.json``; tokenizer files are carried along.

megatron directory (written by ``hf_to_megatron_checkpoint``), Megatron-LM's layout of a
``torch_dist`` dist checkpoint (see ``dist_checkpoint.py``)::

    latest_checkpointed_iteration.txt    "0"
    iter_0000000/                        .metadata, __0_0.distcp, common.pt, metadata.json
    nemo_red_model.json                  {"format": "nemo_red.megatron/2", "hf_config", "dtype"}
    config.json                          the HF config
    tokenizer files copied from the HF directory

It loads under any TP x PP layout (megatron reshards while reading). Directories in the
earlier safetensors layout (``nemo_red.megatron/1``: ``model_tp{r:02d}_pp{s:03d}.safetensors``
per TP rank and PP stage) are still read: by ``megatron_to_hf_checkpoint`` and as a
training ``model.path``, resharded through the HF layout.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from nemo_red.models.conversion import hf_to_megatron, megatron_to_hf
from nemo_red.models.dist_checkpoint import (
    ITERATION_FILE,
    find_dist_checkpoint,
    load_model,
    save_model,
    saved_tensors,
    single_process,
)
from nemo_red.models.families import ModelShape
from nemo_red.models.megatron_gpt import build_gpt_model, load_weights
from nemo_red.outputs import check_new_destination, publish, staging_dir

FORMAT = "nemo_red.megatron/2"  # a torch_dist checkpoint in Megatron-LM's layout
FORMAT_SHARDS = "nemo_red.megatron/1"  # safetensors per (TP rank, PP stage), read only
META = "nemo_red_model.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "generation_config.json",
    "chat_template.jinja",
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def read_hf_config(directory: Path) -> dict:
    """The ``config.json`` of a HF directory, with a clear error when absent."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no config.json (is this a HF model directory?)")
    return json.loads(path.read_text())


def load_hf_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a HF directory (single ``model.safetensors`` or a sharded index)."""
    directory = Path(directory)
    index = directory / "model.safetensors.index.json"
    single = directory / "model.safetensors"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        state: dict[str, torch.Tensor] = {}
        for filename in sorted(set(weight_map.values())):
            path = directory / filename
            if not path.is_file():
                raise FileNotFoundError(f"{index}: shard {filename} is missing")
            state.update(load_file(path))
        missing = sorted(set(weight_map) - set(state))
        if missing:
            raise KeyError(f"{index}: tensors listed but not found: {missing[:5]}")
        return state
    if single.is_file():
        return load_file(single)
    raise FileNotFoundError(f"{directory}: neither model.safetensors nor its index exist")


def _copy_tokenizer(src: Path, dst: Path) -> None:
    for name in TOKENIZER_FILES:
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, Path(dst) / name)


def save_hf_checkpoint(
    state: Mapping[str, torch.Tensor],
    shape: ModelShape,
    directory: Path,
    tokenizer_from: Path | None = None,
    max_shard_bytes: int | None = None,
    config: Mapping | None = None,
    overwrite: bool = False,
) -> None:
    """Writes a HF directory that ``transformers`` loads (staged, then moved into place).

    Tied models keep ``lm_head.weight`` out of the file, as HF does. ``config`` (default: the
    one ``shape`` implies) is written as ``config.json`` with its dtype updated. An existing
    ``directory`` is replaced only with ``overwrite`` and only if it is a HF checkpoint
    (see :func:`nemo_red.outputs.check_new_destination`).
    """
    directory = Path(directory)
    sources = [] if tokenizer_from is None else [Path(tokenizer_from)]
    check_new_destination(directory, "hf", sources, overwrite)
    tmp = staging_dir(directory)
    tensors = {k: v.contiguous() for k, v in state.items()}
    if shape.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    config = dict(shape.to_hf_config() if config is None else config)
    dtypes = {v.dtype for v in tensors.values()}
    config["torch_dtype"] = _dtype_name(dtypes.pop()) if len(dtypes) == 1 else "float32"
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    if max_shard_bytes is None:
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
    else:
        _save_sharded(tensors, tmp, max_shard_bytes)
    if tokenizer_from is not None:
        _copy_tokenizer(tokenizer_from, tmp)
    publish(tmp, directory)


def _save_sharded(tensors: dict[str, torch.Tensor], directory: Path, max_bytes: int) -> None:
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key in sorted(tensors):
        nbytes = tensors[key].numel() * tensors[key].element_size()
        if groups[-1] and size + nbytes > max_bytes:
            groups.append({})
            size = 0
        groups[-1][key] = tensors[key]
        size += nbytes
    weight_map: dict[str, str] = {}
    for i, group in enumerate(groups, start=1):
        name = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        save_file(group, directory / name, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(group, name)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def shard_file(tp_rank: int, pp_rank: int) -> str:
    """File name of one (TP rank, PP stage) shard."""
    return f"model_tp{tp_rank:02d}_pp{pp_rank:03d}.safetensors"


def hf_to_megatron_checkpoint(
    src: Path,
    dst: Path,
    tp_size: int = 1,
    pp_size: int = 1,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> ModelShape:
    """Converts a HF directory of a supported family to a megatron dist checkpoint
    (``torch_dist``).

    The checkpoint loads under any TP x PP layout; ``tp_size`` x ``pp_size`` is only
    checked (the model must split under the layout it is meant for). Runs in one process.
    An existing ``dst`` is replaced only with ``overwrite`` and only if it is a megatron
    checkpoint; ``dst`` must not be or contain ``src``.
    """
    check_new_destination(Path(dst), "megatron", [Path(src)], overwrite)
    config = read_hf_config(src)
    shape = ModelShape.from_hf_config(config)
    shape.check(tp_size, pp_size)
    state = load_hf_state_dict(src)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    model_dtype = next(iter(state.values())).dtype
    tmp = staging_dir(Path(dst))
    with single_process():
        model = build_gpt_model(shape, dtype=model_dtype)
        load_weights(model, hf_to_megatron(state, shape))
        save_model(model, tmp)
    meta = {"format": FORMAT, "checkpoint": "torch_dist", "hf_config": config}
    (tmp / META).write_text(json.dumps({**meta, "dtype": _dtype_name(model_dtype)}, indent=2))
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    _copy_tokenizer(src, tmp)
    publish(tmp, Path(dst))
    return shape


def is_megatron_checkpoint(directory: Path) -> bool:
    """Whether ``directory`` is a megatron checkpoint: this project's (either format), or a
    dist checkpoint of Megatron-LM, Megatron-Bridge or NeMo 2."""
    directory = Path(directory)
    return (directory / META).is_file() or find_dist_checkpoint(directory) is not None


def is_safetensors_layout(directory: Path) -> bool:
    """Whether ``directory`` is in the safetensors shard layout of earlier versions."""
    return (Path(directory) / META).is_file() and read_megatron_meta(directory)[
        "format"
    ] == FORMAT_SHARDS


def megatron_hf_config(directory: Path) -> dict:
    """The HF ``config.json`` of a megatron checkpoint (its own, or the one placed next to a
    Megatron-LM / Megatron-Bridge / NeMo 2 checkpoint)."""
    directory = Path(directory)
    if (directory / META).is_file():
        return read_megatron_meta(directory)["hf_config"]
    if find_dist_checkpoint(directory) is None:
        raise FileNotFoundError(
            f"{directory}: neither a nemo_red megatron checkpoint ({META}) nor a megatron "
            f"dist checkpoint ({ITERATION_FILE}, weights/.metadata or .metadata)"
        )
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"{directory}: a megatron dist checkpoint without the HF config.json of its "
            "model: copy the config.json (and tokenizer files) of the Hugging Face model it "
            "was converted from into this directory"
        )
    return read_hf_config(directory)


def read_megatron_meta(directory: Path) -> dict:
    """The metadata of a megatron directory, with a clear error for anything else."""
    path = Path(directory) / META
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {META} (not a nemo_red megatron checkpoint)")
    meta = json.loads(path.read_text())
    if meta.get("format") not in (FORMAT, FORMAT_SHARDS):
        raise ValueError(
            f"{path}: unknown format {meta.get('format')!r}, expected {FORMAT} or {FORMAT_SHARDS}"
        )
    return meta


def _load_all_shards(directory: Path, meta: dict) -> list[list[dict[str, torch.Tensor]]]:
    shards = []
    for pp_rank in range(meta["pp"]):
        row = []
        for tp_rank in range(meta["tp"]):
            path = Path(directory) / shard_file(tp_rank, pp_rank)
            if not path.is_file():
                raise FileNotFoundError(f"{directory}: shard {path.name} is missing")
            row.append(load_file(path))
        shards.append(row)
    return shards


def load_megatron_shard(
    directory: Path, tp_size: int, tp_rank: int, pp_size: int, pp_rank: int
) -> tuple[ModelShape, dict[str, torch.Tensor]]:
    """The state dict of one (TP rank, PP stage) of a checkpoint in the safetensors shard
    layout, resharding when the saved layout differs."""
    meta = read_megatron_meta(directory)
    shape = ModelShape.from_hf_config(meta["hf_config"])
    shape.check(tp_size, pp_size)
    if (meta["tp"], meta["pp"]) == (tp_size, pp_size):
        return shape, load_file(Path(directory) / shard_file(tp_rank, pp_rank))
    hf = megatron_to_hf(_load_all_shards(directory, meta), shape)
    return shape, hf_to_megatron(hf, shape, tp_size, tp_rank, pp_size, pp_rank)


def megatron_to_hf_checkpoint(
    src: Path,
    dst: Path,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int | None = None,
    overwrite: bool = False,
) -> ModelShape:
    """Exports a megatron checkpoint (this project's, in either format, or a dist checkpoint
    of Megatron-LM, Megatron-Bridge or NeMo 2 with the HF ``config.json`` next to it) as a HF
    directory that ``transformers`` loads. Runs in one process.

    An existing ``dst`` is replaced only with ``overwrite`` and only if it is a HF
    checkpoint; ``dst`` must not be or contain ``src``.
    """
    check_new_destination(Path(dst), "hf", [Path(src)], overwrite)
    hf_config = megatron_hf_config(src)
    shape = ModelShape.from_hf_config(hf_config)
    if is_safetensors_layout(src):
        state = megatron_to_hf(_load_all_shards(src, read_megatron_meta(src)), shape)
    else:
        state = _dist_checkpoint_to_hf(Path(src), shape)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    save_hf_checkpoint(
        state,
        shape,
        dst,
        Path(src),
        max_shard_bytes=max_shard_bytes,
        config=hf_config,
        overwrite=overwrite,
    )
    return shape


def _dist_checkpoint_to_hf(src: Path, shape: ModelShape) -> dict[str, torch.Tensor]:
    """The HF state dict of the dist checkpoint of ``src``, read into one TP1 x PP1 model."""
    directory = find_dist_checkpoint(src)
    assert directory is not None  # megatron_hf_config found it
    saved = saved_tensors(directory)
    embedding = next(k for k in saved if k.endswith("embedding.word_embeddings.weight"))
    with single_process():
        model = build_gpt_model(shape, dtype=saved[embedding].dtype)
        load_model(model, src)
        state = {k: v for k, v in model.state_dict().items() if not k.endswith("_extra_state")}
    return megatron_to_hf([[state]], shape)
