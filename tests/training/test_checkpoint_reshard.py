"""torch_dist checkpoints reshard: training state resumes under another TP x PP x DP layout
and world size, and model checkpoints (this project's and other tools' key layouts) load
under any layout.

One torchrun launch (2 ranks) saves and resumes every two-rank layout and reads the model
checkpoints under TP2 and PP2; one single process resumes a two-rank checkpoint.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nemo_red.cli import main
from tests.models.foreign_checkpoints import LAYOUTS, write_foreign_checkpoint
from tests.tiny_models import random_qwen2
from tests.torchrun import _env, run_torchrun

WORKER = Path(__file__).with_name("_reshard_worker.py")
pytestmark = [pytest.mark.distributed, pytest.mark.slow]
ATOL = 1e-6


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("reshard")
    random_qwen2(vocab=64, noise=0.05).save_pretrained(root / "hf", safe_serialization=True)
    assert main(["convert", "hf-to-megatron", str(root / "hf"), str(root / "converted")]) == 0
    models = [root / "converted"]
    models += [write_foreign_checkpoint(root / "hf", root / name, name) for name in LAYOUTS]
    model_args = ["--models", *map(str, models), "--hf", str(root / "hf")]
    run_torchrun(WORKER, 2, ["--phase", "save", "--dir", str(root), *model_args], timeout=900)
    subprocess.run(
        [sys.executable, str(WORKER), "--phase", "single", "--dir", str(root)],
        check=True,
        env=_env(),
        capture_output=True,
        timeout=600,
    )
    return {
        **torch.load(root / "save.pt", weights_only=False),
        **torch.load(root / "single.pt", weights_only=False),
    }


def _max_diff(run: dict, ref: dict) -> float:
    assert run["params"].keys() == ref["params"].keys()
    return max(float((run["params"][k] - ref["params"][k]).abs().max()) for k in ref["params"])


@pytest.mark.parametrize(
    ("resumed", "uninterrupted", "writer"),
    [
        ("tp1_dp2_to_tp2", "tp2", "tp1_dp2"),  # TP1 -> TP2 (and DP2 -> DP1)
        ("pp2_to_pp1_dp2", "tp1_dp2", "pp2"),  # PP2 -> PP1 (and DP1 -> DP2)
        ("tp1_dp2_to_single", "single", "tp1_dp2"),  # DP2 -> DP1, world size 2 -> 1
    ],
)
def test_resumed_under_another_layout_continues_like_an_uninterrupted_run(
    runs, resumed, uninterrupted, writer
):
    run = runs[resumed]
    assert len(run["history"]) == 4  # 2 steps before the checkpoint, 2 after
    written = runs[writer]["at_checkpoint"]
    for key, value in written.items():  # the weights come back exactly, resharded
        assert torch.equal(run["at_checkpoint"][key], value), key
    # 2 steps later: next to the uninterrupted run of the layout that wrote the checkpoint
    # (measured: within 1.1e-6; the last 2 steps ran under another layout) and, less
    # closely, to the uninterrupted run of the new layout (uninterrupted runs of two layouts
    # differ by up to 2e-5 after 4 steps: their reductions round differently)
    for name, atol, rel in ((writer, 2 * ATOL, 1e-5), (uninterrupted, 1e-4, 1e-2)):
        ref = runs[name]
        assert _max_diff(run, ref) <= atol, name
        assert [h["lr"] for h in run["history"]] == [h["lr"] for h in ref["history"]]
        for got, want in zip(run["history"], ref["history"], strict=True):
            assert got["loss/total"] == pytest.approx(want["loss/total"], abs=1e-5), name
        # w is a ratio of entropy changes: it magnifies the layouts' rounding
        assert run["regulator"]["weight"] == pytest.approx(ref["regulator"]["weight"], rel=rel)


def test_model_checkpoints_load_under_any_layout_in_every_key_layout(runs):
    loads = runs["model_loads"]
    names = ["converted", *LAYOUTS]
    assert sorted(loads) == sorted(f"{n} tp{t} pp{p}" for n in names for t, p in ((2, 1), (1, 2)))
    for case, (same_keys, diff) in loads.items():
        assert same_keys, case
        assert diff == 0.0, case  # resharding moves the weights, it does not compute
