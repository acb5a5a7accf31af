"""Bad requests fail before any compute; sampling filters by hand."""

import math

import pytest
import torch

from nemo_red.rollout.base import SamplingParams, logprob_gap, validate_request
from nemo_red.rollout.sampling import sample_next


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n must be >= 1"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
    ],
)
def test_bad_sampling_params(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)


@pytest.mark.parametrize(
    ("prompts", "params", "match"),
    [
        ([], SamplingParams(), "no prompts"),
        ([[1, 2], []], SamplingParams(), "prompt 1 is empty"),
        ([[1] * 16], SamplingParams(), "prompt 0 has 16 tokens; the context holds 16"),
        ([[1, 99]], SamplingParams(), "outside the vocabulary"),
        ([[1]], SamplingParams(stop_token_ids=(3, 50)), r"stop_token_ids \[50\]"),
    ],
)
def test_bad_requests(prompts, params, match):
    with pytest.raises(ValueError, match=match):
        validate_request(prompts, params, vocab_size=50, max_context=16)


def test_greedy_returns_argmax_and_model_logprob():
    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3]]))
    tokens, logprobs = sample_next(logits, SamplingParams(temperature=0), None)
    assert tokens.tolist() == [1]
    assert logprobs.item() == pytest.approx(math.log(0.6))


def test_top_k_and_top_p_renormalise_the_sampling_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(2000, 4)
    gen = torch.Generator().manual_seed(0)
    tokens, logprobs = sample_next(logits, SamplingParams(top_k=2), gen)
    assert set(tokens.tolist()) == {0, 1}
    expected = {0: math.log(0.5 / 0.8), 1: math.log(0.3 / 0.8)}
    for t, lp in zip(tokens.tolist(), logprobs.tolist(), strict=True):
        assert lp == pytest.approx(expected[t], abs=1e-6)
    # top_p = 0.8: 0.5 + 0.3 reach 0.8, so tokens 2 and 3 are dropped.
    tokens, _ = sample_next(logits, SamplingParams(top_p=0.8), gen)
    assert set(tokens.tolist()) == {0, 1}
    # Temperature 2 flattens: p ~ sqrt(p) renormalised.
    tokens, logprobs = sample_next(logits[:1], SamplingParams(temperature=2.0), gen)
    roots = torch.tensor([0.5, 0.3, 0.15, 0.05]).sqrt()
    assert math.exp(logprobs.item()) == pytest.approx(float(roots[tokens] / roots.sum()))


def test_logprob_gap():
    engine = torch.tensor([[-1.0, -2.0, 0.0]])
    actor = torch.tensor([[-1.1, -2.0, 5.0]])
    mask = torch.tensor([[True, True, False]])
    gap = logprob_gap(engine, actor, mask)
    assert gap["logprob_gap/max"] == pytest.approx(0.1)
    assert gap["logprob_gap/mean"] == pytest.approx(0.05)


def test_an_hf_engine_refuses_work_after_shutdown():
    from nemo_red.rollout.hf_engine import HFEngine

    with pytest.raises(ValueError, match="no model_type"):
        HFEngine.from_config({"vocab_size": 32})
    engine = HFEngine.from_config(
        {
            "model_type": "qwen2",
            "vocab_size": 32,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 64,
        }
    )
    engine.shutdown()
    engine.shutdown()  # idempotent
    with pytest.raises(RuntimeError, match="shut down"):
        engine.generate([[1, 2]], SamplingParams(max_new_tokens=2))
