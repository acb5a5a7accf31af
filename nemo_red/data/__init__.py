"""Training data: problems with gold answers and teacher traces, prompts, tokens, batches.

Typical use::

    result = load_problems("data/openr1.parquet")            # layout auto-detected
    problems, skipped = result.problems, result.skipped
    template = get_template("luffy")
    tokenized, dropped = tokenize_problems(problems, tokenizer, template, 1024, 8192)
    sampler = ProblemSampler(len(tokenized), batch_size=128, seed=42)
    batch = batch_of(tokenized, sampler.next_batch())
"""

from nemo_red.data.dataset import (
    DROP_REASONS,
    ProblemSampler,
    TokenizedProblem,
    batch_of,
    tokenize_problems,
)
from nemo_red.data.layouts import LAYOUT_NAMES, LAYOUTS, FieldMap, detect_layout
from nemo_red.data.loading import (
    LoadResult,
    check_golds,
    find_data_files,
    load_problems,
)
from nemo_red.data.records import DataError, Problem
from nemo_red.data.templates import TEMPLATES, PromptTemplate, get_template, template_from_config

__all__ = [
    "DROP_REASONS",
    "LAYOUTS",
    "LAYOUT_NAMES",
    "TEMPLATES",
    "DataError",
    "FieldMap",
    "LoadResult",
    "Problem",
    "ProblemSampler",
    "PromptTemplate",
    "TokenizedProblem",
    "batch_of",
    "check_golds",
    "detect_layout",
    "find_data_files",
    "get_template",
    "load_problems",
    "template_from_config",
    "tokenize_problems",
]
