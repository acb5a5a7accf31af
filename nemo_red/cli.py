"""The ``nemo-red`` command line.

Subcommands available in this release:

* ``presets``: list the loss presets (RED, its ablations and the baselines) and what they
  compose;
* ``grade``: grade model responses in a JSONL file against gold answers with math-verify;
* ``convert``: checkpoints of the supported families (Qwen2 / Qwen2.5, Qwen3, Llama 3.x)
  between Hugging Face and megatron-core layouts (any TP x PP);
* ``train``: RED (or a baseline preset) from a YAML config, under ``torchrun`` to scale;
* ``plot``: the training-dynamics PNGs of a run directory;
* ``eval``: a HF or megatron checkpoint on benchmarks by name (MATH500, AIME, AMC, Minerva,
  OlympiadBench, GSM8K, multiple-choice sets) or path: avg@n, pass@k, maj@n, response
  lengths, resumable, with a JSON of every graded completion and a markdown table;
* ``plan``: memory per GPU of a model under a TP x PP x DP layout (actor state, activations,
  rollout engine), whether it fits an H100 / H200, and the smallest layout that fits.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from nemo_red import __version__


def _presets(args: argparse.Namespace) -> int:
    from nemo_red.algorithms.presets import PRESETS, describe, get_preset

    names = args.names or PRESETS.names()
    print("\n".join(describe(get_preset(name)) for name in names))
    return 0


def read_grading_rows(path: Path, response_field: str, gold_field: str) -> list[tuple[str, str]]:
    """``(response, gold)`` pairs of a JSONL file; errors name the file, row and field."""
    pairs = []
    with path.open(encoding="utf-8") as handle:
        for row_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: row {row_number}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}: row {row_number}: expected a JSON object")
            values = []
            for field in (response_field, gold_field):
                if field not in row:
                    raise ValueError(f"{path}: row {row_number}: missing field {field!r}")
                value = row[field]
                if isinstance(value, bool) or not isinstance(value, str | int | float):
                    raise ValueError(
                        f"{path}: row {row_number}: field {field!r} must be a string or a "
                        f"number, got {type(value).__name__}"
                    )
                values.append(str(value))
            pairs.append((values[0], values[1]))
    return pairs


def _grade(args: argparse.Namespace) -> int:
    from nemo_red.rewards import MathGrader

    pairs = read_grading_rows(args.file, args.response_field, args.gold_field)
    with MathGrader(
        num_workers=args.workers, timeout_s=args.timeout, think_split=args.think
    ) as grader:
        results = grader.grade([r for r, _ in pairs], [g for _, g in pairs])
    out = sys.stdout if args.out is None else args.out.open("w", encoding="utf-8")
    try:
        for result in results:
            record = {"reward": result.reward, "reason": str(result.reason.value)}
            out.write(json.dumps({**record, "extracted": result.extracted}) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    counts = Counter(r.reason.value for r in results)
    accuracy = sum(r.reward for r in results) / max(len(results), 1)
    summary = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    print(f"graded {len(results)}: accuracy {100 * accuracy:.2f}% ({summary})", file=sys.stderr)
    return 0


def _convert(args: argparse.Namespace) -> int:
    from nemo_red.models import checkpoint_io

    dtype = None if args.dtype is None else checkpoint_io.DTYPES[args.dtype]
    if args.direction == "hf-to-megatron":
        shape = checkpoint_io.hf_to_megatron_checkpoint(
            args.src, args.dst, args.tp, args.pp, dtype, overwrite=args.overwrite
        )
        layout = "megatron torch_dist, loads under any TP x PP"
    else:
        max_bytes = None if args.max_shard_gb is None else int(args.max_shard_gb * 2**30)
        shape = checkpoint_io.megatron_to_hf_checkpoint(
            args.src, args.dst, dtype, max_bytes, overwrite=args.overwrite
        )
        layout = "Hugging Face safetensors"
    print(
        f"wrote {args.dst} ({layout}; {shape.family}, {shape.num_layers} layers, "
        f"hidden {shape.hidden_size}, {shape.num_heads}/{shape.num_kv_heads} heads, "
        f"vocab {shape.vocab_size})"
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    from nemo_red.training.config import load_config
    from nemo_red.training.trainer import RedTrainer

    config = load_config(args.config, args.overrides)
    trainer = RedTrainer(config, allow_config_change=args.allow_config_change)
    run_dir = Path(config.run.output_dir)
    try:
        if trainer.complete:
            print(
                f"[nemo-red] {run_dir} is already complete (checkpoint at step "
                f"{trainer.complete_at} of {trainer.total_steps}); its policy is in "
                f"{run_dir / 'hf'}. To train on, raise trainer.total_steps and pass "
                "--allow-config-change.",
                file=sys.stderr,
            )
            metrics = _last_metrics(run_dir / "metrics.jsonl")
        else:
            metrics = trainer.train()
    finally:
        trainer.close()
    summary = {k: v for k, v in metrics.items() if k.startswith(("eval/", "reward/"))}
    print(json.dumps({"run_dir": str(run_dir), **summary}))
    return 0


def _last_metrics(path: Path) -> dict:
    """The last values of every metric in a run's log (evaluations included)."""
    from nemo_red.monitoring.metrics_log import read_metrics

    last: dict = {}
    for row in read_metrics(path) if path.is_file() else []:
        last.update(row)
    return last


def _plot(args: argparse.Namespace) -> int:
    from nemo_red.monitoring.plots import plot_run

    metrics = args.run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{args.run_dir}: no metrics.jsonl (is this a run directory?)")
    written = plot_run(metrics, args.out or args.run_dir / "plots")
    print("\n".join(str(p) for p in written))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from nemo_red.experiments.compare import main

    return main(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``nemo-red``."""
    parser = argparse.ArgumentParser(
        prog="nemo-red",
        description="RED (Recall-Extend Dynamics) post-training for math reasoning.",
    )
    parser.add_argument("--version", action="version", version=f"nemo-red {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = sub.add_parser(
        "train", help="train a policy with RED or a baseline preset (run under torchrun to scale)"
    )
    train.add_argument(
        "--config", type=Path, help="YAML config (examples/conf/tiny_red.yaml: the tiny CPU run)"
    )
    train.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. trainer.total_steps=10"
    )
    train.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume a run although its config differs from the one it was started with "
        "(e.g. more trainer.total_steps); the changes are recorded in config_history.jsonl",
    )
    train.set_defaults(func=_train)

    plot = sub.add_parser("plot", help="draw the training-dynamics plots of a run directory")
    plot.add_argument("run_dir", type=Path)
    plot.add_argument("--out", type=Path, help="output directory (default: RUN_DIR/plots)")
    plot.set_defaults(func=_plot)

    from nemo_red.experiments.compare import add_compare_parser

    add_compare_parser(sub).set_defaults(func=_compare)

    from nemo_red.evaluation.command import add_eval_parser

    add_eval_parser(sub)

    from nemo_red.planning.command import add_plan_parser

    add_plan_parser(sub)

    presets = sub.add_parser("presets", help="list the loss presets and their terms")
    presets.add_argument("names", nargs="*", help="preset names (default: all)")
    presets.set_defaults(func=_presets)

    grade = sub.add_parser("grade", help="grade responses in a JSONL file with math-verify")
    grade.add_argument("file", type=Path, help="JSONL with a response and a gold answer per row")
    grade.add_argument("--response-field", default="response")
    grade.add_argument("--gold-field", default="answer")
    grade.add_argument("--think", action="store_true", help="grade only the text after </think>")
    grade.add_argument("--workers", type=int, default=2, help="grading processes")
    grade.add_argument("--timeout", type=float, default=5.0, help="seconds per item")
    grade.add_argument("--out", type=Path, help="per-row results as JSONL (default: stdout)")
    grade.set_defaults(func=_grade)

    convert = sub.add_parser(
        "convert", help="convert checkpoints HF <-> megatron (Qwen2, Qwen3, Llama)"
    )
    convert.add_argument("direction", choices=["hf-to-megatron", "megatron-to-hf"])
    convert.add_argument("src", type=Path, help="source checkpoint directory")
    convert.add_argument(
        "dst", type=Path, help="destination directory: new or empty (see --overwrite)"
    )
    convert.add_argument(
        "--tp", type=int, default=1, help="check that the model splits over this many TP ranks"
    )
    convert.add_argument(
        "--pp", type=int, default=1, help="check that the model splits over this many stages"
    )
    convert.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    convert.add_argument("--max-shard-gb", type=float, help="shard the HF export")
    convert.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing destination, if it is a checkpoint of the kind written",
    )
    convert.set_defaults(func=_convert)
    return parser


def _quiet_known_warnings() -> None:
    """Hides megatron's notices that say nothing to a user: optional CUDA extensions absent on
    CPU hosts, its optimizer probing ``.grad`` of its own shard views, and its use of the
    collectives torch renamed (``reduce_scatter_tensor``, ``all_gather_into_tensor``)."""
    for message in (
        r"Apex is not installed",
        r"Transformer Engine and Apex are not installed",
        r"full scope is deprecated",
        r"The \.grad attribute of a Tensor that is not a leaf Tensor",
    ):
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    warnings.filterwarnings(
        "ignore",
        message=r"`torch\.distributed\.(reduce_scatter_tensor|all_gather_into_tensor)`",
        category=FutureWarning,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nemo-red`` console script."""
    _quiet_known_warnings()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also follow an option (train --config c.yaml a=1 --flag b=2)
    if extra and hasattr(args, "overrides") and all("=" in e and e[0] != "-" for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from nemo_red.outputs import LockedError

    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError, LockedError) as err:
        print(f"nemo-red {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only or unwritable directory
        where = f"{err.filename}: " if err.filename else ""
        print(
            f"nemo-red {args.command}: error: {where}{err.strerror or err} (nothing written "
            "before was removed; fix the cause and run the same command again)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
