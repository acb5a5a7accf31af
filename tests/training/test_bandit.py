"""The online RL path raises the reward of a one-token bandit (a golden learning check).

Unit tests check each loss against hand-computed values; this checks that the pieces
together (rollouts, groups, advantages, log pi_old, the actor's step, the refit) move the
policy toward rewarded outputs, which a sign or bookkeeping error anywhere would break.
"""

import json
from pathlib import Path

import pytest

from tests.torchrun import run_torchrun

WORKER = Path(__file__).with_name("_bandit_worker.py")


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("preset", ["grpo", "red"])
def test_online_rl_raises_the_bandit_reward(tmp_path: Path, preset: str) -> None:
    out = tmp_path / "report.json"
    run_torchrun(WORKER, 1, ["--preset", preset, "--out", str(out)], timeout=300)
    rewards = json.loads(out.read_text())["rewards"]
    start, end = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    print(f"{preset}: mean sampled reward {start:.2f} (first 3 steps) -> {end:.2f} (last 3)")
    assert start < 0.5
    assert end > start + 0.3, rewards
