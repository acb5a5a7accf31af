"""Name -> object registries for configurable algorithm parts (advantages, loss terms, ...).

Configs name parts by string; an unknown name fails at config load with the list of valid
names, never deep inside a training step.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from types import ModuleType
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised when a configured name is not registered. The message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0])


class Registry(Generic[T]):
    """A small registry of named entries of one kind.

    Args:
        kind: what the entries are, used in error messages (e.g. "loss term").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a duplicate name is an error."""

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T, replace: bool = False) -> None:
        """Registers ``obj`` under ``name`` (``replace``: even if the name is taken)."""
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        """Returns the entry named ``name`` or raises :class:`UnknownNameError`."""
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def import_plugins(
    package: ModuleType, keep: Callable[[str], bool], entry_point_group: str
) -> None:
    """Imports the modules of ``package`` whose names ``keep`` accepts, then the modules named
    by the entry points of ``entry_point_group`` (where registries find their entries)."""
    for module in pkgutil.iter_modules(package.__path__):
        if keep(module.name):
            importlib.import_module(f"{package.__name__}.{module.name}")
    for entry in entry_points(group=entry_point_group):
        entry.load()
