"""torchrun worker: SDPA core attention against megatron's DotProductAttention.

For query/KV head ratios 1 and 6 and the masks the actor and the samplers pass (plain causal,
packed block-diagonal causal with padding tokens in their own segments, no mask with the
causal mask type, a decoding query against a cache), and for a packed row given by its
boundaries (``PackedSeqParams``, what the actor passes; also through megatron's own code, the
fallback), it compares outputs and the gradients of q, k and v in fp32, writing the largest
differences as JSON. A negative control shows the comparison catches a wrong mask
(non-causal). Without autograd (sampling, log-probs) SDPA reads grouped heads in place; each
SDPA case also records whether that output equals the one with autograd bit for bit.
"""

import argparse
import json
import sys
from functools import partial

import torch
import torch.distributed as dist


def _packed_mask(lengths: list[int]) -> torch.Tensor:
    segment = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])
    s = len(segment)
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    return ~((segment[:, None] == segment[None, :]) & causal)[None, None]


def _largest_difference(runs, q, k, v) -> float:
    """Max |difference| of outputs and q/k/v gradients between two ``attend(q, k, v)``."""
    outputs = []
    for attend in runs:
        out = attend(q, k, v)
        grads = torch.autograd.grad(
            (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), (q, k, v)
        )
        outputs.append((out.detach(), grads))
    (ref_out, ref_grads), (out, grads) = outputs
    return max(
        float((out - ref_out).abs().max()),
        *(float((g - rg).abs().max()) for g, rg in zip(grads, ref_grads, strict=True)),
    )


def _same_without_autograd(attend, q, k, v) -> bool:
    """Whether ``attend`` gives bit-identical outputs with and without autograd."""
    with torch.no_grad():
        fast = attend(q, k, v)
    return torch.equal(attend(q, k, v).detach(), fast)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    from megatron.core import parallel_state as ps
    from megatron.core import tensor_parallel
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType

    from nemo_red.models.families import ModelShape
    from nemo_red.models.megatron_cpu import apply_cpu_patches
    from nemo_red.models.megatron_gpt import transformer_config
    from nemo_red.models.sdpa_attention import SDPADotProductAttention, packed_row_params

    dist.init_process_group("gloo")
    apply_cpu_patches()
    ps.initialize_model_parallel(1, 1)
    tensor_parallel.model_parallel_cuda_manual_seed(0)
    torch.manual_seed(0)
    s, hn = 12, 16
    masks = {
        "causal": torch.ones(s, s, dtype=torch.bool).triu(1)[None, None],
        "packed": _packed_mask([5, 4, 1, 1, 1]),  # two sequences, then 3 padding tokens
        "none_causal_type": None,
    }
    report = {}
    no_grad_equal = {}
    for heads, groups in ((4, 4), (12, 2)):
        shape = ModelShape("qwen2", 64, heads * hn, 64, 1, heads, groups, hn, 1e-6, 1e4, 64, False)
        config = transformer_config(shape)
        kwargs = {
            "layer_number": 1,
            "attn_mask_type": AttnMaskType.causal,
            "attention_type": "self",
        }
        reference = DotProductAttention(config, **kwargs)
        sdpa = SDPADotProductAttention(config, **kwargs)
        for name, mask in masks.items():
            for sq in (s, 1):
                if sq == 1 and mask is not None:
                    mask = mask[..., -1:, :]  # decoding: the last query against all keys
                q = torch.randn(sq, 2, heads, hn, requires_grad=True)
                k = torch.randn(s, 2, groups, hn, requires_grad=True)
                v = torch.randn(s, 2, groups, hn, requires_grad=True)
                # megatron builds its default causal mask for None on CUDA only: pass it here
                explicit = masks["causal"] if mask is None and sq > 1 else mask
                case = f"h{heads}_g{groups}_{name}_sq{sq}"
                report[case] = _largest_difference(
                    [
                        partial(reference, attention_mask=explicit),
                        partial(sdpa, attention_mask=mask),
                    ],
                    q,
                    k,
                    v,
                )
                no_grad_equal[case] = _same_without_autograd(
                    partial(sdpa, attention_mask=mask), q, k, v
                )
        # the actor's packed row: boundaries instead of a mask (batch 1), natively and
        # through megatron's code (query-key layer scaling is one of the fallback's triggers)
        params = packed_row_params(torch.tensor([0, 5, 9], dtype=torch.int32), s)
        scaled = transformer_config(shape)
        scaled.apply_query_key_layer_scaling = True
        scaled.attention_softmax_in_fp32 = True
        for name, cfg in (("packed_params", config), ("packed_params_fallback", scaled)):
            q = torch.randn(s, 1, heads, hn, requires_grad=True)
            k, v = (torch.randn(s, 1, groups, hn, requires_grad=True) for _ in range(2))
            packed = SDPADotProductAttention(cfg, **kwargs)

            def thd(q, k, v, packed=packed, params=params):  # megatron squeezes b for thd
                return packed(q[:, 0], k[:, 0], v[:, 0], None, packed_seq_params=params)

            report[f"h{heads}_g{groups}_{name}"] = _largest_difference(
                [partial(reference, attention_mask=masks["packed"]), thd], q, k, v
            )
            no_grad_equal[f"h{heads}_g{groups}_{name}"] = _same_without_autograd(thd, q, k, v)
        q, k, v = (torch.randn(s, 1, n, hn) for n in (heads, groups, groups))
        wrong = sdpa(q, k, v, torch.zeros(1, 1, s, s, dtype=torch.bool))  # attends to the future
        report[f"h{heads}_g{groups}_control_no_causality"] = float(
            (wrong - reference(q, k, v, masks["causal"])).abs().max()
        )
    report["no_grad_equal"] = no_grad_equal
    ps.destroy_model_parallel()
    with open(args.out, "w") as handle:
        json.dump(report, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
