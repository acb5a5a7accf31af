"""A tiny hand-made batch: one prompt, two online rollouts and one teacher trace.

Per-token probabilities (pi_theta / pi_old), advantages and rewards are chosen so that every
preset's loss can be written down by hand in the tests:

    online 1: pi = [0.5, 0.6], pi_old = [0.5, 0.4] -> rho = [1, 1.5], A = 1,  r = 1
    online 2: pi = [0.2, pad], pi_old = [0.4, pad] -> rho = [0.5],    A = -1, r = 0
    offline : pi = [0.5, 0.8], pi_old = pi          -> rho = [1, 1],   A* = 0.5, r = 1
    beta = 0.5 for the group; per-token entropy 1.0 everywhere.
"""

import math

import pytest
import torch

from nemo_red.algorithms.loss_inputs import GlobalNormalisers, LossBatch


def make_hand_batch() -> LossBatch:
    log = math.log
    f64 = torch.float64
    logprobs = torch.tensor(
        [[log(0.5), log(0.6)], [log(0.2), 0.0], [log(0.5), log(0.8)]], dtype=f64
    )
    old = torch.tensor([[log(0.5), log(0.4)], [log(0.4), 0.0], [log(0.5), log(0.8)]], dtype=f64)
    return LossBatch(
        logprobs=logprobs.requires_grad_(True),
        old_logprobs=old,
        mask=torch.tensor([[True, True], [True, False], [True, True]]),
        is_offline=torch.tensor([False, False, True]),
        advantages=torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64),
        rewards=torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64),
        group_accuracy=torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64),
        entropy=torch.ones(3, 2, dtype=torch.float64),
    )


def normalisers_of(batch: LossBatch, max_response_length: int = 4) -> GlobalNormalisers:
    return GlobalNormalisers.from_batches([(batch.mask, batch.is_offline)], max_response_length)


@pytest.fixture
def hand_batch() -> LossBatch:
    return make_hand_batch()
