"""Benchmark: problems graded per second by the evaluation harness (``nemo-red eval``).

Every problem of the six math test sets (read through the built-in field maps) gets ``n``
responses: the set's reference solution where it has one (MATH500, Minerva and AIME
solutions, GSM8K's worked answer with its ``#### x`` line written as ``\\boxed{x}``), else a
short ``The answer is \\boxed{gold}``; every other response has its final answer perturbed so
that half are wrong. A replay engine hands these back as completions, so the clock measures
what the harness adds to generation: decoding, extraction, math-verify in worker processes,
per-item records and metrics (``generate_records`` + ``summarise``), one benchmark at a time
in chunks of 64 problems, with a grader started before the clock starts.

Multiple-choice grading (in-process, no math-verify) is measured on generated items.

Writes ``benchmarks/results/eval_grading.json`` (or ``--out``) with the device, versions,
date and load average, and prints the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_env import device_info, now, versions
from grader import perturb

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(
    os.environ.get("NEMO_RED_BENCHMARK_DATA", REPO_ROOT / ".." / "shared" / "data" / "benchmarks")
)
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "eval_grading.json"
NAMES = ("math500", "aime24", "amc23", "minerva_math", "olympiadbench", "gsm8k")


class CharTokenizer:
    """Token id = code point."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(map(chr, ids))


class ReplayEngine:
    """Returns the prepared responses of each prompt (keyed by its first token id)."""

    def __init__(self, responses: dict[int, list[str]]) -> None:
        self.responses = responses

    def generate(self, prompts: list[list[int]], params: object) -> list[list[object]]:
        from nemo_red.rollout.base import Completion

        out = []
        for prompt in prompts:
            per = []
            for text in self.responses[prompt[0]]:
                ids = torch.tensor([ord(c) for c in text])
                per.append(Completion(ids, torch.zeros(len(ids)), "stop"))
            out.append(per)
        return out


def _reference(name: str, row: dict, gold: str) -> str:
    if name == "gsm8k":
        worked, _, _ = row["answer"].rpartition("####")
        return f"{worked}\nThe answer is \\boxed{{{gold}}}."
    solution = row.get("solution")
    if isinstance(solution, str) and "\\boxed" in solution:
        return solution
    return f"The answer is \\boxed{{{gold}}}."


def build(data_dir: Path, n: int) -> tuple[list, dict[str, list[dict]]]:
    """The resolved benchmarks, and per benchmark its items with n responses each."""
    from nemo_red.data.loading import iter_rows
    from nemo_red.evaluation import load_items, resolve_benchmarks
    from nemo_red.rewards import extract_boxed

    prepared = {}
    benchmarks = resolve_benchmarks(NAMES, data_dir=data_dir)
    for bench in benchmarks:
        rows = [row for _, row in iter_rows(bench.path)]
        entries = []
        for item, row in zip(load_items(bench), rows, strict=True):
            right = _reference(bench.name, row, item.gold)
            boxed = extract_boxed(right) or item.gold
            box = "\\boxed{" + boxed + "}"
            cut = right.rindex(box) if box in right else right.rindex(boxed)
            wrong = right[:cut] + right[cut:].replace(boxed, perturb(boxed), 1)
            entries.append(
                {"item": item, "responses": [right, wrong] * (n // 2) + [right] * (n % 2)}
            )
        prepared[bench.name] = entries
    return benchmarks, prepared


def measure_math(benchmarks: list, prepared: dict, workers: int, chunk: int) -> dict:
    from nemo_red.evaluation import ResponseGrader, generate_records, summarise
    from nemo_red.rewards import MathGrader
    from nemo_red.rollout.base import SamplingParams

    results = {}
    with MathGrader(num_workers=workers) as math_grader:
        math_grader.start()
        grader = ResponseGrader(math_grader)
        for bench in benchmarks:
            entries = prepared[bench.name]
            n = len(entries[0]["responses"])
            # prompt = one token whose id indexes the prepared responses
            engine = ReplayEngine({i: e["responses"] for i, e in enumerate(entries)})
            params = SamplingParams(n=n, max_new_tokens=1)
            started = time.perf_counter()
            records = []
            for start in range(0, len(entries), chunk):
                part = entries[start : start + chunk]
                records += generate_records(
                    engine,
                    CharTokenizer(),
                    grader,
                    [e["item"] for e in part],
                    [[start + i] for i in range(len(part))],
                    params,
                )
            summary = summarise([r.to_json() for r in records])
            seconds = time.perf_counter() - started
            results[bench.name] = {
                "problems": len(entries),
                "samples_per_problem": n,
                "seconds": round(seconds, 2),
                "problems_per_s": round(len(entries) / seconds, 1),
                "samples_per_s": round(len(entries) * n / seconds, 1),
                "accuracy": round(summary["accuracy"], 4),
                "reasons": summary["reasons"],
            }
            print(bench.name, results[bench.name], flush=True)
    return results


def measure_choice(count: int, n: int) -> dict:
    from nemo_red.evaluation.choice import grade_choice

    options = ("12", "42", "7", "0.5")
    responses = ["Let me think.\nThe answer is (B).", "so \\boxed{C}", "Answer: B", "hmm"]
    started = time.perf_counter()
    graded = 0
    for _ in range(count):
        for j in range(n):
            grade_choice(responses[j % len(responses)], "B", options)
            graded += 1
    seconds = time.perf_counter() - started
    return {"samples": graded, "samples_per_s": round(graded / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=4, help="responses per problem")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if not args.data_dir.is_dir():
        sys.exit(f"benchmark data not found at {args.data_dir} (set NEMO_RED_BENCHMARK_DATA)")
    benchmarks, prepared = build(args.data_dir, args.n)
    load_before = os.getloadavg()
    math = measure_math(benchmarks, prepared, args.workers, args.chunk_size)
    problems = sum(r["problems"] for r in math.values())
    seconds = sum(r["seconds"] for r in math.values())
    result = {
        "benchmark": "eval_grading",
        "date": now(),
        "device": device_info("cpu"),
        "versions": versions("math-verify", "sympy", "transformers"),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "settings": {"n": args.n, "workers": args.workers, "chunk_size": args.chunk_size},
        "math": math,
        "math_total": {
            "problems": problems,
            "seconds": round(seconds, 2),
            "problems_per_s": round(problems / seconds, 1),
            "samples_per_s": round(problems * args.n / seconds, 1),
        },
        "multiple_choice": measure_choice(2000, args.n),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["math_total"]), json.dumps(result["multiple_choice"]))


if __name__ == "__main__":
    main()
