"""TensorBoard scalar event files, written (and read back) without TensorFlow or tensorboard.

An event file is a sequence of TFRecords (``uint64`` length, masked CRC32C of the length,
the data, masked CRC32C of the data), each holding a serialized ``tensorboard.Event``
protobuf. Only the few fields needed for scalars are encoded, by hand:

- ``Event``: ``wall_time`` (1, double), ``step`` (2, int64), ``file_version`` (3, string),
  ``summary`` (5, Summary), ``session_log`` (7, SessionLog);
- ``Summary``: ``value`` (1, repeated Value); ``Value``: ``tag`` (1), ``simple_value`` (2);
- ``SessionLog``: ``status`` (1, enum; ``START`` = 1).

A resumed run passes ``purge_step``: TensorBoard then drops the points at and after that
step that an earlier writer left (a ``SessionLog`` ``START`` event, as
``torch.utils.tensorboard.SummaryWriter(purge_step=...)`` writes).
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from itertools import count
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["TensorBoardWriter", "iter_records", "masked_crc32c", "read_scalars"]

_FILE_VERSION = b"brain.Event:2"
_SESSION_START = 1
_FLOAT32_MAX = 3.4028234663852886e38
_file_counter = count()


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """The CRC32C (Castagnoli) of ``data``, masked as TFRecord framing stores it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64: ten bytes of two's complement
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _bytes_field(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def _to_float32(value: float) -> float:
    if math.isfinite(value) and abs(value) > _FLOAT32_MAX:
        return math.copysign(math.inf, value)
    return value


def _event(wall_time: float, step: int, body: bytes) -> bytes:
    return _key(1, 1) + struct.pack("<d", wall_time) + _key(2, 0) + _varint(step) + body


def _scalar_value(tag: str, value: float) -> bytes:
    data = _bytes_field(1, tag.encode()) + _key(2, 5) + struct.pack("<f", _to_float32(value))
    return _bytes_field(1, data)


def _record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    header = length + struct.pack("<I", masked_crc32c(length))
    return header + data + struct.pack("<I", masked_crc32c(data))


class TensorBoardWriter:
    """Writes scalars to a new TensorBoard event file in ``log_dir``.

    Writes are flushed at once. A context manager; :meth:`close` also works.

    Args:
        log_dir: The run's directory (created when absent).
        purge_step: When resuming: TensorBoard drops points at and after this step that
            earlier files of the run hold.
        filename_suffix: Appended to the event file's name.
    """

    def __init__(
        self, log_dir: str | Path, purge_step: int | None = None, filename_suffix: str = ""
    ) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
            f".{os.getpid()}.{next(_file_counter)}{filename_suffix}"
        )
        self.path = self.log_dir / name
        self._file: IO[bytes] | None = self.path.open("xb")
        self._write(_event(time.time(), 0, _bytes_field(3, _FILE_VERSION)))
        if purge_step is not None:
            session_log = _key(1, 0) + _varint(_SESSION_START)
            self._write(_event(time.time(), purge_step, _bytes_field(7, session_log)))

    def _write(self, event: bytes) -> None:
        if self._file is None:
            raise ValueError(f"event file {self.path} is closed")
        self._file.write(_record(event))
        self._file.flush()

    def add_scalars(
        self, step: int, scalars: Mapping[str, Any], wall_time: float | None = None
    ) -> int:
        """Write the scalars of one step as one event.

        Args:
            step: The step.
            scalars: Tags to numbers (bools, ints, floats, numpy/torch scalars); None and
                strings are skipped, so that a step's whole metrics dict may be passed.
            wall_time: Seconds since the epoch; default now.

        Returns:
            The number of scalars written.

        Raises:
            TypeError: When a value is neither a number nor skipped.
        """
        values = []
        for tag, value in scalars.items():
            if hasattr(value, "item") and callable(value.item):
                value = value.item()
            if value is None or isinstance(value, str):
                continue
            if not isinstance(value, (int, float)):
                raise TypeError(f"scalar {tag!r} is a {type(value).__name__}, not a number")
            values.append(_scalar_value(str(tag), float(value)))
        if values:
            wall = time.time() if wall_time is None else float(wall_time)
            self._write(_event(wall, int(step), _bytes_field(5, b"".join(values))))
        return len(values)

    def add_scalar(self, tag: str, value: float, step: int, wall_time: float | None = None) -> None:
        """Write one scalar (the argument order of ``SummaryWriter.add_scalar``)."""
        self.add_scalars(step, {tag: value}, wall_time)

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> TensorBoardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def iter_records(path: str | Path) -> Iterator[bytes]:
    """The data of the TFRecords of one file, checksums verified.

    A truncated last record (a writer that died) ends the iteration.

    Raises:
        ValueError: On a checksum mismatch.
    """
    data = Path(path).read_bytes()
    pos = 0
    while pos + 12 <= len(data):
        length_bytes = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", length_bytes)
        (length_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        if masked_crc32c(length_bytes) != length_crc:
            raise ValueError(f"{path}: bad length checksum at byte {pos}")
        end = pos + 12 + length
        if end + 4 > len(data):
            return
        record = data[pos + 12 : end]
        if masked_crc32c(record) != struct.unpack("<I", data[end : end + 4])[0]:
            raise ValueError(f"{path}: bad data checksum at byte {pos}")
        yield record
        pos = end + 4


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """``(field number, value)`` of a message: ints for varints, bytes otherwise."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _read_varint(buf, pos)
            yield field, value
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            yield field, buf[pos : pos + size]
            pos += size
        elif wire_type == 2:
            size, pos = _read_varint(buf, pos)
            yield field, buf[pos : pos + size]
            pos += size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")


def read_scalars(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of an event file, or of all event files of a directory (in name order).

    ``SessionLog`` ``START`` events purge the points at and after their step, as
    TensorBoard does.

    Args:
        path: An event file, or a run directory.

    Returns:
        Tags to ``(step, value)`` lists, in file order.
    """
    path = Path(path)
    files = sorted(path.glob("*tfevents*")) if path.is_dir() else [path]
    scalars: dict[str, list[tuple[int, float]]] = {}
    for file in files:
        for record in iter_records(file):
            step, values, purge = 0, [], False
            for field, value in _fields(record):
                if field == 2 and isinstance(value, int):
                    step = value - (1 << 64) if value >> 63 else value
                elif field == 5 and isinstance(value, bytes):
                    values += [v for f, v in _fields(value) if f == 1 and isinstance(v, bytes)]
                elif field == 7 and isinstance(value, bytes):
                    purge = (1, _SESSION_START) in list(_fields(value))
            if purge:
                for name, points in scalars.items():
                    scalars[name] = [(s, v) for s, v in points if s < step]
            for value in values:
                fields = dict(_fields(value))
                tag, simple = fields.get(1), fields.get(2)
                if isinstance(tag, bytes) and isinstance(simple, bytes):
                    point = (step, struct.unpack("<f", simple)[0])
                    scalars.setdefault(tag.decode(), []).append(point)
    return scalars
