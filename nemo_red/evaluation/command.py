"""``nemo-red eval``: evaluate a HF or megatron checkpoint, or a training run, on benchmarks.

* ``--model DIR`` evaluates a checkpoint (a megatron one is first converted to HF in
  ``OUT/hf_model``); ``--run RUN_DIR`` evaluates a ``nemo-red train`` run: its final policy
  (``RUN_DIR/hf``, model and tokenizer) with the prompt template, prompt and completion
  lengths and think split it was trained with (read from ``RUN_DIR/config.yaml``; see
  :func:`settings_from_run`). Options given on the command line override what the run
  gives; what came from the run is printed.
* The output directory (``--out``; default ``eval/<model dir name>``, or
  ``RUN_DIR/eval/<benchmarks joined by '+'>`` with ``--run``) is claimed before anything is
  written: it must be new, empty, or an earlier ``nemo-red eval`` output (see
  :func:`nemo_red.outputs.claim_directory`), and it is locked while the evaluation runs.
  Rerunning the same command continues it; ``--restart`` discards its records.
* Items that cannot be scored (a prompt longer than ``--max-prompt-tokens`` or than the
  model's context, a gold answer that cannot be parsed) are dropped and counted in the
  table's ``dropped`` column, with a line per benchmark under the table saying why. When
  no item at all is scored the command fails (exit status 1).
* Accuracies are fractions in ``results.json`` and percent in the printed table.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nemo_red.data.templates import PromptTemplate, get_template
from nemo_red.evaluation.benchmarks import BENCHMARKS, DATA_DIR_ENV, ResolvedBenchmark
from nemo_red.rollout.registry import engine_names

if TYPE_CHECKING:
    from nemo_red.evaluation.harness import EvalSettings
    from nemo_red.rollout.base import RolloutEngine

__all__ = [
    "DEFAULTS",
    "EvalInputs",
    "RunSetting",
    "add_eval_parser",
    "default_out",
    "parse_fields",
    "resolve_inputs",
    "run_eval",
    "settings_from_run",
]


# The defaults of the options a run can set: used with --model, and with --run for what
# neither the command line nor the run gives.
DEFAULTS: dict[str, Any] = {
    "template": "qwen_boxed",
    "max_new_tokens": 8192,
    "max_prompt_tokens": None,
    "think": False,
}


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
        help="evaluate a checkpoint or a training run on math / multiple-choice benchmarks "
        "(avg@n, pass@k)",
        description=(
            "Sample completions for every problem of the benchmarks, grade them "
            "(math-verify on the last \\boxed{}; option letters for multiple choice) and "
            "report avg@n, pass@k, maj@n, response lengths and truncation per benchmark and "
            "overall: fractions in results.json, percent in the printed table. Items that "
            "cannot be scored (prompt longer than --max-prompt-tokens or than the model's "
            "context, unparsable gold answer) are dropped, counted and explained under the "
            "table; when no item is scored the exit status is 1. With --run, the run's "
            "policy is evaluated with the prompt template, lengths and think split it was "
            "trained with (options given here override them). --out must be new, empty or an "
            "earlier eval output; rerunning with the same --out continues. Built-in "
            f"benchmarks: {names}."
        ),
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="HF or megatron checkpoint dir")
    source.add_argument(
        "--run",
        type=Path,
        metavar="RUN_DIR",
        help="a nemo-red train run directory: evaluates RUN_DIR/hf with the run's prompt "
        "template, --max-prompt-tokens, --max-new-tokens and --think (from its config.yaml)",
    )
    p.add_argument("--tokenizer", type=Path, help="tokenizer dir (default: the model's dir)")
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
    p.add_argument("--engine", choices=engine_names(evaluation=True), default="hf")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], help="default: bf16 on GPU")
    p.add_argument("--n", type=int, help="samples per problem (default: the paper's per set)")
    p.add_argument(
        "--temperature",
        type=float,
        default=0.6,
        help="sampling temperature (default: 0.6, the paper's; never taken from a run)",
    )
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument(
        "--max-new-tokens",
        type=int,
        help="most tokens per completion (default: the run's rollout.eval_max_new_tokens, "
        f"or rollout.max_new_tokens; else {DEFAULTS['max_new_tokens']})",
    )
    p.add_argument(
        "--max-prompt-tokens",
        type=int,
        help="drop (and count) longer prompts (default: the run's data.max_prompt_tokens; "
        "else no limit). Prompts that leave no room in the model's context "
        "(max_position_embeddings) are always dropped and counted",
    )
    p.add_argument(
        "--template",
        help="qwen_boxed, luffy or plain (default: the run's data.template with its "
        f"system prompt and think prefix; else {DEFAULTS['template']}). Given with --run, "
        "it replaces the run's whole template",
    )
    p.add_argument(
        "--think",
        action=argparse.BooleanOptionalAction,
        help="grade only after </think> (default: the run's trainer.think_split; else off)",
    )
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
        help="output dir: new, empty or an earlier eval output (default: eval/<model dir "
        "name>; with --run, RUN_DIR/eval/<benchmarks joined by '+'>)",
    )
    p.add_argument(
        "--restart", action="store_true", help="discard the records of an earlier eval in --out"
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_eval)
    return p


@dataclass(frozen=True)
class RunSetting:
    """One setting a training run gives ``nemo-red eval``.

    Attributes:
        value: The value (for ``template`` a :class:`PromptTemplate`).
        shown: How it is printed.
        source: Where in the run it comes from (``data.max_prompt_tokens``).
    """

    value: Any
    shown: str
    source: str


def _describe_template(name: str, system_prompt: str | None, think_prefix: bool) -> str:
    parts = [name]
    if system_prompt is not None:
        short = system_prompt if len(system_prompt) <= 40 else system_prompt[:37] + "..."
        parts.append(f"system prompt {short!r}")
    if think_prefix:
        parts.append("think prefix")
    return ", ".join(parts)


def settings_from_run(run_dir: Path) -> dict[str, RunSetting]:
    """What a training run gives the evaluation of its final policy.

    Keys: ``model`` (``RUN_DIR/hf``, also the tokenizer), ``template`` (see
    :func:`nemo_red.data.templates.template_from_config`), ``max_prompt_tokens``
    (``data.max_prompt_tokens``), ``max_new_tokens`` (``rollout.eval_max_new_tokens``, or
    ``rollout.max_new_tokens`` when unset) and ``think`` (``trainer.think_split``).

    Raises:
        FileNotFoundError: When ``run_dir`` has no ``config.yaml`` or no ``hf/`` policy.
        ConfigError: When the config cannot be loaded.
    """
    from nemo_red.data.templates import template_from_config
    from nemo_red.training.config import load_config

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir}: no config.yaml; is this a nemo-red train run?")
    hf = run_dir / "hf"
    if not (hf / "config.json").is_file():
        raise FileNotFoundError(
            f"{run_dir}: no final policy in {hf} (a run exports it when training ends); "
            "evaluate a checkpoint with --model instead"
        )
    config = load_config(run_dir / "config.yaml", for_training=False)
    data, rollout = config.data, config.rollout
    if rollout.eval_max_new_tokens is not None:
        new_tokens = RunSetting(
            rollout.eval_max_new_tokens,
            str(rollout.eval_max_new_tokens),
            "rollout.eval_max_new_tokens",
        )
    else:
        new_tokens = RunSetting(
            rollout.max_new_tokens, str(rollout.max_new_tokens), "rollout.max_new_tokens"
        )
    template = template_from_config(data)
    return {
        "model": RunSetting(hf, str(hf), "the run's final policy, hf/"),
        "template": RunSetting(
            template,
            _describe_template(data.template, data.system_prompt, data.think_prefix),
            "data.template, data.system_prompt, data.think_prefix",
        ),
        "max_prompt_tokens": RunSetting(
            data.max_prompt_tokens, str(data.max_prompt_tokens), "data.max_prompt_tokens"
        ),
        "max_new_tokens": new_tokens,
        "think": RunSetting(
            config.trainer.think_split, str(config.trainer.think_split), "trainer.think_split"
        ),
    }


@dataclass(frozen=True)
class EvalInputs:
    """What ``nemo-red eval`` evaluates, after the run (if any) and the defaults fill in.

    Attributes:
        model: The checkpoint directory (HF or megatron).
        tokenizer: The tokenizer directory, or None for the model's own.
        template: The prompt template.
        max_new_tokens: Most tokens per completion.
        max_prompt_tokens: Longer prompts are dropped (None: no limit).
        think: Grade only after ``</think>``.
        notes: What came from the run and what the command line overrode, one line each
            (empty without ``--run``).
    """

    model: Path
    tokenizer: Path | None
    template: PromptTemplate
    max_new_tokens: int
    max_prompt_tokens: int | None
    think: bool
    notes: tuple[str, ...] = ()


_FLAGS = {
    "template": "--template",
    "max_prompt_tokens": "--max-prompt-tokens",
    "max_new_tokens": "--max-new-tokens",
    "think": "--think",
}


def _option(key: str, shown: str) -> str:
    if key == "think":
        return "--think" if shown == "True" else "--no-think"
    return f"{_FLAGS[key]} {shown}"


def resolve_inputs(args: argparse.Namespace) -> EvalInputs:
    """The model and the run-dependent settings: the command line's, else the run's
    (``--run``, see :func:`settings_from_run`), else :data:`DEFAULTS`."""
    given = {key: getattr(args, key) for key in _FLAGS}
    if args.run is None:
        values = {k: DEFAULTS[k] if v is None else v for k, v in given.items()}
        return EvalInputs(
            model=args.model,
            tokenizer=args.tokenizer,
            template=get_template(values["template"]),
            max_new_tokens=values["max_new_tokens"],
            max_prompt_tokens=values["max_prompt_tokens"],
            think=values["think"],
        )
    run = settings_from_run(args.run)
    model = run["model"]
    if args.tokenizer is None:
        notes = [f"model and tokenizer: {model.shown} ({model.source})"]
    else:
        notes = [f"model: {model.shown} ({model.source})", f"--tokenizer {args.tokenizer}"]
    values = {}
    for key in _FLAGS:
        setting = run[key]
        if given[key] is None:
            values[key] = setting.value
            notes.append(f"{_option(key, setting.shown)} (from {setting.source})")
        else:
            values[key] = given[key]
            notes.append(
                f"{_option(key, str(given[key]))} (command line; the run has "
                f"{_option(key, setting.shown)} from {setting.source})"
            )
    template = values["template"]
    return EvalInputs(
        model=run["model"].value,
        tokenizer=args.tokenizer,
        template=template if isinstance(template, PromptTemplate) else get_template(template),
        max_new_tokens=values["max_new_tokens"],
        max_prompt_tokens=values["max_prompt_tokens"],
        think=values["think"],
        notes=tuple(notes),
    )


def default_out(args: argparse.Namespace, model: Path, benchmark_names: list[str]) -> Path:
    """``eval/<model dir name>``, or with ``--run`` ``RUN_DIR/eval/<names joined by '+'>``."""
    if args.run is None:
        return Path("eval") / Path(model).resolve().name
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", "+".join(benchmark_names))
    return Path(args.run) / "eval" / name


def _hf_dir(model: Path, out: Path) -> Path:
    """The HF directory of the model: itself, or a conversion of a megatron checkpoint."""
    from nemo_red.models import checkpoint_io

    if not checkpoint_io.is_megatron_checkpoint(model):
        return model
    converted = out / "hf_model"
    if not (converted / "config.json").is_file():
        print(f"[nemo-red] converting {model} to HF in {converted}", file=sys.stderr)
        checkpoint_io.megatron_to_hf_checkpoint(model, converted)
    return converted


def build_eval_engine(args: argparse.Namespace, hf_dir: Path, context: int) -> RolloutEngine:
    """The registered rollout engine named by ``--engine`` on the HF directory."""
    import torch

    from nemo_red.models.checkpoint_io import read_hf_config
    from nemo_red.rollout.registry import EngineRequest, build_engine

    cuda = torch.cuda.is_available()
    request = EngineRequest(
        hf_config=read_hf_config(hf_dir),
        hf_dir=hf_dir,
        dtype=args.dtype or ("bfloat16" if cuda else "float32"),
        device="cuda" if cuda else "cpu",
        seed=args.seed,
        max_batch_size=args.batch_size,
        max_model_len=context,
    )
    return build_engine(args.engine, request)


def run_eval(args: argparse.Namespace) -> int:
    """Runs ``nemo-red eval`` (see :func:`add_eval_parser` and the module docstring).

    Returns:
        0, or 1 when no item of any benchmark was scored (every one dropped).
    """
    from nemo_red.evaluation.benchmarks import resolve_benchmarks
    from nemo_red.evaluation.harness import EvalSettings
    from nemo_red.outputs import DirectoryLock, claim_directory

    inputs = resolve_inputs(args)
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
        max_new_tokens=inputs.max_new_tokens,
        seed=args.seed,
        chunk_size=args.chunk_size,
        max_prompt_tokens=inputs.max_prompt_tokens,
        pass_ks=tuple(int(k) for k in args.pass_k.split(",")) if args.pass_k else (),
    )
    if inputs.notes:
        print(f"[nemo-red] evaluating the run {args.run}; settings:", file=sys.stderr)
        for note in inputs.notes:
            print(f"[nemo-red]   {note}", file=sys.stderr)
    out = args.out or default_out(args, inputs.model, [b.name for b in benchmarks])
    sources = [inputs.model] + ([inputs.tokenizer] if inputs.tokenizer is not None else [])
    claim_directory(out, "eval", sources=sources)
    with DirectoryLock(out, "evaluating"):
        results = _evaluate(args, inputs, benchmarks, settings, out)
    return _report(results, out)


def _evaluate(
    args: argparse.Namespace,
    inputs: EvalInputs,
    benchmarks: list[ResolvedBenchmark],
    settings: EvalSettings,
    out: Path,
) -> dict[str, Any]:
    """Builds the engine and the graders on the claimed, locked ``out`` and evaluates."""
    from transformers import AutoTokenizer

    from nemo_red.data.dataset import stop_token_ids
    from nemo_red.evaluation.harness import ResponseGrader, evaluate_benchmarks
    from nemo_red.models import checkpoint_io
    from nemo_red.rewards import MathGrader

    hf_dir = _hf_dir(inputs.model, out)
    tokenizer = AutoTokenizer.from_pretrained(inputs.tokenizer or hf_dir)
    context = int(checkpoint_io.read_hf_config(hf_dir).get("max_position_embeddings", 4096))
    stops = stop_token_ids(tokenizer)
    describe: dict[str, Any] = {
        "model": str(inputs.model),
        "engine": args.engine,
        "dtype": args.dtype,
        "think_split": inputs.think,
    }
    if args.run is not None:
        describe["run"] = str(args.run)
    engine = build_eval_engine(args, hf_dir, context)
    try:
        with MathGrader(
            num_workers=args.workers, timeout_s=args.timeout, think_split=inputs.think
        ) as math_grader:
            return evaluate_benchmarks(
                engine,
                tokenizer,
                inputs.template,
                ResponseGrader(math_grader, think_split=inputs.think),
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
