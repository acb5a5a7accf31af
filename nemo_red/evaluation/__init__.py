"""Benchmark evaluation: named benchmarks and their field maps, sampling and grading,
avg@n / pass@k / majority-vote metrics, resumable records and result tables."""

from nemo_red.evaluation.benchmarks import (
    BENCHMARKS,
    Benchmark,
    EvalItem,
    ResolvedBenchmark,
    default_data_dir,
    load_items,
    resolve_benchmarks,
)
from nemo_red.evaluation.harness import (
    EvalSettings,
    ResponseGrader,
    encode_prompts,
    evaluate_benchmarks,
    generate_records,
)
from nemo_red.evaluation.metrics import overall, pass_at_k, summarise
from nemo_red.evaluation.records import ItemRecord, RecordStore, SampleRecord, SettingsMismatchError

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "EvalItem",
    "EvalSettings",
    "ItemRecord",
    "RecordStore",
    "ResolvedBenchmark",
    "ResponseGrader",
    "SampleRecord",
    "SettingsMismatchError",
    "default_data_dir",
    "encode_prompts",
    "evaluate_benchmarks",
    "generate_records",
    "load_items",
    "overall",
    "pass_at_k",
    "resolve_benchmarks",
    "summarise",
]
