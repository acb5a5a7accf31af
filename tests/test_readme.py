"""Every ``nemo-red`` command the README shows parses, and its configs load and validate.

(The journeys themselves run in ``tests/journeys``; this guards the rest of the README's
commands against options and config keys that do not exist or values the config refuses.)
"""

from __future__ import annotations

import re
import shlex

import pytest

from nemo_red.cli import build_parser
from nemo_red.experiments.compare import load_compare_config
from nemo_red.training.config import load_config
from tests.torchrun import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def _commands() -> list[list[str]]:
    """The ``nemo-red`` / launcher commands of the README's bash blocks, as argv lists."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if not line or line.startswith("#"):
                continue
            words = shlex.split(line)
            words = [w for w in words if not re.match(r"^[A-Z_]+=", w)]  # env assignments
            if not words:
                continue
            if words[0].endswith("nemo-red"):
                commands.append(words[1:])
            elif words[0].endswith("launch_torchrun.sh"):
                commands.append(["train", *words[1:]])
    return commands


COMMANDS = _commands()


def test_the_readme_shows_the_main_commands():
    shown = {c[0] for c in COMMANDS if c}
    assert {"train", "convert", "eval", "compare", "plot"} <= shown


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda c: " ".join(c)[:60])
def test_readme_command_parses_and_its_config_loads(argv, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    if "--help" in argv:
        with pytest.raises(SystemExit) as done:
            build_parser().parse_args(argv)
        assert done.value.code == 0
        return
    args = build_parser().parse_args(argv)
    if args.command == "train" and args.config is not None:
        load_config(args.config, args.overrides)
    if args.command == "compare":
        load_compare_config(args.config, args.overrides)
