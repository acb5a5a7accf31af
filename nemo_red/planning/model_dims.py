"""The architecture numbers a memory plan needs, from a HF ``config.json`` or a named size.

Read directly from the config (Qwen2 / Qwen2.5, Qwen3, Llama 3.x), so that planning does not
depend on which families the training code supports: layers, hidden size, MLP width, query
and key-value heads, head dimension (Qwen3 gives it; otherwise hidden / heads), vocabulary,
tied embeddings, QKV bias and query-key norms. :data:`NAMED_MODELS` holds the published
``config.json`` numbers of the sizes scaling studies use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["NAMED_MODELS", "ModelDims", "resolve_model"]

# model_type -> (QKV bias by default, query-key RMSNorm)
_FAMILIES = {"qwen2": (True, False), "qwen3": (False, True), "llama": (False, False)}
_MOE_FIELDS = ("num_experts", "num_local_experts", "n_routed_experts")


@dataclass(frozen=True)
class ModelDims:
    """A dense decoder-only transformer's shape (gated SiLU MLP, RMSNorm, rotary positions).

    Attributes:
        name: where the numbers came from (a table name or a config path).
        layers, hidden, ffn: decoder layers, hidden size, MLP intermediate size.
        heads, kv_heads, head_dim: query heads, key-value heads (GQA groups), head size.
        vocab: vocabulary size (the config's ``vocab_size``, padding included).
        tied_embeddings: the output layer shares the input embedding.
        qkv_bias: the QKV projection has a bias (Qwen2).
        qk_norm: RMSNorm on each query and key head (Qwen3).
    """

    name: str
    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    qkv_bias: bool = False
    qk_norm: bool = False

    def __post_init__(self) -> None:
        for field in ("layers", "hidden", "ffn", "heads", "kv_heads", "head_dim", "vocab"):
            if getattr(self, field) < 1:
                raise ValueError(f"{self.name}: {field} must be >= 1, got {getattr(self, field)}")
        if self.heads % self.kv_heads:
            raise ValueError(
                f"{self.name}: {self.heads} query heads are not a multiple of "
                f"{self.kv_heads} key-value heads"
            )

    def layer_parameters(self, tp: int = 1) -> int:
        """Weights of one decoder layer on one tensor-parallel rank (norms are replicated)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        sharded = self.hidden * (q + 2 * kv) + q * self.hidden + 3 * self.hidden * self.ffn
        sharded += (q + 2 * kv) if self.qkv_bias else 0
        replicated = 2 * self.hidden + (2 * self.head_dim if self.qk_norm else 0)
        return sharded // tp + replicated

    def embedding_parameters(self, tp: int = 1) -> int:
        """One vocabulary matrix on one tensor-parallel rank (vocab padded to a multiple of
        ``tp``, as the model builder does)."""
        return -(-self.vocab // tp) * self.hidden

    def total_parameters(self) -> int:
        """All weights of the model (the tied matrix once)."""
        vocab_matrices = 1 if self.tied_embeddings else 2
        return (
            self.layers * self.layer_parameters()
            + vocab_matrices * self.embedding_parameters()
            + self.hidden  # final norm
        )

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """Key and value cache bytes of one token over all layers (no tensor parallelism)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    @classmethod
    def from_hf_config(cls, config: dict[str, Any] | str | Path) -> ModelDims:
        """Reads a HF config dict, a ``config.json`` or a checkpoint directory.

        Raises:
            ValueError: for a family that is not a dense Qwen2 / Qwen3 / Llama model or a
                missing field, naming the file and the field.
        """
        if isinstance(config, dict):
            source, values = "config", config
        else:
            path = Path(config)
            path = path / "config.json" if path.is_dir() else path
            source = str(path)
            try:
                values = json.loads(path.read_text())
            except FileNotFoundError:
                raise FileNotFoundError(f"{path}: no such config.json") from None
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: not valid JSON ({err.msg})") from None
        model_type = values.get("model_type")
        if model_type not in _FAMILIES:
            raise ValueError(
                f"{source}: model_type {model_type!r} is not supported by the planner; "
                f"supported: {', '.join(sorted(_FAMILIES))}"
            )
        moe = [k for k in _MOE_FIELDS if values.get(k)]
        if moe:
            raise ValueError(f"{source}: mixture-of-experts models ({moe[0]}) are not supported")
        required = (
            "num_hidden_layers",
            "hidden_size",
            "intermediate_size",
            "num_attention_heads",
            "vocab_size",
        )
        missing = [k for k in required if k not in values]
        if missing:
            raise ValueError(f"{source}: missing field {missing[0]!r}")
        qkv_bias, qk_norm = _FAMILIES[model_type]
        heads = int(values["num_attention_heads"])
        return cls(
            name=source,
            layers=int(values["num_hidden_layers"]),
            hidden=int(values["hidden_size"]),
            ffn=int(values["intermediate_size"]),
            heads=heads,
            kv_heads=int(values.get("num_key_value_heads") or heads),
            head_dim=int(values.get("head_dim") or int(values["hidden_size"]) // heads),
            vocab=int(values["vocab_size"]),
            tied_embeddings=bool(values.get("tie_word_embeddings", False)),
            qkv_bias=bool(values.get("attention_bias", qkv_bias)),
            qk_norm=qk_norm,
        )


def _named(name: str, *numbers: int, tied: bool, family: str) -> ModelDims:
    layers, hidden, ffn, heads, kv_heads, head_dim, vocab = numbers
    qkv_bias, qk_norm = _FAMILIES[family]
    return ModelDims(
        name, layers, hidden, ffn, heads, kv_heads, head_dim, vocab, tied, qkv_bias, qk_norm
    )


# The published config.json numbers: layers, hidden, ffn, heads, kv heads, head_dim, vocab.
NAMED_MODELS: dict[str, ModelDims] = {
    m.name: m
    for m in (
        _named("Qwen2.5-Math-1.5B", 28, 1536, 8960, 12, 2, 128, 151936, tied=True, family="qwen2"),
        _named("Qwen2.5-Math-7B", 28, 3584, 18944, 28, 4, 128, 152064, tied=False, family="qwen2"),
        _named("Qwen2.5-14B", 48, 5120, 13824, 40, 8, 128, 152064, tied=False, family="qwen2"),
        _named("Qwen2.5-32B", 64, 5120, 27648, 40, 8, 128, 152064, tied=False, family="qwen2"),
        _named("Qwen3-8B", 36, 4096, 12288, 32, 8, 128, 151936, tied=False, family="qwen3"),
        _named("Qwen3-14B", 40, 5120, 17408, 40, 8, 128, 151936, tied=False, family="qwen3"),
        _named("Qwen3-32B", 64, 5120, 25600, 64, 8, 128, 151936, tied=False, family="qwen3"),
        _named("Llama-3.1-8B", 32, 4096, 14336, 32, 8, 128, 128256, tied=False, family="llama"),
        _named("Llama-3.1-70B", 80, 8192, 28672, 64, 8, 128, 128256, tied=False, family="llama"),
    )
}


def resolve_model(model: str | Path) -> ModelDims:
    """A named size (case-insensitive, see :data:`NAMED_MODELS`) or a HF checkpoint directory
    / ``config.json``."""
    by_lower = {name.lower(): dims for name, dims in NAMED_MODELS.items()}
    named = by_lower.get(str(model).lower())
    if named is not None:
        return named
    path = Path(model)
    if not path.exists():
        raise ValueError(
            f"--model {model}: neither a HF config directory / config.json nor a known size "
            f"({', '.join(NAMED_MODELS)})"
        )
    return ModelDims.from_hf_config(path)
