"""SDPA core attention equals megatron's DotProductAttention (outputs and gradients)."""

import json
from pathlib import Path

import pytest
import torch

from tests.torchrun import run_torchrun

pytestmark = pytest.mark.distributed


@pytest.mark.slow
def test_sdpa_matches_megatron_attention_and_the_control_fails(tmp_path):
    out = tmp_path / "report.json"
    run_torchrun(Path(__file__).with_name("_sdpa_worker.py"), 1, ["--out", str(out)])
    report = json.loads(out.read_text())
    # sampling and log-probs (no autograd) read grouped heads in place: the same bits
    no_grad_equal = report.pop("no_grad_equal")
    assert len(no_grad_equal) == 2 * (3 * 2 + 2)
    assert all(no_grad_equal.values()), no_grad_equal
    controls = {k: v for k, v in report.items() if "control" in k}
    cases = {k: v for k, v in report.items() if k not in controls}
    # head ratios x (masks x (prefill, decode) + boundaries natively and through megatron)
    assert len(cases) == 2 * (3 * 2 + 2)
    for case, diff in cases.items():
        assert diff < 1e-5, case
    for case, diff in controls.items():
        assert diff > 0.1, case  # a wrong mask is caught


def _mask(allowed_rows: list[list[int]]) -> torch.Tensor:
    """megatron's mask (True = masked) from the visible keys of each query row."""
    s = len(allowed_rows)
    mask = torch.ones(1, 1, s, s, dtype=torch.bool)
    for row, keys in enumerate(allowed_rows):
        mask[0, 0, row, keys] = False
    return mask


def test_segments_of_a_packed_row_by_hand():
    from nemo_red.models.sdpa_attention import Segment, _causal_segments

    # sequences of 3 and 2 tokens, then 3 padding tokens each attending only to itself
    rows = [[0], [0, 1], [0, 1, 2], [3], [3, 4], [5], [6], [7]]
    assert _causal_segments(_mask(rows), 8, 8) == [
        Segment(0, 3, False),
        Segment(3, 5, False),
        Segment(5, 8, True),
    ]
    assert _causal_segments(_mask([[0], [0, 1], [0, 1, 2]]), 3, 3) == [Segment(0, 3, False)]


@pytest.mark.parametrize(
    "rows",
    [
        [[0], [0, 1], [1, 2]],  # a sliding window: row 2 starts where row 1 does not
        [[0], [], [1, 2]],  # a fully masked row
        [[0], [0, 1], [0, 1, 2, 3], [0, 1, 2, 3]],  # not causal: row 2 sees the future
    ],
)
def test_masks_that_are_not_block_diagonal_causal_keep_the_mask(rows):
    from nemo_red.models.sdpa_attention import _causal_segments

    assert _causal_segments(_mask(rows), len(rows), len(rows)) is None


def test_packed_row_params_give_the_rows_segments_and_mask():
    from nemo_red.models.sdpa_attention import (
        Segment,
        _packed_row_segments,
        packed_row_params,
        segments_mask,
    )

    # the same row as above from its boundaries: sequences 0:3 and 3:5, padding 5:8
    params = packed_row_params(torch.tensor([0, 3, 5], dtype=torch.int32), 8)
    assert params.qkv_format == "thd"
    assert params.cu_seqlens_q.tolist() == params.cu_seqlens_kv.tolist() == [0, 3, 5]
    # rotary positions restart per stretch, the padding being one: the longest is 3
    assert params.cu_seqlens_q_padded.tolist() == params.cu_seqlens_kv_padded.tolist()
    assert params.cu_seqlens_q_padded.tolist() == [0, 3, 5, 8]
    assert params.max_seqlen_q == params.max_seqlen_kv == 3
    segments = _packed_row_segments(params, 8, 8)
    assert segments == [Segment(0, 3, False), Segment(3, 5, False), Segment(5, 8, True)]
    rows = [[0], [0, 1], [0, 1, 2], [3], [3, 4], [5], [6], [7]]
    assert torch.equal(segments_mask(segments, 8), _mask(rows))
    # one-token sequences attend to themselves like padding does; no padding at all
    params = packed_row_params(torch.tensor([0, 1, 2, 5], dtype=torch.int32), 5)
    assert params.cu_seqlens_q_padded.tolist() == [0, 1, 2, 5]
    assert params.max_seqlen_q == 3
    assert _packed_row_segments(params, 5, 5) == [Segment(0, 2, True), Segment(2, 5, False)]


@pytest.mark.parametrize(
    ("bounds", "length", "message"),
    [([1, 3], 4, "start at 0"), ([0, 3, 3], 4, "increase"), ([0, 5], 4, "within the row")],
)
def test_bad_boundaries_are_refused(bounds, length, message):
    from nemo_red.models.sdpa_attention import packed_row_params

    with pytest.raises(ValueError, match=message):
        packed_row_params(torch.tensor(bounds, dtype=torch.int32), length)


def test_packed_row_params_describe_one_self_attention_row():
    from nemo_red.models.sdpa_attention import _packed_row_segments, packed_row_params

    params = packed_row_params(torch.tensor([0, 2, 4], dtype=torch.int32), 4)
    with pytest.raises(ValueError, match="equal query and key"):
        _packed_row_segments(params, 1, 4)  # a decoding step
    with pytest.raises(ValueError, match="past the row"):
        _packed_row_segments(params, 3, 3)
    # per-sequence padding (Transformer Engine's thd convention) is not what the rows hold
    params.cu_seqlens_q_padded = torch.tensor([0, 3, 6], dtype=torch.int32)
    with pytest.raises(ValueError, match="padding between packed sequences"):
        _packed_row_segments(params, 6, 6)
