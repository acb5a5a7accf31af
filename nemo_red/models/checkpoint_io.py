"""Reading and writing model checkpoints: HF safetensors directories and megatron shards.

HF directory: ``config.json`` plus ``model.safetensors`` or sharded ``model-0000x-of-0000y``
files with a ``model.safetensors.index.json``; tokenizer files are carried along.

megatron directory (this project's layout)::

    nemo_red_model.json                  {"format", "hf_config", "tp", "pp", "dtype"}
    model_tp{r:02d}_pp{s:03d}.safetensors one file per (TP rank, PP stage)
    tokenizer files copied from the HF directory

A megatron directory can be loaded under another TP x PP layout than the one it was saved
with: the shards are merged to the HF layout and split again (exact).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from nemo_red.models.conversion import hf_to_megatron, megatron_to_hf
from nemo_red.models.families import ModelShape
from nemo_red.outputs import check_new_destination, publish, staging_dir

FORMAT = "nemo_red.megatron/1"
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
    """Converts a HF directory of a supported family to a megatron directory for
    ``tp_size`` x ``pp_size``.

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
    dtype_name = _dtype_name(next(iter(state.values())).dtype)
    tmp = staging_dir(Path(dst))
    for pp_rank in range(pp_size):
        for tp_rank in range(tp_size):
            shard = hf_to_megatron(state, shape, tp_size, tp_rank, pp_size, pp_rank)
            save_file(shard, tmp / shard_file(tp_rank, pp_rank))
    meta = {
        "format": FORMAT,
        "hf_config": config,
        "tp": tp_size,
        "pp": pp_size,
        "dtype": dtype_name,
    }
    (tmp / META).write_text(json.dumps(meta, indent=2))
    _copy_tokenizer(src, tmp)
    publish(tmp, Path(dst))
    return shape


def read_megatron_meta(directory: Path) -> dict:
    """The metadata of a megatron directory, with a clear error for anything else."""
    path = Path(directory) / META
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {META} (not a nemo_red megatron checkpoint)")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown format {meta.get('format')!r}, expected {FORMAT}")
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
    """The state dict of one (TP rank, PP stage), resharding when the saved layout differs."""
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
    """Exports a megatron directory as a HF directory (``transformers`` loads it).

    An existing ``dst`` is replaced only with ``overwrite`` and only if it is a HF
    checkpoint; ``dst`` must not be or contain ``src``.
    """
    check_new_destination(Path(dst), "hf", [Path(src)], overwrite)
    meta = read_megatron_meta(src)
    shape = ModelShape.from_hf_config(meta["hf_config"])
    state = megatron_to_hf(_load_all_shards(src, meta), shape)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    save_hf_checkpoint(
        state,
        shape,
        dst,
        Path(src),
        max_shard_bytes=max_shard_bytes,
        config=meta["hf_config"],
        overwrite=overwrite,
    )
    return shape
