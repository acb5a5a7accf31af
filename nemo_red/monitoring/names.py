"""The names of a run's metrics, defined once.

The training loop, the actor and the evaluation during training write these keys into
``metrics.jsonl`` (and TensorBoard); the plots, the progress bar and the comparison
aggregation read them. Accuracies and fractions are in [0, 1] (people read them in percent).
Keys a loss composes itself (``loss/<term>``, ``coef/<term>``, ``<population>/clip_frac``)
come from :mod:`nemo_red.algorithms.loss`; the ones the plots use are listed here too.

To add a metric: name it here, write it where it is computed, and read it by this name.
"""

from __future__ import annotations

# rewards of the step's responses
ONLINE_ACCURACY = "reward/online_accuracy"  # mean reward of the online rollouts
OFFLINE_ACCURACY = "reward/offline_accuracy"  # mean reward of the teacher traces
# group accuracy beta (online rollouts only)
BETA_MEAN = "beta/mean"
BETA_ALL_WRONG = "beta/all_wrong"  # fraction of groups with no correct rollout
BETA_ALL_RIGHT = "beta/all_right"
GROUPS_DROPPED = "groups/dropped"  # by dynamic sampling
# entropy regulation (paper Eq. 13)
H_RL = "entropy/h_rl"  # mean token entropy over online tokens
H_SFT = "entropy/h_sft"  # ... over teacher-trace tokens
DELTA_RL = "entropy/delta_rl"  # |1 - H_rl(t) / Hbar_rl(t-1)|
DELTA_SFT = "entropy/delta_sft"
W = "entropy/w"  # the offline weight w(t)
# lengths
ONLINE_LENGTH = "length/online_mean"
OFFLINE_LENGTH = "length/offline_mean"
ONLINE_TRUNCATED = "length/online_truncated"
# the update
LOSS = "loss/total"
GRAD_NORM = "grad_norm"
LR = "lr"
SKIPPED = "skipped"  # 1.0 when the step's gradient was not finite and the update skipped
ONLINE_CLIP_FRACTION = "online/clip_frac"
OFFLINE_CLIP_FRACTION = "offline/clip_frac"
LOGPROB_GAP_MAX = "logprob_gap/max"  # |engine - actor| log-prob of the sampled tokens
LOGPROB_GAP_MEAN = "logprob_gap/mean"
SFT_ONLY = "stage/sft_only"  # 1.0 on steps of an offline-only stage, 0.0 on RL steps
# step rules
HPT_SFT_FRACTION = "hpt/sft_fraction"
RELIFT_PREFIX = "relift/"
# evaluation during training
EVAL_PREFIX = "eval/"
HELD_OUT_ACCURACY = "eval/accuracy"
EVAL_RESPONSE_LENGTH = "eval/response_length"
OVERALL_ACCURACY = "eval/overall/accuracy"  # mean over the benchmarks evaluated
BENCHMARK_ACCURACY_PATTERN = "eval/*/accuracy"
# time
TIME_PREFIX = "time/"
STEP_TIME = "time/step"
THROUGHPUT = "throughput/tokens_per_s"


def eval_metric(set_name: str, metric: str) -> str:
    """``eval/<set>/<metric>``: a metric of one evaluation set (a benchmark)."""
    return f"{EVAL_PREFIX}{set_name}/{metric}"


def phase_time(phase: str) -> str:
    """``time/<phase>``: the seconds a phase of the step took."""
    return f"{TIME_PREFIX}{phase}"


def benchmark_of(key: str) -> str | None:
    """The benchmark a ``eval/<benchmark>/accuracy`` key belongs to (None for other keys)."""
    if key.startswith(EVAL_PREFIX) and key.endswith("/accuracy") and key != OVERALL_ACCURACY:
        name = key.removeprefix(EVAL_PREFIX).removesuffix("/accuracy")
        return name or None
    return None
