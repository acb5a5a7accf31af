"""Activation memory of one micro-batch, tensor by tensor, as in Korthikanti et al. (2022).

"Reducing Activation Recomputation in Large Transformer Models" counts, per layer and per
token, every tensor autograd keeps for the backward pass; with ``s`` tokens, ``h`` hidden,
``a`` heads, ``t`` tensor-parallel ranks and 16-bit activations its GPT layer keeps
``s h (34 + 5 a s / h)`` bytes: ``s h (10 + 24 / t + 5 a s / (h t))`` under tensor
parallelism, ``s h (34 / t + 5 a s / (h t))`` with sequence parallelism, ``34 s h / t``
with selective recomputation (the attention core is recomputed) and ``2 s h`` per layer with
full recomputation (only each layer's input is kept). :data:`PAPER_GPT` reproduces those
terms; :data:`LOCAL_SDPA` lists what this project's layers keep instead (megatron's local
spec with SDPA core attention, read off autograd's saved tensors): no ``s^2`` terms (flash
attention keeps the per-head log-sum-exp), the key and value heads repeated to the query
heads before attention, a gated SiLU MLP, unfused RMSNorm (its input in fp32 plus the
normalised activations) and no dropout masks.

Each term has a scope: ``tp`` terms are split over tensor-parallel ranks; ``seq`` terms are
replicated on every tensor-parallel rank unless sequence parallelism splits them; ``none``
terms (the rotary tables) are full size on every rank.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nemo_red.planning.model_dims import ModelDims

__all__ = [
    "LOCAL_SDPA",
    "PAPER_GPT",
    "Recipe",
    "Term",
    "layer_terms",
    "stage_activation_bytes",
]

RECOMPUTE = ("none", "selective", "full")
RECOMPUTE_METHODS = ("uniform", "block")


@dataclass(frozen=True)
class Term:
    """One tensor kept for backward, per token.

    Attributes:
        name: what it is.
        elements: ``(dims, tokens) -> elements per token`` (``tokens``: the attention span,
            for the ``s^2`` terms of unfused attention).
        scope: ``tp`` | ``seq`` | ``none`` (see the module docstring).
        dtype_bytes: bytes per element; None = the activation dtype.
        recomputed: dropped by selective recomputation (the attention core).
        selective_only: kept only under selective recomputation (the recomputed block's
            inputs that nothing else keeps).
    """

    name: str
    elements: Callable[[ModelDims, int], float]
    scope: str
    dtype_bytes: int | None = None
    recomputed: bool = False
    selective_only: bool = False


@dataclass(frozen=True)
class Recipe:
    """The saved tensors of one decoder layer and of the model's ends (per token)."""

    name: str
    layer: tuple[Term, ...]
    final: tuple[Term, ...]  # final norm and output-layer input (last pipeline stage)


def _norm(name: str, width: Callable[[ModelDims], int], scope: str) -> tuple[Term, ...]:
    """Unfused RMSNorm: its input upcast to fp32 (the input itself in fp32), the per-row
    reciprocal RMS, and the normalised activations multiplied by the weight."""
    return (
        Term(f"{name}.input_fp32", lambda m, s: width(m), scope, dtype_bytes=4),
        Term(f"{name}.normalised", lambda m, s: width(m), scope),
    )


def _q(m: ModelDims, s: int) -> float:
    return m.heads * m.head_dim


def _kv(m: ModelDims, s: int) -> float:
    return m.kv_heads * m.head_dim


def _value_view(m: ModelDims, s: int) -> float:
    # the value is a view of the fused QKV output: keeping it keeps all of that output
    return (m.heads + 2 * m.kv_heads) * m.head_dim


LOCAL_SDPA = Recipe(
    name="megatron local spec, SDPA (flash) attention, gated SiLU MLP, unfused RMSNorm",
    layer=(
        *_norm("input_norm", lambda m: m.hidden, "seq"),
        Term("input_norm.rms", lambda m, s: 1, "seq", dtype_bytes=4),
        Term("qkv.input", lambda m, s: m.hidden, "seq"),
        Term("q_norm.input_fp32", lambda m, s: _q(m, s) * m.qk_norm, "tp", dtype_bytes=4),
        Term("q_norm.normalised", lambda m, s: _q(m, s) * m.qk_norm, "tp"),
        Term("k_norm.input_fp32", lambda m, s: _kv(m, s) * m.qk_norm, "tp", dtype_bytes=4),
        Term("k_norm.normalised", lambda m, s: _kv(m, s) * m.qk_norm, "tp"),
        Term("rope.cos_sin", lambda m, s: 4 * m.head_dim, "none"),
        Term("attention.query", _q, "tp"),
        Term("attention.key_repeated", _q, "tp", recomputed=True),
        Term("attention.value_repeated", _q, "tp", recomputed=True),
        Term("attention.output", _q, "tp", recomputed=True),
        Term("attention.logsumexp", lambda m, s: m.heads, "tp", dtype_bytes=4, recomputed=True),
        Term("attention.key", _kv, "tp", selective_only=True),
        Term("attention.value_qkv_view", _value_view, "tp", selective_only=True),
        Term("proj.input", _q, "tp"),
        *_norm("mlp_norm", lambda m: m.hidden, "seq"),
        Term("mlp_norm.rms", lambda m, s: 1, "seq", dtype_bytes=4),
        Term("fc1.input", lambda m, s: m.hidden, "seq"),
        Term("fc1.output", lambda m, s: 2 * m.ffn, "tp"),
        Term("silu.output", lambda m, s: m.ffn, "tp"),
        Term("glu.linear_half", lambda m, s: m.ffn, "tp"),
        Term("fc2.input", lambda m, s: m.ffn, "tp"),
    ),
    final=(
        *_norm("final_norm", lambda m: m.hidden, "seq"),
        Term("final_norm.rms", lambda m, s: 1, "seq", dtype_bytes=4),
        Term("output_layer.input", lambda m, s: m.hidden, "seq"),
    ),
)

# Korthikanti et al. (2022), Section 4.1: GPT with LayerNorm, a 4h GeLU MLP, dropout and
# unfused attention, 16-bit activations, 1-byte dropout masks.
PAPER_GPT = Recipe(
    name="Korthikanti et al. 2022 GPT layer",
    layer=(
        Term("layernorm1.input", lambda m, s: m.hidden, "seq", 2),
        Term("qkv.input", lambda m, s: m.hidden, "seq", 2),
        Term("attention.query_key", lambda m, s: 2 * m.hidden, "tp", 2),
        Term("attention.softmax", lambda m, s: m.heads * s, "tp", 2, recomputed=True),
        Term("attention.softmax_dropout_mask", lambda m, s: m.heads * s, "tp", 1, recomputed=True),
        Term("attention.dropout_output", lambda m, s: m.heads * s, "tp", 2, recomputed=True),
        Term("attention.value", lambda m, s: m.hidden, "tp", 2),
        Term("proj.input", lambda m, s: m.hidden, "tp", 2),
        Term("attention.dropout_mask", lambda m, s: m.hidden, "seq", 1),
        Term("layernorm2.input", lambda m, s: m.hidden, "seq", 2),
        Term("fc1.input", lambda m, s: m.hidden, "seq", 2),
        Term("gelu.input", lambda m, s: 4 * m.hidden, "tp", 2),
        Term("fc2.input", lambda m, s: 4 * m.hidden, "tp", 2),
        Term("mlp.dropout_mask", lambda m, s: m.hidden, "seq", 1),
    ),
    final=(),
)


def layer_terms(
    recipe: Recipe,
    dims: ModelDims,
    tokens: int,
    act_bytes: int,
    tp: int = 1,
    sequence_parallel: bool = False,
    selective: bool = False,
    attention_span: int | None = None,
) -> dict[str, float]:
    """Bytes each saved tensor of one layer takes on one tensor-parallel rank.

    Args:
        tokens: tokens of the micro-batch (``s b``).
        act_bytes: bytes per activation element (2 for bf16).
        selective: the attention core is recomputed (megatron's selective recomputation).
        attention_span: keys each query sees (``s`` of the ``s^2`` terms; default tokens).
    """
    span = tokens if attention_span is None else attention_span
    out = {}
    for term in recipe.layer:
        if (selective and term.recomputed) or (not selective and term.selective_only):
            continue
        out[term.name] = _term_bytes(term, dims, tokens, span, act_bytes, tp, sequence_parallel)
    return out


def _term_bytes(
    term: Term, dims: ModelDims, tokens: int, span: int, act_bytes: int, tp: int, sp: bool
) -> float:
    size = term.elements(dims, span) * tokens * (term.dtype_bytes or act_bytes)
    divisor = tp if term.scope == "tp" or (term.scope == "seq" and sp) else 1
    return size / divisor


def final_bytes(
    recipe: Recipe, dims: ModelDims, tokens: int, act_bytes: int, tp: int, sp: bool
) -> float:
    """The final norm and the output layer's input (last pipeline stage)."""
    return sum(_term_bytes(t, dims, tokens, tokens, act_bytes, tp, sp) for t in recipe.final)


def stage_activation_bytes(
    recipe: Recipe,
    dims: ModelDims,
    tokens: int,
    act_bytes: int,
    *,
    stage_layers: int,
    tp: int = 1,
    sequence_parallel: bool = False,
    recompute: str = "none",
    recompute_method: str = "uniform",
    recompute_num_layers: int = 1,
    in_flight: float = 1.0,
    attention_span: int | None = None,
) -> tuple[float, float]:
    """Activation bytes of one pipeline stage on one rank: ``(kept, recompute working)``.

    ``kept``: what the forward passes of the ``in_flight`` micro-batches keep for their
    backward passes (1F1B: the pipeline size on the first stage, times the interleaving
    factor with virtual stages). Full recomputation keeps each recomputed chunk's input
    (``uniform``: chunks of ``recompute_num_layers`` layers; ``block``: the first
    ``recompute_num_layers`` layers one by one, the others keep everything) and needs, while
    a chunk is recomputed in the backward pass, that chunk's activations: the ``working``
    bytes (once, not per micro-batch; the logits are gone by then). Without full
    recomputation ``working`` is 0.
    """
    if recompute not in RECOMPUTE:
        raise ValueError(f"recompute must be one of {RECOMPUTE}, got {recompute!r}")
    if recompute_method not in RECOMPUTE_METHODS:
        raise ValueError(
            f"recompute_method must be one of {RECOMPUTE_METHODS}, got {recompute_method!r}"
        )
    args = (recipe, dims, tokens, act_bytes, tp, sequence_parallel)
    full_layer = sum(layer_terms(*args, selective=False, attention_span=attention_span).values())
    if recompute == "none":
        return in_flight * stage_layers * full_layer, 0.0
    if recompute == "selective":
        kept = sum(layer_terms(*args, selective=True, attention_span=attention_span).values())
        return in_flight * stage_layers * kept, 0.0
    layer_input = tokens * dims.hidden * act_bytes / (tp if sequence_parallel else 1)
    n = min(recompute_num_layers, stage_layers)
    if recompute_method == "uniform":
        chunks = -(-stage_layers // n)
        return in_flight * chunks * layer_input, n * full_layer
    kept = n * layer_input + (stage_layers - n) * full_layer
    return in_flight * kept, full_layer if n else 0.0
