"""``nemo-red compare``: config validation, and a tiny comparison end to end (then skipped)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nemo_red.experiments.compare import (
    DONE_FILE,
    load_compare_config,
    plan_runs,
    plan_sweep,
    select,
)
from nemo_red.training.config import ConfigError
from tests.torchrun import REPO_ROOT
from tests.training.runs import SMALL, TINY
from tests.training.runs import env as _env

SHIPPED = REPO_ROOT / "examples" / "conf" / "compare" / "compare_tiny.yaml"


_TASK = (
    "task: {parts: {recall: {max_operands: 2}, extend: {min_operands: 3}}, "
    "base_parts: [recall], train_size: 40, validation_size: 8, test_size: 8}\n"
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "compare.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_comparison_lists_the_issues_arms_and_loads():
    config = load_compare_config(SHIPPED)
    names = [arm.name for arm in config.arms]
    for name in (
        "sft",
        "grpo",
        "sft_grpo",
        "mixpolicy",
        "offline_onpolicy",
        "luffy",
        "srft",
        "chord",
        "red_entropy",
        "red_shift",
        "red",
        "relift",
        "hpt",
        "red_wclip_0_G",
        "red_wclip_1_inf",
        "red_window_5",
        "red_window_10",
    ):
        assert name in names
    assert len(config.seeds) >= 5
    assert config.reference == "red"
    assert config.task is not None
    assert config.sweep is not None
    assert len(config.sweep.values) >= 3
    sweep = plan_sweep(config)
    assert len(sweep) == len(names) * len(config.sweep.values) * len(config.sweep.seeds)
    runs = plan_runs(config, {arm.name: config.sweep.values[0] for arm in config.arms})
    assert len(runs) == len(names) * len(config.seeds)
    assert any(
        o.startswith("model.path=") and o.endswith("base_model/hf") for o in runs[0].overrides
    )
    # the sweep's seed-1 run of the chosen value is the arm's seed-1 run
    assert runs[0].run_dir == sweep[0].run_dir
    assert runs[0].overrides == sweep[0].overrides


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "train_config: x.yaml\narms: [{name: a}]\nworker: 2\n",
            r"unknown key 'worker'.*'workers'",
        ),
        (
            f"train_config: {TINY}\narms: [{{name: a, override: []}}]\n",
            r"unknown key.*'override'.*'overrides'",
        ),
        (f"train_config: {TINY}\narms: []\n", "arms is empty"),
        (f"train_config: {TINY}\narms: [{{name: a}}, {{name: a}}]\n", "must be unique"),
        (f"train_config: {TINY}\narms: [{{name: 'a b'}}]\n", "arm name 'a b'"),
        (
            f"train_config: {TINY}\narms: [{{name: a, overrides: [trainer.lrate=1]}}]\n",
            r"arm 'a': .*unknown key 'trainer.lrate'",
        ),
        (f"train_config: {TINY}\narms: [{{name: a, overrides: [oops]}}]\n", "key=value"),
        (f"train_config: {TINY}\narms: [{{name: a}}]\nseeds: []\n", "seeds must be"),
        ("arms: [{name: a}]\n", "train_config is required"),
        (f"train_config: {TINY}\narms: [{{name: a}}]\nreference: b\n", "reference 'b' is not"),
        (
            f"train_config: {TINY}\narms: [{{name: a}}]\nsweep: {{values: [1.0e-4]}}\n",
            "sweep needs task",
        ),
        (
            f"train_config: {TINY}\narms: [{{name: a}}]\n"
            "task: {parts: {x: {operators: '/'}}, base_parts: [x]}\n",
            r"task.parts.x: .*operator",
        ),
        (
            f"train_config: {TINY}\narms: [{{name: a}}]\n{_TASK}"
            "sweep: {keys: [trainer.optim.lrate], values: [1.0e-4]}\n",
            r"arm 'a' at 0.0001: .*unknown key 'trainer.optim.lrate'",
        ),
        (
            f"train_config: {TINY}\narms: [{{name: a}}]\n{_TASK}sweep: {{values: []}}\n",
            "sweep.values must be",
        ),
    ],
)
def test_bad_comparison_configs_fail_naming_the_key(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_compare_config(_write(tmp_path, text))


def _compare(config: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nemo_red.cli", "compare", "--config", str(config)],
        env=_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_base_model_stage_feeds_its_export_and_generated_data_to_every_arm(tmp_path):
    config = load_compare_config(
        _write(
            tmp_path,
            f"""\
            train_config: {TINY}
            output_dir: out
            base_model: {{seed: 5, overrides: [algorithm.preset=sft], carry_optimizer: true}}
            arms: [{{name: red, overrides: [model.dtype=float32]}}]
            seeds: [1, 2]
            """,
        )
    )
    runs = plan_runs(config)
    assert [(r.arm, r.seed, str(r.run_dir)) for r in runs] == [
        ("red", 1, "out/runs/red/seed_1"),
        ("red", 2, "out/runs/red/seed_2"),
    ]
    # base-model settings first, the arm's own overrides last (they win), then the seed
    assert runs[0].overrides == [
        "model.path=out/base_model/hf",
        "model.init_checkpoint=out/base_model/checkpoints",
        "data.train_path=out/base_model/data/train.jsonl",
        "data.eval_path=out/base_model/data/test.jsonl",
        "model.dtype=float32",
        "run.seed=1",
        "run.name=red_seed1",
    ]


def _two_steps(*extra: str) -> list[str]:
    """Overrides of every run of a tiny comparison: 2 steps from the start, constant lr."""
    shared = [o for o in SMALL if not o.startswith(("algorithm.sft_warmup", "trainer.optim"))]
    return [
        *shared,
        "algorithm.sft_warmup_steps=0",
        "trainer.total_steps=2",
        "trainer.checkpoint_every=2",
        "trainer.loggers=[jsonl]",
        "trainer.optim.schedule=constant",
        *extra,
    ]


@pytest.mark.slow
def test_tiny_comparison_end_to_end_then_rerun_skips_finished_runs(tmp_path):
    shared = _two_steps("trainer.eval_every=1")
    config = _write(
        tmp_path,
        f"""\
        train_config: {TINY}
        output_dir: out
        overrides: {json.dumps(shared)}
        base_model: {{overrides: [algorithm.preset=sft], carry_optimizer: true}}
        arms:
          - {{name: sft, overrides: [algorithm.preset=sft]}}
          - {{name: grpo, overrides: [algorithm.preset=grpo]}}
        seeds: [1]
        workers: 2
        """,
    )
    result = _compare(config, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    assert (out / "runs" / "grpo" / "seed_1" / "hf" / "model.safetensors").is_file()
    log = (out / "runs" / "grpo" / "seed_1" / "compare.log").read_text()
    assert "weights and optimizer moments from out/base_model/checkpoints/step_000002" in log
    results = json.loads((out / "results.json").read_text())
    assert list(results["arms"]) == ["sft", "grpo"]
    for arm in results["arms"].values():
        assert arm["seeds"] == [1]
        assert len(arm["final_accuracy"]) == 1
        assert 0.0 <= arm["accuracy_mean"] <= 1.0
        assert arm["accuracy_std"] == 0.0
        assert arm["wall_s_mean"] > 0
        assert arm["runs"]["1"]["curves"]["eval/accuracy"]["steps"] == [0, 1, 2]
    assert results["arms"]["grpo"]["mean_response_length"] > 0
    assert results["arms"]["sft"]["mean_response_length"] is None
    base = json.loads((out / "base_model" / "metrics.jsonl").read_text().splitlines()[-1])
    assert results["base_model"]["final_accuracy"] == base["eval/accuracy"]
    assert results["info"]["runs_trained"] == 2
    assert results["info"]["workers"] == 2
    assert {"date", "versions", "device", "wall_s"} <= set(results["info"])
    table = (out / "results.md").read_text()
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert rows == ["(base model: start)", "sft", "grpo"]
    assert table in result.stdout
    pngs = {p.name for p in (out / "plots").glob("*.png")}
    assert {"accuracy.png", "entropy_h_rl.png", "entropy_h_sft.png", "weight_w.png"} <= pngs

    done = out / "runs" / "grpo" / "seed_1" / "compare_done.json"
    stamp = done.stat().st_mtime_ns
    again = _compare(config, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 of 2 runs finished before" in again.stderr
    assert done.stat().st_mtime_ns == stamp
    rerun = json.loads((out / "results.json").read_text())
    assert rerun["arms"] == results["arms"]
    assert rerun["info"]["runs_trained"] == 0


def test_launcher_starts_every_run_with_the_train_arguments(tmp_path, monkeypatch):
    """With ``launcher`` a run is that command plus ``--config`` and the overrides (what
    ``scripts/launch_torchrun.sh`` passes on to ``nemo-red train``)."""
    from nemo_red.experiments.compare import execute, finished

    launcher = tmp_path / "launch.sh"
    launcher.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGS_OUT"\n')
    launcher.chmod(0o755)
    config = load_compare_config(
        _write(
            tmp_path,
            f"""\
            train_config: {TINY}
            output_dir: {tmp_path / "out"}
            launcher: [{launcher}]
            arms: [{{name: small, overrides: [model.dtype=float32]}}]
            seeds: [3]
            """,
        )
    )
    (run,) = plan_runs(config)
    args_out = tmp_path / "args.txt"
    monkeypatch.setenv("ARGS_OUT", str(args_out))
    assert execute(config, run)
    assert args_out.read_text().splitlines() == [
        "--config",
        str(Path(TINY).resolve()),
        "model.dtype=float32",
        "run.seed=3",
        "run.name=small_seed3",
        f"run.output_dir={tmp_path / 'out' / 'runs' / 'small' / 'seed_3'}",
        "trainer.progress=false",
    ]
    assert finished(run) is not None


def _finish(run, recall: float, extend: float) -> None:
    """Fakes a finished run whose last validation accuracies are ``recall`` and ``extend``."""
    run.run_dir.mkdir(parents=True)
    row = {
        "step": 2,
        "eval/validation_recall/accuracy": recall,
        "eval/validation_extend/accuracy": extend,
    }
    (run.run_dir / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    (run.run_dir / DONE_FILE).write_text(json.dumps({"overrides": run.overrides}))


def test_sweep_chooses_each_arms_value_by_validation_accuracy_alone(tmp_path):
    config = load_compare_config(
        _write(
            tmp_path,
            f"""\
            train_config: {TINY}
            output_dir: {tmp_path / "out"}
            base_model: {{overrides: [algorithm.preset=sft]}}
            arms: [{{name: sft, overrides: [algorithm.preset=sft]}}, {{name: red}}]
            {_TASK}
            sweep:
              keys: [trainer.optim.lr, trainer.optim.min_lr]
              values: [1.0e-5, 1.0e-4]
              seeds: [1, 2]
            seeds: [2, 3]
            """,
        )
    )
    sweep = plan_sweep(config)
    assert [(r.arm, r.value, r.seed) for r in sweep] == [
        (arm, value, seed) for arm in ("sft", "red") for value in (1e-5, 1e-4) for seed in (1, 2)
    ]
    out = tmp_path / "out"
    assert sweep[0].run_dir == out / "runs" / "sft" / "lr_1e-05" / "seed_1"
    assert sweep[0].overrides[-4:] == [
        "trainer.optim.lr=1e-05",
        "trainer.optim.min_lr=1e-05",
        "run.seed=1",
        "run.name=sft_seed1",
    ]
    task_data = [o for o in sweep[0].overrides if o.startswith("data.")]
    assert task_data == [
        f"data.train_path={out / 'task' / 'train.jsonl'}",
        "data.eval_sets={"
        + ", ".join(
            f"{split}_{part}: '{out / 'task' / f'{split}_{part}.jsonl'}'"
            for split in ("validation", "test")
            for part in ("recall", "extend")
        )
        + "}",
    ]
    # validation (recall + extend) / 2 per run, averaged over the sweep's two seeds:
    # sft: 1e-5 -> (0.5 + 0.7) / 2 = 0.6, 1e-4 -> 0.65 (chosen); red: a tie -> 1e-5 (listed first)
    scores = {
        ("sft", 1e-5): [(0.8, 0.2), (0.9, 0.5)],
        ("sft", 1e-4): [(0.9, 0.3), (0.9, 0.5)],
        ("red", 1e-5): [(0.8, 0.2), (0.8, 0.2)],
        ("red", 1e-4): [(0.6, 0.4), (0.9, 0.1)],
    }
    for run in sweep:
        _finish(run, *scores[(run.arm, run.value)][run.seed - 1])
    selection = select(config, sweep)
    assert selection["scores"]["sft"] == {
        "1e-05": pytest.approx(0.6),
        "0.0001": pytest.approx(0.65),
    }
    assert selection["chosen"] == {"sft": 1e-4, "red": 1e-5}
    assert selection["chosen_labels"] == {"sft": "0.0001", "red": "1e-05"}
    runs = plan_runs(config, selection["chosen"])
    assert [(r.arm, r.value, r.seed) for r in runs] == [
        ("sft", 1e-4, 2), ("sft", 1e-4, 3), ("red", 1e-5, 2), ("red", 1e-5, 3)
    ]  # fmt: skip
    # seed 2 is a sweep seed: its run is the sweep's, already finished
    assert runs[0].run_dir == out / "runs" / "sft" / "lr_0.0001" / "seed_2"
    assert runs[0].overrides == sweep[3].overrides
    # a failed sweep run leaves its value unscored; an arm with no score is not run
    (sweep[4].run_dir / DONE_FILE).unlink()
    (sweep[6].run_dir / DONE_FILE).unlink()
    partial = select(config, sweep)
    assert partial["scores"]["red"] == {"1e-05": None, "0.0001": None}
    assert partial["chosen"] == {"sft": 1e-4}
    assert [r.arm for r in plan_runs(config, partial["chosen"])] == ["sft", "sft"]


@pytest.mark.slow
def test_task_sweep_comparison_end_to_end(tmp_path):
    """A task in parts, a sweep of two learning rates, two arms: the base never trains on
    the extend part, every arm's rate comes from validation, the table reports test."""
    shared = _two_steps(
        "trainer.eval_every=2", "trainer.eval_at_start=false", "trainer.optim.warmup_steps=0"
    )
    config = _write(
        tmp_path,
        f"""\
        train_config: {TINY}
        output_dir: out
        overrides: {json.dumps(shared)}
        {_TASK}
        base_model: {{overrides: [algorithm.preset=sft, trainer.eval_at_start=true]}}
        arms:
          - {{name: sft, overrides: [algorithm.preset=sft]}}
          - {{name: red, overrides: [algorithm.preset=red]}}
        sweep: {{keys: [trainer.optim.lr, trainer.optim.min_lr], values: [1.0e-5, 1.0e-3]}}
        seeds: [1, 2]
        reference: red
        workers: 2
        """,
    )
    result = _compare(config, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    base_rows = (out / "task" / "base_train.jsonl").read_text().splitlines()
    assert all(json.loads(r)["problem"].count("+") == 1 for r in base_rows)  # recall only
    selection = json.loads((out / "selection.json").read_text())
    assert set(selection["chosen"]) == {"sft", "red"}
    assert "chosen lr" in result.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["parts"] == {
        "recall": "eval/test_recall/accuracy",
        "extend": "eval/test_extend/accuracy",
    }
    for arm in ("sft", "red"):
        chosen = selection["chosen_labels"][arm]
        summary = results["arms"][arm]
        assert summary["seeds"] == [1, 2]
        metrics = out / "runs" / arm / f"lr_{chosen}" / "seed_2" / "metrics.jsonl"
        last = json.loads(metrics.read_text().splitlines()[-1])
        assert summary["runs"]["2"]["part_accuracy"] == {
            "recall": last["eval/test_recall/accuracy"],
            "extend": last["eval/test_extend/accuracy"],
        }
        assert (
            "validation_recall"
            in (out / "runs" / arm / f"lr_{chosen}" / "seed_2" / "config.yaml").read_text()
        )
    assert results["arms"]["sft"]["versus_reference"]["overall"]["seeds"] == [1, 2]
    assert results["info"]["runs_trained"] == 6  # 2 arms x 2 values, then seed 2 of each
    table = (out / "results.md").read_text()
    assert "| arm | lr | accuracy (%, mean ± 95% CI) | recall (%) | extend (%) | vs red" in table
    assert table in result.stdout
    pngs = {p.name for p in (out / "plots").glob("*.png")}
    assert {"accuracy_recall.png", "accuracy_extend.png", "entropy_h_rl.png"} <= pngs
