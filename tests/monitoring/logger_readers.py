"""Reading back what each logger stored, through the backends' own readers where they have
one: tensorboard's ``EventAccumulator``, MLflow's client; W&B has no Python reader of its
offline ``.wandb`` files, so :func:`wandb_history` reads their record framing (LevelDB's
log format behind a 7-byte W&B header) into W&B's own protobuf records."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_BLOCK = 32768
_HEADER = 7  # crc32 (4), length (2), type (1)
_FULL, _LAST = 1, 4


def tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Tags to ``(step, value)`` as TensorBoard shows them (purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _wandb_records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a .wandb file"
    pos, pending = 7, b""
    while pos + _HEADER <= len(data):
        if _BLOCK - pos % _BLOCK < _HEADER:  # a block's tail too short for a header
            pos += _BLOCK - pos % _BLOCK
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 0 and length == 0:  # zero padding
            continue
        assert zlib.crc32(bytes([kind]) + chunk) == crc, f"{path}: bad record checksum"
        pending += chunk
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_runs(run_dir: Path) -> list[tuple[str, str, str]]:
    """``(run id, project, display name)`` of each offline W&B run directory."""
    runs = []
    for path in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        for record in _wandb_records(path):
            if record.WhichOneof("record_type") == "run":
                runs.append((record.run.run_id, record.run.project, record.run.display_name))
    return runs


def wandb_history(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """The offline W&B runs under ``run_dir/wandb``: run id to its history rows (each with
    ``_step``), in the order they were logged, over all the run's offline directories."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        run_id = path.stem.removeprefix("run-")
        for record in _wandb_records(path):
            if record.WhichOneof("record_type") == "history":
                row = {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
                runs.setdefault(run_id, []).append(row)
    return runs


def mlflow_points(tracking_uri: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Every MLflow run of the store: run id to metric name to ``(step, value)`` points."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    runs: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            history = client.get_metric_history
            runs[run.info.run_id] = {
                key: sorted((m.step, m.value) for m in history(run.info.run_id, key))
                for key in run.data.metrics
            }
    return runs
