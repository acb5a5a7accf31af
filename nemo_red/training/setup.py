"""The building blocks of a run (assembled by ``assembly.py``): data, tokenizer, policy,
and the HF export of the policy.

Rank 0 writes shared files (the generated task, the trained tokenizer) into the run
directory and the other ranks wait at a barrier before reading them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nemo_red.models.families import ModelShape
from nemo_red.models.megatron_gpt import build_gpt_model, load_weights
from nemo_red.outputs import make_readable
from nemo_red.training.config import TrainConfig
from nemo_red.training.parallel import on_rank0


@dataclass(frozen=True)
class DataFiles:
    """Where the run's training and evaluation problems are."""

    train: Path
    eval: Path | None


def prepare_data_files(config: TrainConfig, run_dir: Path, fresh: bool) -> DataFiles:
    """The configured files, or the generated arithmetic task written into the run.

    The task is generated when the run starts ``fresh`` (from step 0: an earlier start
    that failed may have generated it with other settings) or its files are missing.
    """
    data = config.data
    if data.train_path is not None:
        return DataFiles(Path(data.train_path), Path(data.eval_path) if data.eval_path else None)
    from nemo_red.data.arithmetic import ArithmeticTask, write_jsonl

    arith = data.arithmetic
    task = ArithmeticTask(
        min_operands=arith.min_operands,
        max_operands=arith.max_operands,
        max_value=arith.max_value,
        operators=arith.operators,
        seed=config.run.seed,
    )
    folder = run_dir / "data"
    train, test = folder / "train.jsonl", folder / "test.jsonl"

    def write() -> None:
        if fresh or not train.is_file():
            write_jsonl(task.generate(arith.train_size, "train"), train)
            write_jsonl(task.generate(arith.test_size, "test"), test)

    on_rank0(write)
    return DataFiles(train, test)


def prepare_tokenizer(config: TrainConfig, run_dir: Path, problems: list[Any], fresh: bool) -> Any:
    """The configured tokenizer, or a small BPE trained on the training problems (tiny runs).

    The BPE is trained when the run starts ``fresh`` or when it is missing.
    """
    from transformers import AutoTokenizer

    path = config.model.tokenizer_path or config.model.path
    if path is not None:
        return AutoTokenizer.from_pretrained(path)
    folder = run_dir / "tokenizer"

    def train() -> None:
        if not fresh and (folder / "tokenizer.json").is_file():
            return
        from nemo_red.data.tokenizer import train_tokenizer

        texts = [p.question for p in problems] + [p.teacher for p in problems if p.teacher]
        train_tokenizer(texts, vocab_size=512, path=folder)

    on_rank0(train)
    return AutoTokenizer.from_pretrained(folder)


def tiny_shape(config: TrainConfig, vocab_size: int) -> ModelShape:
    """The from-scratch model's architecture, a Qwen2 (vocabulary from the tokenizer)."""
    tiny = config.model.tiny
    return ModelShape(
        family="qwen2",
        vocab_size=vocab_size,
        hidden_size=tiny.hidden_size,
        intermediate_size=tiny.intermediate_size,
        num_layers=tiny.num_layers,
        num_heads=tiny.num_heads,
        num_kv_heads=tiny.num_kv_heads,
        head_dim=tiny.hidden_size // tiny.num_heads,
        rms_norm_eps=1e-6,
        rope_theta=tiny.rope_theta,
        max_position_embeddings=tiny.max_position_embeddings,
        tie_word_embeddings=True,
    )


def build_policy(
    config: TrainConfig, tokenizer: Any, read_weights: bool = True
) -> tuple[torch.nn.Module | list[torch.nn.Module], ModelShape]:
    """This rank's megatron model: loaded from ``model.path`` or initialised from scratch;
    under a virtual pipeline (``parallel.virtual_pp``) the list of its model chunks.

    With ``read_weights`` False only the architecture is read from ``model.path``: for a
    run whose weights come from a checkpoint next (a resume, ``model.init_checkpoint``).
    """
    from megatron.core import parallel_state as ps

    from nemo_red.models import checkpoint_io
    from nemo_red.models.conversion import hf_to_megatron
    from nemo_red.models.dist_checkpoint import load_model

    parallel = config.parallel
    tp, pp = parallel.tp, parallel.pp
    tp_rank, pp_rank = ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_rank()
    dtype = checkpoint_io.DTYPES[config.model.dtype]
    path = config.model.path
    states: list[dict[str, torch.Tensor]] | None = None
    from_dist = False
    # chunk v of this stage is stage v * pp + pp_rank of a pipeline of pp * chunks stages
    stages = [v * pp + pp_rank for v in range(parallel.model_chunks)]
    if path is None:
        shape = tiny_shape(config, len(tokenizer))
    elif checkpoint_io.is_megatron_checkpoint(Path(path)):
        shape = ModelShape.from_hf_config(checkpoint_io.megatron_hf_config(Path(path)))
        if read_weights and checkpoint_io.is_safetensors_layout(Path(path)):
            states = [  # resharded when the directory's layout is another
                checkpoint_io.load_megatron_shard(Path(path), tp, tp_rank, pp * len(stages), s)[1]
                for s in stages
            ]
        from_dist = read_weights and states is None
    else:
        shape = ModelShape.from_hf_config(checkpoint_io.read_hf_config(Path(path)))
        if read_weights:
            hf = checkpoint_io.load_hf_state_dict(Path(path))
            states = [hf_to_megatron(hf, shape, tp, tp_rank, pp * len(stages), s) for s in stages]
    if path is not None:
        parallel.check_layers(shape.num_layers, path)
    chunks = []
    for v, stage in enumerate(stages):
        chunk = build_gpt_model(
            shape,
            tp,
            pp,
            pre_process=stage == 0,
            post_process=stage == pp * len(stages) - 1,
            dtype=dtype,
            parallel=parallel,
            vp_stage=None if parallel.virtual_pp is None else v,
        )
        if states is not None:
            load_weights(chunk, states[v])
        if from_dist:  # collective: every rank reads its shard, resharded by megatron
            assert path is not None
            load_model(chunk, Path(path))
        if torch.cuda.is_available():
            chunk.cuda()
        chunks.append(chunk)
    return (chunks[0] if parallel.virtual_pp is None else chunks), shape


def export_policy(actor: Any, tokenizer: Any, folder: Path) -> Path:
    """Writes the actor's current weights and the tokenizer as a HF directory (collective)."""
    from nemo_red.models.checkpoint_io import save_hf_checkpoint

    state = actor.hf_state_dict()

    def write() -> None:
        # the run owns its exports: a new one replaces the last (if it is a HF checkpoint)
        save_hf_checkpoint(state, actor.shape, folder, overwrite=True)
        tokenizer.save_pretrained(folder)
        make_readable(folder)

    on_rank0(write)
    return folder
