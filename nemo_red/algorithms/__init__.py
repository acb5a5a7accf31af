"""Pure tensor math of RED and its baselines. Nothing here imports megatron.

* ``advantages``: GRPO-family advantage estimators and the group accuracy beta;
* ``loss_terms`` / ``coefficients`` / ``aggregation``: registered parts of a loss;
* ``presets``: the named compositions (red, grpo, luffy, ...); ``loss``: the composer;
* ``entropy_regulator``: RED's dynamic weight w(t);
* ``token_stats``: fused per-token log-probs and entropies from (vocab-parallel) logits.
"""

from nemo_red.algorithms.advantages import ADVANTAGE_ESTIMATORS, group_accuracy
from nemo_red.algorithms.entropy_regulator import EntropyRegulator, RegulatorUpdate
from nemo_red.algorithms.loss import compute_loss, reduce_metrics
from nemo_red.algorithms.loss_inputs import GlobalNormalisers, LossBatch, StepContext
from nemo_red.algorithms.presets import PRESETS, LossSpec, TermSpec, get_preset
from nemo_red.algorithms.registry import UnknownNameError

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "PRESETS",
    "EntropyRegulator",
    "GlobalNormalisers",
    "LossBatch",
    "LossSpec",
    "RegulatorUpdate",
    "StepContext",
    "TermSpec",
    "UnknownNameError",
    "compute_loss",
    "get_preset",
    "group_accuracy",
    "reduce_metrics",
]
