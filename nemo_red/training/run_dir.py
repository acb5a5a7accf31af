"""A training run's directory: one owner at a time, and a record of what each start ran.

* **Ownership.** ``nemo-red train`` writes only into a new or empty directory, or one that
  it wrote before (see :func:`nemo_red.outputs.claim_directory`), and holds its lock
  (:class:`nemo_red.outputs.DirectoryLock`) for the whole run: a second ``train`` on the
  same directory fails at once, naming the holder.
* **Resume only what was started.** A start that resumes a checkpoint compares its
  config with the saved ``config.yaml``. Any difference is refused, naming the keys,
  unless ``--allow-config-change`` is given; even then the keys in
  :data:`FIXED_ON_RESUME` (the model, the training problems and their tokenisation) cannot
  change, because the checkpoint's weights and data position depend on them. The parallel
  layout may (``parallel.*`` with ``--allow-config-change``; the world size always):
  checkpoints reshard on resume.
* **The record.** ``config.yaml`` is the config of the latest successful start, written
  once the run is built (a start that fails leaves the previous one in place);
  ``config_history.jsonl`` has one line per start: its date, the step it started from, the
  keys it changed and its whole config.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from nemo_red.outputs import DirectoryLock, claim_directory
from nemo_red.training.config import ConfigError, TrainConfig, renamed_key

__all__ = [
    "CONFIG_FILE",
    "FIXED_ON_RESUME",
    "HISTORY_FILE",
    "IGNORED_ON_RESUME",
    "RunDirectory",
    "config_changes",
    "flatten_config",
    "plain_config",
]

CONFIG_FILE = "config.yaml"
HISTORY_FILE = "config_history.jsonl"
# Keys (or key prefixes ending in '.') whose value does not change what a run computes
# (``trainer.tensorboard`` is the former switch of the TensorBoard logger).
IGNORED_ON_RESUME = (
    "run.output_dir",
    "trainer.progress",
    "trainer.async_save",
    "trainer.loggers",
    "trainer.wandb.",
    "trainer.mlflow.",
    "trainer.tensorboard",
)
# Keys (or key prefixes ending in '.') a resumed run cannot change, even when allowed.
FIXED_ON_RESUME = (
    "model.",
    "data.train_path",
    "data.layout",
    "data.fields",
    "data.arithmetic.",
    "data.template",
    "data.system_prompt",
    "data.think_prefix",
    "data.max_prompt_tokens",
    "data.max_response_tokens",
    "data.on_bad_row",
)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def plain_config(config: TrainConfig) -> dict[str, Any]:
    """The config as plain dicts and lists (what ``config.yaml`` holds)."""
    plain = OmegaConf.to_container(OmegaConf.structured(config))
    assert isinstance(plain, dict)
    return {str(k): v for k, v in plain.items()}


def flatten_config(config: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """``{"trainer.optim.lr": 2e-6, ...}``: every leaf of a config (lists stay whole)."""
    return _flatten(plain_config(config) if isinstance(config, TrainConfig) else config)


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The keys whose value differs between two flattened configs, as ``(old, new)``.

    A key the old config lacks (written by an older version) counts only when the new
    value differs from today's default; :data:`IGNORED_ON_RESUME` never counts.
    """
    defaults = flatten_config(TrainConfig())
    old = {renamed_key(key): value for key, value in old.items()}
    changes = {}
    for key in sorted(set(old) | set(new)):
        if _matches(key, IGNORED_ON_RESUME):
            continue
        before = old.get(key, defaults.get(key))
        after = new.get(key, defaults.get(key))
        if before != after:
            changes[key] = (before, after)
    return changes


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``key`` is one of ``patterns`` or under one ending in '.'."""
    return any(key.startswith(p) if p.endswith(".") else key == p for p in patterns)


class RunDirectory:
    """The run directory of one training run (use on rank 0).

    Args:
        path: The directory (``run.output_dir``).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock: DirectoryLock | None = None

    def open(self) -> None:
        """Creates or continues the directory and takes its lock.

        Raises:
            DestinationError: When the directory holds files nemo-red did not write.
            LockedError: When another process trains in it.
        """
        claim_directory(self.path, "run")
        self._lock = DirectoryLock(self.path, "training").acquire()

    def close(self) -> None:
        """Releases the lock."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def saved_config(self) -> dict[str, Any] | None:
        """The flattened config of the latest successful start (None before the first)."""
        path = self.path / CONFIG_FILE
        if not path.is_file():
            return None
        try:
            saved = OmegaConf.to_container(OmegaConf.load(path))
        except Exception as err:  # a YAML a user broke by hand: name it
            raise ConfigError(f"{path}: cannot be read ({err})") from None
        assert isinstance(saved, dict)
        return _flatten(saved)

    def check_config(
        self, config: TrainConfig, resuming: bool, allow_change: bool
    ) -> dict[str, tuple[Any, Any]]:
        """The changes this start makes to the saved config; refused ones raise.

        Args:
            config: This start's config.
            resuming: Whether a checkpoint of the run will be resumed.
            allow_change: ``--allow-config-change``.

        Raises:
            ConfigError: Naming the differing keys, when a resumed run's config changed
                and that was not allowed, or a key that cannot change did.
        """
        saved = self.saved_config()
        if saved is None:
            return {}
        changes = config_changes(saved, flatten_config(config))
        if not resuming or not changes:
            return changes
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
        fixed = [k for k in changes if _matches(k, FIXED_ON_RESUME)]
        if fixed:
            raise ConfigError(
                f"{self.path} holds checkpoints of another run: {', '.join(fixed)} cannot "
                f"change when resuming ({listed}); use another run.output_dir"
            )
        if not allow_change:
            raise ConfigError(
                f"{self.path}: resuming with a config that differs from its {CONFIG_FILE} "
                f"({listed}); pass --allow-config-change to resume with these changes (they "
                "are recorded in config_history.jsonl), or use another run.output_dir"
            )
        return changes

    def record_start(
        self, config: TrainConfig, step: int, changes: dict[str, tuple[Any, Any]]
    ) -> None:
        """Writes ``config.yaml`` and appends this start to ``config_history.jsonl``."""
        structured = OmegaConf.structured(config)
        tmp = self.path / f"{CONFIG_FILE}.tmp"
        tmp.write_text(OmegaConf.to_yaml(structured))
        tmp.replace(self.path / CONFIG_FILE)
        record = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "start_step": step,
            "changed": {k: {"from": a, "to": b} for k, (a, b) in changes.items()},
            "config": OmegaConf.to_container(structured),
        }
        with (self.path / HISTORY_FILE).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")
