"""TensorBoard scalar event files, written by tensorboardX.

tensorboardX (a 650 KB pure-Python package needing only protobuf) encodes the same event
files as ``torch.utils.tensorboard``, which would need the whole ``tensorboard`` server
package at run time. Its ``EventsWriter`` writes and flushes each step's event at once (its
``SummaryWriter`` hands events to a thread, and its ``flush()`` does not wait for them, so
a killed run could lose its last steps). A resumed run passes ``purge_step``: a
``SessionLog`` START event at that step, after which TensorBoard drops the points at and
after it that the run's earlier event files hold (as ``SummaryWriter(purge_step=...)``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from itertools import count
from pathlib import Path
from types import TracebackType
from typing import Any

from nemo_red.monitoring.loggers import numeric_scalars

__all__ = ["TensorBoardWriter"]

_file_counter = count()
# tensorboardX warns on every non-finite value; a run's metrics may be NaN (the metrics log
# writes null) and the event files keep them as such
logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)


class TensorBoardWriter:
    """Writes scalars to a new TensorBoard event file in ``log_dir``.

    A context manager; :meth:`close` also works.

    Args:
        log_dir: The run's directory (created when absent).
        purge_step: When resuming: TensorBoard drops points at and after this step that
            earlier files of the run hold.
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # tensorboardX names files by second and host only: two writers of one second
        # would share a file, so the process id and a counter make each name unique
        suffix = f".{os.getpid()}.{next(_file_counter)}"
        self._writer: Any = EventsWriter(str(self.log_dir / "events"), suffix)
        if purge_step is not None:
            start = SessionLog(status=SessionLog.START)
            self._writer.write_event(
                Event(wall_time=time.time(), step=purge_step, session_log=start)
            )
        self._writer.flush()

    def add_scalars(
        self, step: int, scalars: Mapping[str, Any], wall_time: float | None = None
    ) -> int:
        """Write the scalars of one step and flush them.

        Args:
            step: The step.
            scalars: Tags to numbers (see :func:`~nemo_red.monitoring.loggers.numeric_scalars`:
                None and strings are skipped, so that a step's whole metrics dict may be
                passed).
            wall_time: Seconds since the epoch; default now.

        Returns:
            The number of scalars written.

        Raises:
            TypeError: When a value is neither a number nor skipped.
            ValueError: When the writer is closed.
        """
        if self._writer is None:
            raise ValueError(f"the TensorBoard writer of {self.log_dir} is closed")
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.summary import scalar

        values = numeric_scalars(scalars)
        if values:
            summary = Summary(value=[v for t, x in values.items() for v in scalar(t, x).value])
            wall = time.time() if wall_time is None else float(wall_time)
            self._writer.write_event(Event(wall_time=wall, step=int(step), summary=summary))
            self._writer.flush()
        return len(values)

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
