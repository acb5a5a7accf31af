"""RED's dynamic entropy regulation (paper Eq. 13, Appendix D; docs/design.md, Algorithm step 6).

At iteration t the actor measures H_rl(t) and H_sft(t), the mean token entropies of the
policy over the online and the offline tokens, in the pass that computes log pi_old. Then

    dH_x(t) = |1 - H_x(t) / Hbar_x(t - 1)|,   Hbar = previous value (window 1) or the mean
                                               of the previous k values (window k)
    w(t)    = clip(dH_sft(t) / dH_rl(t), clip_low, clip_high)

With no history w = 1. With dH_rl = 0, w = clip_high; when clip_high is infinite this would
make the loss non-finite, so the previous weight is kept instead (a decision of this
implementation; the paper does not cover the case). A zero previous entropy gives dH = 0
when the entropy is still 0 and an infinite change otherwise.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RegulatorUpdate:
    """What one update computed, for logging: w and the relative entropy changes."""

    weight: float
    delta_rl: float
    delta_sft: float
    ratio: float


def relative_change(current: float, previous: float) -> float:
    """dH = |1 - current / previous|, with the zero-previous convention of this module."""
    if previous == 0:
        return 0.0 if current == 0 else math.inf
    return abs(1 - current / previous)


class EntropyRegulator:
    """History of H_rl and H_sft and the weight w(t) they give.

    Args:
        window: k, how many previous entropies make Hbar (paper ablation: 1, 5, 10).
        clip_low: lower bound of w (paper: 1; ablation 0).
        clip_high: upper bound of w (paper: G, the number of online rollouts; ablation inf).
    """

    def __init__(self, window: int = 1, clip_low: float = 1.0, clip_high: float = 8.0) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not (0 <= clip_low <= clip_high):
            raise ValueError(f"need 0 <= clip_low <= clip_high, got {clip_low}, {clip_high}")
        self.window = window
        self.clip_low = clip_low
        self.clip_high = clip_high
        self._h_rl: deque[float] = deque(maxlen=window)
        self._h_sft: deque[float] = deque(maxlen=window)
        self._weight = 1.0

    @property
    def weight(self) -> float:
        """The current w(t) (1 before the first update with history)."""
        return self._weight

    def update(self, h_rl: float, h_sft: float) -> RegulatorUpdate:
        """Takes this iteration's entropies, returns w(t), then adds them to the history."""
        for name, value in (("h_rl", h_rl), ("h_sft", h_sft)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite entropy >= 0, got {value}")
        if not self._h_rl:
            result = RegulatorUpdate(1.0, math.nan, math.nan, math.nan)
        else:
            delta_rl = relative_change(h_rl, sum(self._h_rl) / len(self._h_rl))
            delta_sft = relative_change(h_sft, sum(self._h_sft) / len(self._h_sft))
            ratio = self._ratio(delta_sft, delta_rl)
            weight = min(max(ratio, self.clip_low), self.clip_high)
            if math.isinf(weight):
                weight = self._weight
            result = RegulatorUpdate(weight, delta_rl, delta_sft, ratio)
        self._h_rl.append(float(h_rl))
        self._h_sft.append(float(h_sft))
        self._weight = result.weight
        return result

    @staticmethod
    def _ratio(delta_sft: float, delta_rl: float) -> float:
        if delta_rl == 0 or (math.isinf(delta_sft) and not math.isinf(delta_rl)):
            return math.inf
        if math.isinf(delta_rl):
            return 1.0 if math.isinf(delta_sft) else 0.0
        return delta_sft / delta_rl

    def state_dict(self) -> dict[str, Any]:
        """The regulator's state, part of the training checkpoint."""
        return {
            "window": self.window,
            "clip_low": self.clip_low,
            "clip_high": self.clip_high,
            "h_rl": list(self._h_rl),
            "h_sft": list(self._h_sft),
            "weight": self._weight,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`; the configured window and clip range must match."""
        saved = (state["window"], state["clip_low"], state["clip_high"])
        if saved != (self.window, self.clip_low, self.clip_high):
            raise ValueError(
                f"regulator checkpoint has window/clip {saved}, "
                f"configured {(self.window, self.clip_low, self.clip_high)}"
            )
        self._h_rl = deque((float(x) for x in state["h_rl"]), maxlen=self.window)
        self._h_sft = deque((float(x) for x in state["h_sft"]), maxlen=self.window)
        self._weight = float(state["weight"])
