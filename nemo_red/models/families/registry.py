"""The registry of model families, found from a HF config's ``model_type``.

A family is one module that registers an instance of a :class:`DecoderFamily` subclass::

    @register_family
    class MyFamily(DecoderFamily):
        name = "my_family"
        model_types = ("my_model_type",)
        architecture = "MyForCausalLM"

Built-in families are the modules of this package other than ``base``, ``hf_config``,
``registry`` and ``shape``; families of other packages register through the
``nemo_red.model_families`` entry-point group (the entry point names the module). Modules
are imported on the first lookup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from nemo_red.algorithms.registry import Registry, import_plugins
from nemo_red.models.families.base import DecoderFamily
from nemo_red.models.families.hf_config import HFConfig
from nemo_red.models.families.shape import ModelShape

ENTRY_POINT_GROUP = "nemo_red.model_families"
_INFRASTRUCTURE = {"base", "hf_config", "registry", "shape"}

FAMILIES: Registry[DecoderFamily] = Registry("model family")
_loaded = False
F = TypeVar("F", bound=type[DecoderFamily])


def register_family(cls: F) -> F:
    """Class decorator registering an instance of ``cls`` under ``cls.name``."""
    replace = cls.name in FAMILIES and type(FAMILIES.get(cls.name)).__qualname__ == cls.__qualname__
    taken = {t: n for n in FAMILIES.names() for t in FAMILIES.get(n).model_types}
    clash = [t for t in cls.model_types if t in taken and taken[t] != cls.name]
    if clash:
        raise ValueError(f"model family {cls.name!r}: model_type {clash} already taken")
    FAMILIES.add(cls.name, cls(), replace=replace)
    return cls


def _load_families() -> None:
    """Imports the built-in family modules and the entry points' modules, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import nemo_red.models.families as package

    import_plugins(package, lambda name: name not in _INFRASTRUCTURE, ENTRY_POINT_GROUP)


def get_family(name: str) -> DecoderFamily:
    """The family registered as ``name`` (``UnknownNameError`` lists the valid names)."""
    _load_families()
    return FAMILIES.get(name)


def family_names() -> list[str]:
    """Registered family names."""
    _load_families()
    return FAMILIES.names()


def family_for_hf_config(config: HFConfig) -> DecoderFamily:
    """The family reading ``config`` (by ``model_type``); mixture-of-experts and unknown
    models fail naming the field."""
    _load_families()
    config.refuse_moe()
    for name in FAMILIES.names():
        family = FAMILIES.get(name)
        if config.model_type in family.model_types or (
            not config.model_type and config.architecture == family.architecture
        ):
            return family
    supported = ", ".join(
        f"{n} ({'/'.join(FAMILIES.get(n).model_types)})" for n in FAMILIES.names()
    )
    raise config.error(
        f"unsupported model_type {config.model_type or None!r} "
        f"(architecture {config.architecture!r}); supported families: {supported}"
    )


def shape_from_hf_config(config: dict[str, Any] | str | Path) -> ModelShape:
    """The shape of a HF config (dict, ``config.json`` path or directory), read by its family."""
    loaded = HFConfig.load(config)
    shape = family_for_hf_config(loaded).shape_from_hf_config(loaded)
    shape.check()
    return shape
