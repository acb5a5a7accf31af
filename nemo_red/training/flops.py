"""Model FLOPs of a training step and model FLOPs utilisation (MFU).

Counted as in the PaLM and Megatron papers: the matrix multiplications of the model only
(norms, rotary embeddings, softmax and the optimizer are left out), a backward pass costing
twice the forward pass, and no credit for recomputation. For a sequence of ``L`` tokens,
per layer:

* projections: ``2 L (h (a d + 2 g d) + a d h + 3 h f)`` (fused QKV with ``a`` query and
  ``g`` KV heads of size ``d``, attention output, gate + up + down of the MLP of width
  ``f``); ``a d = h`` except where the config sets ``head_dim`` (Qwen3);
* attention: ``4 a d P`` with ``P = L (L + 1) / 2`` causal query-key pairs (scores and the
  weighted sum, ``a`` query heads): packed sequences attend only within themselves;

plus the output layer ``2 L h V``. The training step is 3x the forward pass.
"""

from __future__ import annotations

from collections.abc import Iterable

from nemo_red.models.families import ModelShape

__all__ = ["PEAK_BF16_FLOPS", "matmul_parameters", "peak_flops", "training_flops"]

# Dense bf16 tensor-core peaks (no sparsity) from the vendors' data sheets, matched in this
# order against torch.cuda.get_device_name(); more specific names first.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989.4e12),  # SXM
    ("H200", 989.4e12),
    ("H20", 148e12),
    ("A100", 312e12),
)


def matmul_parameters(shape: ModelShape) -> tuple[int, int]:
    """The weights that take part in a token's matrix multiplications.

    Returns:
        ``(transformer, output_layer)``: the per-token multiply-accumulate counts of the
        decoder layers and of the output layer (= their weight counts, biases left out).
        For Qwen2.5-1.5B: 1,310,195,712 and 233,373,696.
    """
    h, f, d = shape.hidden_size, shape.intermediate_size, shape.head_dim
    per_layer = h * (shape.num_heads * d + 2 * shape.num_kv_heads * d)  # fused QKV
    per_layer += shape.num_heads * d * h  # attention output
    per_layer += 3 * h * f  # gate, up, down
    return shape.num_layers * per_layer, h * shape.vocab_size


def training_flops(shape: ModelShape, lengths: Iterable[int]) -> float:
    """Model FLOPs of one forward + backward pass over sequences of ``lengths`` tokens."""
    layers, output = matmul_parameters(shape)
    attention = 4 * shape.num_heads * shape.head_dim * shape.num_layers
    forward = 0.0
    for length in lengths:
        forward += 2.0 * (layers + output) * length + attention * length * (length + 1) / 2
    return 3.0 * forward


def peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU named like ``torch.cuda.get_device_name()``, or None."""
    for key, value in PEAK_BF16_FLOPS:
        if key in device_name:
            return value
    return None
