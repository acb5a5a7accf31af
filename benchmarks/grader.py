"""Benchmark: math-verify grading throughput of ``nemo_red.rewards.MathGrader``.

Items: the 500 MATH500 test problems, each graded twice against its gold ``answer``:

* correct: the reference ``solution`` text itself (a realistic response, several hundred
  characters, final answer in ``\\boxed{}``, often written differently from the gold);
* wrong: the same solution with its last box perturbed (a number plus one, otherwise
  ``+1`` appended to the expression).

The 1,000 items are shuffled with a fixed seed and graded with 1 worker, then with 2 workers,
each in a fresh grader started (workers imported and warmed up) before the clock starts, so
the first pass is the rate with a cold sympy cache:

* ``verifications_per_s``: items / wall-clock seconds of ``MathGrader.grade``;
* ``verifications_per_worker_cpu_s``: items / CPU seconds the workers used (from /proc), which
  other load on a shared machine does not skew.

``--repeats`` > 1 grades the same items again in the same workers (warm caches; reported
separately). The outcome counts are part of the result, as a check that the work done is the
intended one. The 2-over-1 speed-up is only meaningful when the load average shows an
otherwise idle machine.

Writes ``benchmarks/results/grader.json`` (or ``--out``) with the device, the versions, the
date, the load average (this machine may be shared) and the numbers, and prints them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_env import device_info, now, versions

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT / ".." / "shared" / "data" / "benchmarks"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "grader.json"
_INTEGER_OR_DECIMAL = re.compile(r"-?\d+(\.\d+)?")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the given processes (from /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def perturb(answer: str) -> str:
    """A wrong answer close to ``answer``."""
    text = answer.strip()
    if _INTEGER_OR_DECIMAL.fullmatch(text):
        return str(int(text) + 1) if "." not in text else f"{float(text) + 1:g}"
    return f"{text}+1"


def build_items(data_dir: Path, seed: int) -> list[tuple[str, str, str]]:
    """(response, gold, kind) for every MATH500 problem, correct and wrong, shuffled."""
    from nemo_red.rewards import extract_boxed

    items = []
    for line in (data_dir / "math500" / "test.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        solution, gold = row["solution"], row["answer"]
        boxed = extract_boxed(solution)
        if boxed is None:
            continue
        cut = solution.rindex("\\boxed{" + boxed + "}")
        wrong = solution[:cut] + solution[cut:].replace(boxed, perturb(boxed), 1)
        items += [(solution, gold, "correct"), (wrong, gold, "wrong")]
    random.Random(seed).shuffle(items)
    return items


def measure(items: list[tuple[str, str, str]], num_workers: int, repeats: int) -> dict:
    """Grade the items with a fresh grader of ``num_workers`` workers."""
    from nemo_red.rewards import MathGrader

    responses = [item[0] for item in items]
    golds = [item[1] for item in items]
    passes = []
    with MathGrader(num_workers=num_workers) as grader:
        started = time.perf_counter()
        grader.start()
        startup_s = time.perf_counter() - started
        for _ in range(repeats):
            pids = grader.worker_pids
            cpu_before = cpu_seconds(pids)
            started = time.perf_counter()
            results = grader.grade(responses, golds)
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(pids) - cpu_before if grader.restarts == 0 else float("nan")
            by_kind: dict[str, Counter] = {"correct": Counter(), "wrong": Counter()}
            for item, result in zip(items, results, strict=True):
                by_kind[item[2]][result.reason.value] += 1
            passes.append(
                {
                    "seconds": round(elapsed, 3),
                    "verifications_per_s": round(len(items) / elapsed, 1),
                    "worker_cpu_s": round(cpu, 2),
                    "verifications_per_worker_cpu_s": round(len(items) / cpu, 1),
                    "outcomes": {kind: dict(counts) for kind, counts in by_kind.items()},
                }
            )
        restarts = grader.restarts
    return {
        "num_workers": num_workers,
        "items": len(items),
        "startup_s": round(startup_s, 3),
        "cold": passes[0],
        "warm": passes[1:],
        "worker_restarts": restarts,
    }


def main() -> None:
    """Run the benchmark and write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=None, help="benchmark data directory")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO_ROOT))
    data_dir = args.data or Path(os.environ.get("NEMO_RED_BENCHMARK_DATA", DEFAULT_DATA))
    data_dir = data_dir.resolve()
    if not (data_dir / "math500" / "test.jsonl").is_file():
        raise SystemExit(f"MATH500 not found under {data_dir} (set NEMO_RED_BENCHMARK_DATA)")

    items = build_items(data_dir, args.seed)
    load_before = os.getloadavg()
    runs = [measure(items, workers, args.repeats) for workers in args.workers]
    load_after = os.getloadavg()
    rates = {run["num_workers"]: run["cold"]["verifications_per_s"] for run in runs}
    result = {
        "benchmark": "MathGrader verifications per second on MATH500 (correct + perturbed)",
        "date": now(),
        "device": {**device_info("cpu"), "usable_cores": len(os.sched_getaffinity(0))},
        "versions": versions("math-verify", "sympy", "latex2sympy2_extended"),
        "env": {
            "loadavg_1_5_15_before": [round(x, 2) for x in load_before],
            "loadavg_1_5_15_after": [round(x, 2) for x in load_after],
        },
        "config": {"timeout_s": 5.0, "seed": args.seed, "repeats": args.repeats},
        "runs": runs,
        "cold_verifications_per_s": rates,
    }
    if 1 in rates and 2 in rates:
        result["speedup_2_over_1_workers"] = round(rates[2] / rates[1], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
