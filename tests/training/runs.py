"""Helpers for tests that run ``nemo-red train`` as a subprocess on the tiny default."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.torchrun import REPO_ROOT

TINY = REPO_ROOT / "examples" / "conf" / "tiny_red.yaml"
SMALL = [
    "data.arithmetic.train_size=200",
    "data.arithmetic.test_size=40",
    "data.eval_limit=16",
    "trainer.prompts_per_step=8",
    "rollout.n=3",
    "rollout.max_new_tokens=16",
    "trainer.progress=false",
    "algorithm.sft_warmup_steps=1",  # step 1 is SFT, the rest RED: both stages run
    "trainer.optim.warmup_steps=1",
    "algorithm.sft_warmup_optim.warmup_steps=0",  # the 1-step SFT stage has no warm-up
]

# a tiny run of 3 steps that trains in process in seconds (``cli.main``)
SHORT = [
    "trainer.total_steps=3",
    "algorithm.sft_warmup_steps=1",  # one SFT step, then two RED steps
    "algorithm.sft_warmup_optim.warmup_steps=0",
    "trainer.optim.warmup_steps=0",
    "trainer.prompts_per_step=4",
    "rollout.n=2",
    "rollout.max_new_tokens=8",
    "trainer.eval_every=0",
    "trainer.progress=false",
    "trainer.loggers=[jsonl]",
    "trainer.grader_workers=1",
    "data.arithmetic.train_size=32",
    "data.arithmetic.test_size=8",
]


def env() -> dict[str, str]:
    """The environment of a training subprocess (one thread, the repository importable)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}


def train_cmd(out: Path, *overrides: str) -> list[str]:
    """``nemo-red train`` on the small tiny default, writing into ``out``."""
    return [
        sys.executable,
        "-m",
        "nemo_red.cli",
        "train",
        "--config",
        str(TINY),
        f"run.output_dir={out}",
        *SMALL,
        *overrides,
    ]


def metrics(run: Path) -> list[dict]:
    """The run's metrics lines without the timing keys (which differ between runs)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(("time", "throughput"))} for r in rows]


def kill_at_checkpoint(cmd: list[str], out: Path, checkpoint: str) -> None:
    """Starts ``cmd`` and SIGKILLs it as soon as ``out``'s latest checkpoint is ``checkpoint``."""
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not (latest.is_file() and latest.read_text() == checkpoint):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
