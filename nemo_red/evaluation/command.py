"""``nemo-red eval``: evaluate a HF or megatron checkpoint on named benchmarks.

Items that cannot be scored (a prompt longer than ``--max-prompt-tokens`` or than the
model's context, a gold answer that cannot be parsed) are dropped and counted in the
table's ``dropped`` column, with a line per benchmark under the table saying why. When no
item at all is scored the command fails (exit status 1). Accuracies are fractions in
``results.json`` and percent in the printed table.

The output directory (``--out``, default ``eval/<model dir name>``) is claimed before
anything is written: it must be new, empty, or an earlier ``nemo-red eval`` output (see
:func:`nemo_red.outputs.claim_directory`), and it is locked while the evaluation runs
(:class:`nemo_red.outputs.DirectoryLock`). Rerunning the same command continues it;
``--restart`` discards its records.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nemo_red.evaluation.benchmarks import BENCHMARKS, DATA_DIR_ENV

__all__ = ["add_eval_parser", "parse_fields", "run_eval"]

ENGINES = ("hf", "vllm", "trtllm")


def parse_fields(text: str | None) -> dict[str, Any] | None:
    """``question=q,answer=a.0`` or a JSON object, into a field map."""
    if not text:
        return None
    if text.lstrip().startswith("{"):
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError(f"--fields: expected a JSON object, got {text!r}")
        return value
    fields: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"--fields: expected key=path pairs separated by commas, got {part!r}")
        fields[key.strip()] = value.strip()
    return fields


def add_eval_parser(sub: Any) -> argparse.ArgumentParser:
    """Adds the ``eval`` subcommand to ``nemo-red``'s subparsers."""
    names = ", ".join(BENCHMARKS)
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on math / multiple-choice benchmarks (avg@n, pass@k)",
        description=(
            "Sample completions for every problem of the benchmarks, grade them "
            "(math-verify on the last \\boxed{}; option letters for multiple choice) and "
            "report avg@n, pass@k, maj@n, response lengths and truncation per benchmark and "
            "overall: fractions in results.json, percent in the printed table. Items that "
            "cannot be scored (prompt longer than --max-prompt-tokens or than the model's "
            "context, unparsable gold answer) are dropped, counted and explained under the "
            "table; when no item is scored the exit status is 1. --out must be new, empty or "
            "an earlier eval output; rerunning with the same --out continues. Built-in "
            f"benchmarks: {names}."
        ),
    )
    p.add_argument("--model", type=Path, required=True, help="HF or megatron checkpoint dir")
    p.add_argument("--tokenizer", type=Path, help="tokenizer dir (default: --model)")
    p.add_argument(
        "--benchmarks",
        required=True,
        help="comma-separated names (math500,aime24,...), NAME=PATH entries or paths",
    )
    p.add_argument(
        "--data-dir", type=Path, help=f"where named benchmarks are (default: ${DATA_DIR_ENV})"
    )
    p.add_argument("--kind", choices=["math", "choice"], default="math", help="custom sets")
    p.add_argument("--layout", default="auto", help="layout of custom sets")
    p.add_argument("--fields", help="field map of custom sets: question=q,answer=a or JSON")
    p.add_argument("--engine", choices=ENGINES, default="hf")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], help="default: bf16 on GPU")
    p.add_argument("--n", type=int, help="samples per problem (default: the paper's per set)")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=8192)
    p.add_argument(
        "--max-prompt-tokens",
        type=int,
        help="drop (and count) longer prompts (default: no limit). Prompts that leave no room "
        "in the model's context (max_position_embeddings) are always dropped and counted",
    )
    p.add_argument("--template", default="qwen_boxed", help="qwen_boxed, luffy or plain")
    p.add_argument("--think", action="store_true", help="grade only after </think>")
    p.add_argument("--limit", type=int, help="first N problems of each benchmark")
    p.add_argument("--pass-k", help="comma-separated k of pass@k (default: 1, 2, 4, ..., n)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32, help="completions decoded together")
    p.add_argument("--chunk-size", type=int, default=64, help="problems per engine call")
    p.add_argument("--workers", type=int, default=2, help="math-verify grading processes")
    p.add_argument("--timeout", type=float, default=5.0, help="grading seconds per answer")
    p.add_argument(
        "--out",
        type=Path,
        help="output dir: new, empty or an earlier eval output (default: eval/<model dir name>)",
    )
    p.add_argument(
        "--restart", action="store_true", help="discard the records of an earlier eval in --out"
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_eval)
    return p


def _hf_dir(model: Path, out: Path) -> Path:
    """The HF directory of the model: itself, or a conversion of a megatron checkpoint."""
    from nemo_red.models import checkpoint_io

    if not (model / checkpoint_io.META).is_file():
        return model
    converted = out / "hf_model"
    if not (converted / "config.json").is_file():
        print(f"[nemo-red] converting {model} to HF in {converted}", file=sys.stderr)
        checkpoint_io.megatron_to_hf_checkpoint(model, converted)
    return converted


def build_eval_engine(args: argparse.Namespace, hf_dir: Path, context: int) -> Any:
    """The rollout engine named by ``--engine`` on the HF directory."""
    import torch

    cuda = torch.cuda.is_available()
    dtype = args.dtype or ("bfloat16" if cuda else "float32")
    if args.engine == "hf":
        from nemo_red.rollout.hf_engine import HFEngine

        return HFEngine.from_pretrained(
            hf_dir,
            dtype=getattr(torch, dtype),
            device="cuda" if cuda else "cpu",
            max_batch_size=args.batch_size,
        )
    if args.engine == "vllm":
        from nemo_red.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(hf_dir, dtype=dtype, max_model_len=context, seed=args.seed)
    from nemo_red.rollout.trtllm_engine import TRTLLMEngine

    return TRTLLMEngine(hf_dir, dtype=dtype, max_model_len=context, seed=args.seed)


def run_eval(args: argparse.Namespace) -> int:
    """Runs ``nemo-red eval`` (see :func:`add_eval_parser` and the module docstring).

    Returns:
        0, or 1 when no item of any benchmark was scored (every one dropped).
    """
    from nemo_red.evaluation.benchmarks import resolve_benchmarks
    from nemo_red.evaluation.harness import EvalSettings
    from nemo_red.outputs import DirectoryLock, claim_directory

    benchmarks = resolve_benchmarks(
        [e for e in args.benchmarks.split(",") if e.strip()],
        args.data_dir,
        kind=args.kind,
        layout=args.layout,
        fields=parse_fields(args.fields),
    )
    settings = EvalSettings(
        n=args.n,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        chunk_size=args.chunk_size,
        max_prompt_tokens=args.max_prompt_tokens,
        pass_ks=tuple(int(k) for k in args.pass_k.split(",")) if args.pass_k else (),
    )
    out = args.out or Path("eval") / args.model.resolve().name
    sources = [args.model] + ([args.tokenizer] if args.tokenizer is not None else [])
    claim_directory(out, "eval", sources=sources)
    with DirectoryLock(out, "evaluating"):
        results = _evaluate(args, benchmarks, settings, out)
    return _report(results, out)


def _evaluate(
    args: argparse.Namespace, benchmarks: list[Any], settings: Any, out: Path
) -> dict[str, Any]:
    """Builds the engine and the graders on the claimed, locked ``out`` and evaluates."""
    from transformers import AutoTokenizer

    from nemo_red.data.dataset import stop_token_ids
    from nemo_red.data.templates import get_template
    from nemo_red.evaluation.harness import ResponseGrader, evaluate_benchmarks
    from nemo_red.models import checkpoint_io
    from nemo_red.rewards import MathGrader

    hf_dir = _hf_dir(args.model, out)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or hf_dir)
    context = int(checkpoint_io.read_hf_config(hf_dir).get("max_position_embeddings", 4096))
    stops = stop_token_ids(tokenizer)
    describe = {
        "model": str(args.model),
        "engine": args.engine,
        "dtype": args.dtype,
        "think_split": args.think,
    }
    engine = build_eval_engine(args, hf_dir, context)
    try:
        with MathGrader(
            num_workers=args.workers, timeout_s=args.timeout, think_split=args.think
        ) as math_grader:
            return evaluate_benchmarks(
                engine,
                tokenizer,
                get_template(args.template),
                ResponseGrader(math_grader, think_split=args.think),
                benchmarks,
                settings,
                out,
                stop_token_ids=stops,
                limit=args.limit,
                restart=args.restart,
                describe=describe,
                progress=not args.no_progress,
                max_context=context,
            )
    finally:
        engine.shutdown()


def _report(results: dict[str, Any], out: Path) -> int:
    """Prints the table and the result paths; 1 (with the reasons) when nothing was scored."""
    from nemo_red.evaluation.report import drop_notes, markdown_table

    summaries = results["benchmarks"]
    print(markdown_table(summaries, results["overall"], results["prompt_limits"]))
    print(f"\nresults: {out / 'results.json'} (per-item records), {out / 'results.md'}")
    notes = drop_notes(summaries, results["prompt_limits"])
    empty = {
        name: notes.get(name, "the benchmark gave no item (see --limit and its data file)")
        for name, s in summaries.items()
        if not s["items"]
    }
    if len(empty) == len(summaries):
        print("nemo-red eval: error: no item was evaluated:", file=sys.stderr)
        for name, why in empty.items():
            print(f"  {name}: {why}", file=sys.stderr)
        return 1
    for name, why in empty.items():
        print(f"nemo-red eval: warning: no item of {name} was evaluated: {why}", file=sys.stderr)
    return 0
