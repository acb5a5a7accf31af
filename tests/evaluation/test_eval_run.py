"""``nemo-red eval --run``: a training run's policy, evaluated with the prompts, lengths and
think split it was trained with, unless the command line says otherwise."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nemo_red.cli import build_parser, main
from nemo_red.data.templates import TEMPLATES, PromptTemplate
from nemo_red.evaluation.command import resolve_inputs
from nemo_red.training.config import (
    DataConfig,
    RolloutConfig,
    RunConfig,
    TrainConfig,
    TrainerConfig,
)
from tests.evaluation.conftest import SUMS_FIELDS

PLAIN_BRIEF = PromptTemplate(
    kind="string", template="Question: {question}\nAnswer:", system_prompt="Be brief."
)


def _fake_run(
    folder: Path, hf_model: Path, eval_max_new_tokens: int | None = 3, hf: bool = True
) -> Path:
    """A run directory as ``nemo-red train`` leaves it: config.yaml and the hf/ policy."""
    folder.mkdir(parents=True)
    config = TrainConfig(
        run=RunConfig(name="fake", output_dir=str(folder)),
        data=DataConfig(template="plain", system_prompt="Be brief.", max_prompt_tokens=200),
        rollout=RolloutConfig(max_new_tokens=5, eval_max_new_tokens=eval_max_new_tokens),
        trainer=TrainerConfig(think_split=True),
    )
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    if hf:
        shutil.copytree(hf_model, folder / "hf")
    return folder


def _eval(run: Path, sums: Path, *extra: str) -> int:
    return main(
        [
            "eval", "--run", str(run), "--benchmarks", f"sums={sums}", "--fields", SUMS_FIELDS,
            "--n", "1", "--workers", "1", "--no-progress", *extra,
        ]
    )  # fmt: skip


def test_eval_a_run_with_its_own_settings(hf_model: Path, sums: Path, tmp_path: Path, capsys):
    run = _fake_run(tmp_path / "run", hf_model)
    assert _eval(run, sums) == 0
    captured = capsys.readouterr()
    assert "| sums | 3 | 0 | 1 |" in captured.out
    notes = [line for line in captured.err.splitlines() if line.startswith("[nemo-red]")]
    assert notes == [
        f"[nemo-red] evaluating the run {run}; settings:",
        f"[nemo-red]   model and tokenizer: {run / 'hf'} (the run's final policy, hf/)",
        "[nemo-red]   --template plain, system prompt 'Be brief.' (from data.template, "
        "data.system_prompt, data.think_prefix)",
        "[nemo-red]   --max-prompt-tokens 200 (from data.max_prompt_tokens)",
        "[nemo-red]   --max-new-tokens 3 (from rollout.eval_max_new_tokens)",
        "[nemo-red]   --think (from trainer.think_split)",
    ]
    out = run / "eval" / "sums"  # the default --out of a run
    results = json.loads((out / "results.json").read_text())
    settings = results["settings"]
    assert settings["model"] == str(run / "hf")
    assert settings["run"] == str(run)
    assert settings["think_split"] is True
    assert settings["template"] == dataclasses.asdict(PLAIN_BRIEF)
    assert settings["sampling"]["max_new_tokens"] == 3
    assert settings["sampling"]["max_prompt_tokens"] == 200
    assert all(s["tokens"] <= 3 for r in results["records"]["sums"] for s in r["samples"])
    assert json.loads((out / "nemo_red_output.json").read_text())["kind"] == "eval"


def test_the_command_line_overrides_the_run(hf_model: Path, sums: Path, tmp_path: Path, capsys):
    run = _fake_run(tmp_path / "run", hf_model, eval_max_new_tokens=None)
    out = tmp_path / "out"
    extra = ["--max-new-tokens", "2", "--no-think", "--template", "qwen_boxed", "--out", str(out)]
    assert _eval(run, sums, *extra) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[nemo")]
    assert notes[2:] == [
        "[nemo-red]   --template qwen_boxed (command line; the run has --template plain, system "
        "prompt 'Be brief.' from data.template, data.system_prompt, data.think_prefix)",
        "[nemo-red]   --max-prompt-tokens 200 (from data.max_prompt_tokens)",
        "[nemo-red]   --max-new-tokens 2 (command line; the run has --max-new-tokens 5 from "
        "rollout.max_new_tokens)",
        "[nemo-red]   --no-think (command line; the run has --think from trainer.think_split)",
    ]
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert settings["template"] == dataclasses.asdict(TEMPLATES["qwen_boxed"])
    assert settings["sampling"]["max_new_tokens"] == 2
    assert settings["think_split"] is False
    assert not (run / "eval").exists()


def test_a_run_falls_back_to_max_new_tokens(hf_model: Path, tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run", hf_model, eval_max_new_tokens=None)
    args = build_parser().parse_args(["eval", "--run", str(run), "--benchmarks", "x"])
    inputs = resolve_inputs(args)
    assert (inputs.model, inputs.max_new_tokens, inputs.think) == (run / "hf", 5, True)
    assert inputs.template == PLAIN_BRIEF


def test_model_defaults_are_unchanged(tmp_path: Path) -> None:
    args = build_parser().parse_args(["eval", "--model", str(tmp_path), "--benchmarks", "x"])
    inputs = resolve_inputs(args)
    assert inputs.template == TEMPLATES["qwen_boxed"]
    assert (inputs.max_new_tokens, inputs.max_prompt_tokens, inputs.think) == (8192, None, False)
    assert inputs.notes == ()
    assert (inputs.model, inputs.tokenizer) == (tmp_path, None)


def test_a_run_without_its_policy_or_config_is_a_clear_error(
    hf_model: Path, sums: Path, tmp_path: Path, capsys
) -> None:
    run = _fake_run(tmp_path / "run", hf_model, hf=False)
    assert _eval(run, sums) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"nemo-red eval: error: {run}: no final policy in {run / 'hf'} (a run exports it when "
        "training ends); evaluate a checkpoint with --model instead"
    )
    assert not (run / "eval").exists()
    assert _eval(tmp_path, sums) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"nemo-red eval: error: {tmp_path}: no config.yaml; is this a nemo-red train run?"
    )


@pytest.mark.parametrize("names", [["a", "b"], ["math500", "gsm8k"]])
def test_default_out_of_a_run_names_its_benchmarks(tmp_path: Path, names: list[str]) -> None:
    from nemo_red.evaluation.command import default_out

    args = build_parser().parse_args(["eval", "--run", str(tmp_path), "--benchmarks", "x"])
    assert default_out(args, tmp_path / "hf", names) == tmp_path / "eval" / "+".join(names)
    model = build_parser().parse_args(["eval", "--model", str(tmp_path), "--benchmarks", "x"])
    assert default_out(model, tmp_path, names) == Path("eval") / tmp_path.name
