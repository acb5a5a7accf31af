"""Reading a HF ``config.json``: the fields every family shares, and what none supports.

Errors name the file (or "config" for a dict) and the field, e.g.
``config.json: rope_scaling.rope_type 'yarn' is not supported by the qwen2 family``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Fields whose presence (with a truthy value) marks a mixture-of-experts model.
MOE_FIELDS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_intermediate_size")


@dataclass(frozen=True)
class HFConfig:
    """A HF config's values and where they came from (for error messages)."""

    source: str
    values: dict[str, Any]

    @classmethod
    def load(cls, config: dict[str, Any] | str | Path) -> HFConfig:
        """From a dict, a ``config.json`` path or a model directory."""
        if isinstance(config, dict):
            return cls("config", dict(config))
        path = Path(config)
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such config.json")
        return cls(str(path), json.loads(path.read_text()))

    @property
    def model_type(self) -> str:
        return str(self.values.get("model_type") or "")

    @property
    def architecture(self) -> str:
        architectures = self.values.get("architectures") or ["?"]
        return str(architectures[0])

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.source}: {message}")

    def require(self, *names: str) -> None:
        """Raises naming every field of ``names`` the config lacks."""
        missing = [n for n in names if self.values.get(n) is None]
        if missing:
            raise self.error(f"missing fields {missing}")

    def get_int(self, name: str, default: int | None = None) -> int:
        value = self.values.get(name)
        if value is None:
            if default is None:
                raise self.error(f"missing field {name!r}")
            return default
        return int(value)

    def get_float(self, name: str, default: float) -> float:
        value = self.values.get(name)
        return default if value is None else float(value)

    def refuse_true(self, name: str, why: str) -> None:
        """Raises when the field ``name`` is set and truthy (an unsupported feature)."""
        if self.values.get(name):
            raise self.error(f"{name} = {self.values[name]!r} is not supported ({why})")

    def refuse_moe(self) -> None:
        """Raises naming the field that makes this a mixture-of-experts model."""
        for name in MOE_FIELDS:
            if self.values.get(name):
                raise self.error(
                    f"{name} = {self.values[name]!r}: mixture-of-experts models are not "
                    f"supported (model_type {self.model_type!r}); only dense decoders are"
                )

    def refuse_sliding_window(self) -> None:
        """Raises when some layer uses sliding-window attention (``use_sliding_window`` or
        ``layer_types``)."""
        self.refuse_true("use_sliding_window", "sliding-window attention")
        layer_types = self.values.get("layer_types") or []
        other = sorted({t for t in layer_types if t != "full_attention"})
        if other:
            raise self.error(f"layer_types {other} are not supported (only full_attention)")

    def rope(self) -> tuple[float, str, dict[str, Any], str]:
        """``(rope_theta, rope_type, parameters, field)`` from ``rope_parameters``
        (transformers >= 5) or the older ``rope_theta`` + ``rope_scaling``; ``field`` names
        where the rope type was read (for errors)."""
        params = self.values.get("rope_parameters")
        if isinstance(params, dict) and params:
            field = "rope_parameters"
            theta = params.get("rope_theta", self.values.get("rope_theta", 10000.0))
        else:
            params = self.values.get("rope_scaling") or {}
            field = "rope_scaling"
            theta = self.values.get("rope_theta", 10000.0)
        if not isinstance(params, dict):
            raise self.error(f"{field} must be a mapping, got {params!r}")
        key = "rope_type" if "rope_type" in params else "type"
        rope_type = str(params.get(key) or "default")
        return float(theta), rope_type, params, f"{field}.{key}"
