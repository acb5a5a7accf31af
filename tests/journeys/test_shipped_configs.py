"""Every YAML under examples/conf/ starts and trains one real step.

Each shipped config runs as a user runs it (``nemo-red train --config ...``; under
torchrun with tp x pp processes when its layout needs them; ``nemo-red compare`` for the
comparison), with only the model and data swapped for tiny stand-ins of the same
architecture and the run scaled down (:data:`SCALE`). The test then checks that the
config the run recorded differs from the shipped one in those keys only, so a shipped
config can never again be one that cannot start.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from nemo_red.cli import main
from nemo_red.training.config import load_config
from nemo_red.training.run_dir import config_changes, flatten_config
from tests.torchrun import REPO_ROOT, run_torchrun

CONF = REPO_ROOT / "examples" / "conf"
TRAIN_CONFIGS = sorted(CONF.glob("*.yaml"))
COMPARE_CONFIGS = sorted((CONF / "compare").glob("*.yaml"))

# The run, scaled down: one step (two when the config starts with SFT warm-up steps).
SCALE = [
    "trainer.prompts_per_step=4",
    "trainer.optim.warmup_steps=0",
    "trainer.eval_every=1",
    "trainer.checkpoint_every=1",
    "trainer.progress=false",
    "trainer.grader_workers=1",
    "rollout.max_new_tokens=16",
    "rollout.eval_max_new_tokens=8",
    "data.eval_limit=4",
    "data.arithmetic.train_size=64",
    "data.arithmetic.test_size=8",
]


def _steps(config_path: Path, overrides: list[str]) -> list[str]:
    """One step of the config's method; with SFT warm-up first, one of each."""
    warmup = load_config(config_path, overrides).algorithm.sft_warmup_steps
    if warmup:
        return [
            "algorithm.sft_warmup_steps=1",
            "algorithm.sft_warmup_optim.warmup_steps=0",
            "trainer.total_steps=2",
        ]
    return ["trainer.total_steps=1"]


def _stand_ins(config_path: Path, tiny_hf: Path, tiny_data) -> list[str]:
    """The model and data of a config that names them, swapped for tiny ones."""
    shipped = load_config(config_path)
    swaps = []
    if shipped.model.path is not None:
        swaps += [f"model.path={tiny_hf}", f"model.tokenizer_path={tiny_hf}"]
    if shipped.data.train_path is not None:
        swaps.append(f"data.train_path={tiny_data.train_parquet}")
    if shipped.data.eval_path is not None:
        swaps.append(f"data.eval_path={tiny_data.eval_jsonl}")
    return swaps


def _swapped_keys(overrides: list[str]) -> set[str]:
    return {o.split("=", 1)[0] for o in overrides}


def _evaluated(row: dict) -> bool:
    """The row has the held-out accuracy, or (a comparison's task in parts) a set's."""
    return any(k.startswith("eval/") and k.endswith("/accuracy") for k in row) or (
        "eval/accuracy" in row
    )


def _check_run(run_dir: Path, shipped: dict, overrides: list[str], steps: int) -> None:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    if rows[0]["step"] == 0:  # the evaluation before training
        assert _evaluated(rows.pop(0))
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    assert all(math.isfinite(r["loss/total"]) and r["skipped"] == 0 for r in rows)
    assert _evaluated(rows[-1]), rows[-1]
    assert (run_dir / "hf" / "model.safetensors").is_file()
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())
    changed = set(config_changes(shipped, flatten_config(recorded)))
    allowed = _swapped_keys(overrides) | {"run.name"}
    # a mapping swapped whole (data.eval_sets={...}) changes its entries' keys
    unexpected = {k for k in changed if not any(k == a or k.startswith(a + ".") for a in allowed)}
    assert not unexpected, unexpected


@pytest.mark.slow
@pytest.mark.parametrize("config_path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_shipped_train_config_runs_a_step(config_path, tiny_hf, tiny_data, tmp_path):
    shipped = load_config(config_path)
    run_dir = tmp_path / "run"
    overrides = [*_stand_ins(config_path, tiny_hf, tiny_data), *SCALE]
    overrides += _steps(config_path, overrides)
    args = ["train", "--config", str(config_path), f"run.output_dir={run_dir}", *overrides]
    world = shipped.parallel.tp * shipped.parallel.pp
    if world > 1:  # its own layout, as scripts/launch_torchrun.sh would start it
        run_torchrun(REPO_ROOT / "nemo_red" / "cli.py", world, args, timeout=600)
    else:
        assert main(args) == 0
    steps = 2 if "trainer.total_steps=2" in overrides else 1
    _check_run(run_dir, flatten_config(shipped), overrides, steps)


def _scaled_comparison(path: Path, out: Path) -> Path:
    """The comparison with one seed, every run scaled down by :data:`SCALE`."""
    spec = yaml.safe_load(path.read_text())
    train = str((path.parent / spec["train_config"]).resolve())
    spec.update(train_config=train, output_dir=str(out / "compare"), seeds=[1], workers=1)
    spec["overrides"] = [*spec.get("overrides", []), *SCALE]
    if spec.get("task") is not None:  # a few rows per part
        spec["task"].update(train_size=40, validation_size=4, test_size=4)
    base = spec.get("base_model")
    if base is not None:
        base["overrides"] = [*base["overrides"], *SCALE]
        base["overrides"] += _steps(Path(train), [*spec["overrides"], *base["overrides"]])
    for arm in spec["arms"]:
        arm["overrides"] = [*arm["overrides"], *SCALE]
        arm["overrides"] += _steps(Path(train), [*spec["overrides"], *arm["overrides"]])
    scaled = out / path.name
    scaled.write_text(yaml.safe_dump(spec, sort_keys=False))
    return scaled


@pytest.mark.slow
@pytest.mark.parametrize("config_path", COMPARE_CONFIGS, ids=lambda p: p.name)
def test_shipped_comparison_runs_a_step_of_every_arm(config_path, tmp_path):
    """The base model and every arm, one seed, each the ``train`` command that
    ``nemo-red compare`` runs (in this process: ``test_compare.py`` covers the runner)."""
    from nemo_red.experiments.compare import (
        base_model_run,
        load_compare_config,
        plan_runs,
        prepare_task,
        train_command,
    )

    shipped = load_compare_config(config_path)
    scaled = load_compare_config(_scaled_comparison(config_path, tmp_path))
    prepare_task(scaled)
    # with a sweep: every arm at the sweep's first value (the others differ in a number)
    chosen = None
    if scaled.sweep is not None:
        chosen = {arm.name: scaled.sweep.values[0] for arm in scaled.arms}
    base = base_model_run(scaled)
    runs = ([] if base is None else [base]) + plan_runs(scaled, chosen)
    assert [r.arm for r in plan_runs(scaled, chosen)] == [arm.name for arm in shipped.arms]
    # the runs' paths to the base model and its data lie in this test's output directory
    moved = [
        "model.path=",
        "model.init_checkpoint=",
        "data.train_path=",
        "data.eval_path=",
        "data.eval_sets=",
    ]
    steps_keys = [
        "algorithm.sft_warmup_steps=",
        "algorithm.sft_warmup_optim.warmup_steps=",
        "trainer.total_steps=",
    ]
    planned = {(r.arm, r.seed): r for r in plan_runs(shipped, chosen)}
    if base is not None:
        planned[(base.arm, base.seed)] = base_model_run(shipped)
    for run in runs:
        assert main(train_command(scaled.train_config, run)[3:]) == 0, run.arm
        unscaled = load_config(shipped.train_config, planned[(run.arm, run.seed)].overrides)
        steps = 2 if "trainer.total_steps=2" in run.overrides else 1
        _check_run(run.run_dir, flatten_config(unscaled), [*SCALE, *moved, *steps_keys], steps)


# ------------------------------------------------------------- scaling-study recipes
SCALING = CONF / "scaling"
SCALING_COMPARISON = SCALING / "compare_sizes.yaml"
SCALING_RECIPES = sorted(p for p in SCALING.glob("*.yaml") if p != SCALING_COMPARISON)
# the family and embedding tying of each recipe's model, for its tiny stand-in
STAND_IN = {
    "red_qwen2.5_math_1.5b.yaml": ("qwen2", True),
    "red_qwen2.5_math_7b.yaml": ("qwen2", False),
    "red_qwen2.5_14b.yaml": ("qwen2", False),
    "red_qwen3_8b.yaml": ("qwen3", False),
    "red_qwen3_14b.yaml": ("qwen3", False),
}
# The one recipe started under torchrun (TP=2, its other layout keys as shipped): the rest
# run their layout at TP=1 in this process, so the suite adds one launch, not five.
TORCHRUN_RECIPE = "red_qwen3_14b.yaml"


def test_every_scaling_recipe_names_its_stand_in():
    assert sorted(STAND_IN) == sorted(p.name for p in SCALING_RECIPES)


@pytest.mark.slow
@pytest.mark.parametrize("config_path", SCALING_RECIPES, ids=lambda p: p.name)
def test_scaling_recipe_runs_a_step_with_a_stand_in_of_its_family(config_path, tiny_data, tmp_path):
    from tests.journeys.conftest import save_tiny_hf

    family, tied = STAND_IN[config_path.name]
    tiny = save_tiny_hf(tmp_path / "tiny_hf", family, tied=tied)
    shipped = load_config(config_path)
    run_dir = tmp_path / "run"
    overrides = [*_stand_ins(config_path, tiny, tiny_data), *SCALE, "trainer.total_steps=1"]
    world = 2 if config_path.name == TORCHRUN_RECIPE else 1
    overrides.append(f"parallel.tp={world}")
    args = ["train", "--config", str(config_path), f"run.output_dir={run_dir}", *overrides]
    if world > 1:
        run_torchrun(REPO_ROOT / "nemo_red" / "cli.py", world, args, timeout=600)
    else:
        assert main(args) == 0
    _check_run(run_dir, flatten_config(shipped), overrides, 1)
    assert json.loads((run_dir / "hf" / "config.json").read_text())["model_type"] == family


def test_scaling_comparison_arms_are_the_recipes_launched_by_torchrun():
    """Each arm repeats one recipe's model and layout; the launcher is the torchrun one."""
    from nemo_red.experiments.compare import load_compare_config

    spec = load_compare_config(SCALING_COMPARISON)
    assert spec.launcher == ["scripts/launch_torchrun.sh"]
    assert (REPO_ROOT / spec.launcher[0]).is_file()
    assert spec.workers == 1
    recipes = {load_config(p).model.path: load_config(p) for p in SCALING_RECIPES}
    sizes = []
    for arm in spec.arms:
        run = load_config(spec.train_config, [*spec.overrides, *arm.overrides])
        recipe = recipes[run.model.path]
        assert run.parallel == recipe.parallel, arm.name
        assert run.model.tokenizer_path == recipe.model.tokenizer_path, arm.name
        sizes.append(recipe.run.name)
    assert sizes == [
        "scaling_qwen2.5_math_1.5b",
        "scaling_qwen2.5_math_7b",
        "scaling_qwen3_8b",
        "scaling_qwen3_14b",
    ]
