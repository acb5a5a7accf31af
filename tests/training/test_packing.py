"""Padding-free packing of a step's sequences into micro-batches (by hand, and a packed
sequence against the same sequence alone)."""

import json
from pathlib import Path

import pytest
import torch

from nemo_red.training.packing import (
    SequenceBatch,
    pack,
    pack_step,
    plan_micro_batches,
    split_to_count,
)
from tests.torchrun import run_torchrun


def _batch(lengths, prompts):
    n = len(lengths)
    return SequenceBatch(
        tokens=[torch.arange(10 * i, 10 * i + n_tok) for i, n_tok in enumerate(lengths)],
        prompt_lengths=torch.tensor(prompts),
        is_offline=torch.zeros(n, dtype=torch.bool),
        advantages=torch.zeros(n),
        rewards=torch.zeros(n),
        group_accuracy=torch.zeros(n),
    )


def test_first_fit_decreasing_plan():
    # Decreasing: 9 opens bin 0 (too long for any), 5 bin 1, 4 bin 2, 3 joins 5, 2 joins 4.
    assert plan_micro_batches([5, 3, 4, 2, 9], token_budget=8) == [[4], [0, 1], [2, 3]]


def test_pack_two_sequences_by_hand():
    # seq 0: tokens [0, 1, 2] with prompt 1 -> responses 1, 2 predicted at positions 0, 1.
    # seq 1: tokens [10, 11, 12, 13] with prompt 2 -> responses 12, 13 at positions 4, 5.
    mb = pack(_batch([3, 4], [1, 2]), [0, 1], seq_length=8, width=2)
    assert mb.input_ids.tolist() == [[0, 1, 2, 10, 11, 12, 13, 0]]
    assert mb.position_ids.tolist() == [[0, 1, 2, 0, 1, 2, 3, 0]]
    assert mb.targets.tolist() == [1, 2, 0, 11, 12, 13, 0, 0]
    assert mb.gather_index.tolist() == [[0, 1], [4, 5]]
    assert mb.targets[mb.gather_index].tolist() == [[1, 2], [12, 13]]
    assert mb.real_tokens == 7
    assert mb.cu_seqlens.tolist() == [0, 3, 7]  # position 7 is padding
    assert mb.cu_seqlens.dtype == torch.int32


def test_pack_step_splits_over_data_parallel_ranks_with_one_row_length():
    batch = _batch([7, 3, 5, 2, 6], [1, 1, 2, 1, 3])
    ranks = [pack_step(batch, token_budget=8, shard=(r, 2)) for r in range(2)]
    rows = sorted(int(i) for micro in ranks for mb in micro for i in mb.rows)
    assert rows == [0, 1, 2, 3, 4]
    lengths = {mb.input_ids.shape[1] for micro in ranks for mb in micro}
    assert len(lengths) == 1


def test_bad_batches_are_refused():
    with pytest.raises(ValueError, match="prompt of >= 1 token and a response"):
        _batch([3], [3])
    with pytest.raises(ValueError, match="do not fit"):
        pack(_batch([5], [1]), [0], seq_length=4, width=4)
    with pytest.raises(ValueError, match="token_budget"):
        plan_micro_batches([1], 0)


def test_select_trims_response_fields():
    batch = _batch([3, 6], [1, 1])
    batch = batch.with_fields(old_logprobs=torch.arange(10.0).reshape(2, 5))
    sub = batch.select([0])
    assert sub.old_logprobs.tolist() == [[0.0, 1.0]]


@pytest.mark.distributed
@pytest.mark.slow
def test_a_packed_sequence_scores_as_if_alone(tmp_path):
    # behind a 3,000-token sequence, in fp32 and bf16; the control feeds the same row as a
    # dense mask, where rotary positions run over the row instead of restarting
    out = tmp_path / "report.json"
    run_torchrun(Path(__file__).with_name("_packing_worker.py"), 1, ["--out", str(out)])
    report = json.loads(out.read_text())
    assert report["float32"] < 1e-6, report
    assert report["bfloat16"] < 1e-6, report
    assert report["float32_control_row_positions"] > 2e-5, report
    assert report["bfloat16_control_row_positions"] > 1e-2, report


def test_rows_pad_to_a_multiple_for_sequence_parallelism():
    batch = _batch([7, 3, 5], [1, 1, 2])
    plain = pack_step(batch, token_budget=8)
    padded = pack_step(batch, token_budget=8, row_multiple=4)
    assert {mb.input_ids.shape[1] for mb in plain} == {8}
    assert {mb.input_ids.shape[1] for mb in pack_step(batch, 8, row_multiple=3)} == {9}
    for a, b in zip(plain, padded, strict=True):
        assert b.cu_seqlens.tolist() == a.cu_seqlens.tolist()  # the extra tokens are padding
        assert b.real_tokens == a.real_tokens


def test_split_to_count_spreads_the_fullest_micro_batches():
    assert split_to_count([[0, 1, 2, 3], [4]], 3) == [[0, 2], [1, 3], [4]]
    assert split_to_count([[0, 1], [2]], 2) == [[0, 1], [2]]
    with pytest.raises(ValueError, match="cannot fill the 3 micro-batches"):
        split_to_count([[0], [1]], 3)
    batch = _batch([3, 3, 3], [1, 1, 1])
    assert len(pack_step(batch, token_budget=16)) == 1
    micro = pack_step(batch, token_budget=16, min_micro_batches=2)
    assert [mb.rows.tolist() for mb in micro] == [[0, 2], [1]]


def test_interleaved_group_size_follows_megatrons_rule():
    from nemo_red.training.actor import interleaved_group_size

    # megatron: a group of >= pp micro-batches; the last partial group empty or >= pp
    assert [interleaved_group_size(m, 2) for m in (2, 3, 4, 5, 7)] == [2, 3, 2, 3, 4]
    assert [interleaved_group_size(m, 4) for m in (4, 5, 8, 9)] == [4, 5, 4, 5]
    with pytest.raises(ValueError, match=">= 4 micro-batches"):
        interleaved_group_size(3, 4)
