"""Loss presets: named compositions of registered terms (docs/design.md, Algorithm, "Presets").

A preset is data, not code: a :class:`LossSpec` lists :class:`TermSpec` entries (term name,
population, coefficient, params), the aggregation mode, the normaliser population and the
advantage estimator. Specs are validated when built (unknown names and params fail with the
valid choices), so a bad config never reaches a training step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from nemo_red.algorithms.advantages import ADVANTAGE_ESTIMATORS
from nemo_red.algorithms.aggregation import AGGREGATIONS
from nemo_red.algorithms.coefficients import COEFFICIENTS
from nemo_red.algorithms.loss_inputs import POPULATIONS
from nemo_red.algorithms.loss_terms import LOSS_TERMS
from nemo_red.algorithms.registry import Registry

NORMALISERS = ("joint", "per_term")


def _build_params(schema: type, params: Mapping[str, Any], what: str) -> Any:
    valid = {f.name for f in dataclasses.fields(schema)}
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ValueError(f"unknown {what} params {unknown}; valid: {sorted(valid) or 'none'}")
    return schema(**params)


@dataclass(frozen=True)
class TermSpec:
    """One term of a loss: ``coefficient * term`` over the responses of ``on``.

    Attributes:
        term: a registered loss term (``LOSS_TERMS``).
        on: "online", "offline" or "all".
        coefficient: a registered coefficient (``COEFFICIENTS``).
        params: keyword params of the term's schema.
        coefficient_params: keyword params of the coefficient's schema.
    """

    term: str
    on: str
    coefficient: str = "constant"
    params: Mapping[str, Any] = field(default_factory=dict)
    coefficient_params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.on not in POPULATIONS:
            raise ValueError(f"TermSpec.on must be one of {POPULATIONS}, got {self.on!r}")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        object.__setattr__(
            self, "coefficient_params", MappingProxyType(dict(self.coefficient_params))
        )
        registered = LOSS_TERMS.get(self.term)
        coefficient = COEFFICIENTS.get(self.coefficient)
        object.__setattr__(
            self, "_term_params", _build_params(registered.params, self.params, self.term)
        )
        object.__setattr__(
            self,
            "_coefficient_params",
            _build_params(coefficient.params, self.coefficient_params, self.coefficient),
        )

    @property
    def term_params(self) -> Any:
        """The validated params dataclass of the term."""
        return self._term_params  # type: ignore[attr-defined]

    @property
    def coef_params(self) -> Any:
        """The validated params dataclass of the coefficient."""
        return self._coefficient_params  # type: ignore[attr-defined]

    @property
    def needs(self) -> frozenset[str]:
        """Batch fields the term and its coefficient need (entropy, entropy_grad, ref)."""
        return LOSS_TERMS.get(self.term).needs | COEFFICIENTS.get(self.coefficient).needs


@dataclass(frozen=True)
class LossSpec:
    """A complete loss: terms, aggregation, normaliser population, advantage estimator.

    Attributes:
        name: the preset name (informational).
        terms: the composed terms; term names must be unique.
        aggregation: a registered aggregation mode (``AGGREGATIONS``).
        normaliser: "joint" divides every term by counts over all responses of the step
            (paper Eq. 12: online and offline responses share one mean); "per_term" divides
            each term by its own population's counts (CHORD's (1 - mu) L_GRPO + mu L_SFT).
        advantage: a registered advantage estimator (``ADVANTAGE_ESTIMATORS``).
    """

    name: str
    terms: tuple[TermSpec, ...]
    aggregation: str = "seq_mean_token_mean"
    normaliser: str = "joint"
    advantage: str = "grpo"

    def __post_init__(self) -> None:
        AGGREGATIONS.get(self.aggregation)
        ADVANTAGE_ESTIMATORS.get(self.advantage)
        if self.normaliser not in NORMALISERS:
            raise ValueError(f"normaliser must be one of {NORMALISERS}, got {self.normaliser!r}")
        names = [t.term for t in self.terms]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"a loss needs at least one term and unique term names: {names}")

    @property
    def term_names(self) -> tuple[str, ...]:
        """The names of the composed terms, in order."""
        return tuple(t.term for t in self.terms)

    @property
    def uses_online(self) -> bool:
        """Whether any term trains on the model's own rollouts."""
        return any(t.on in ("online", "all") for t in self.terms)

    @property
    def uses_offline(self) -> bool:
        """Whether any term trains on teacher traces."""
        return any(t.on in ("offline", "all") for t in self.terms)

    @property
    def needs(self) -> frozenset[str]:
        """Union of the batch fields the terms need."""
        return frozenset().union(*(t.needs for t in self.terms))

    def with_term(self, term: str, **changes: Any) -> LossSpec:
        """A copy with the named term's fields changed (``params`` entries are merged)."""
        terms = []
        for spec in self.terms:
            if spec.term == term:
                merged = dict(changes)
                for key in ("params", "coefficient_params"):
                    if key in changes:
                        merged[key] = {**getattr(spec, key), **changes[key]}
                spec = dataclasses.replace(spec, **merged)
            terms.append(spec)
        if term not in {t.term for t in self.terms}:
            raise ValueError(
                f"preset {self.name!r} has no term {term!r}: {[t.term for t in self.terms]}"
            )
        return dataclasses.replace(self, terms=tuple(terms))

    def with_extra_term(self, spec: TermSpec) -> LossSpec:
        """A copy with one more term (e.g. an optional k3 KL or entropy bonus)."""
        return dataclasses.replace(self, terms=(*self.terms, spec))


PRESETS: Registry[LossSpec] = Registry("loss preset")

_PG = TermSpec("clipped_pg", "online")
_CHORD_SCHEDULE = {"warmup_steps": 200, "decay_steps": 400, "peak": 0.5, "valley": 0.02}

for _spec in (
    LossSpec("grpo", (_PG,), normaliser="per_term"),
    LossSpec(
        "dapo",
        (TermSpec("clipped_pg", "online", params={"eps_low": 0.2, "eps_high": 0.28}),),
        aggregation="token_mean",
        normaliser="per_term",
    ),
    LossSpec("sft", (TermSpec("nll", "offline"),), aggregation="token_mean", normaliser="per_term"),
    LossSpec("mixpolicy", (_PG, TermSpec("offline_pg", "offline", params={"ratio": "pi_theta"}))),
    LossSpec("offline_onpolicy", (_PG, TermSpec("offline_pg", "offline", params={"ratio": "one"}))),
    LossSpec(
        "luffy",
        (
            TermSpec("pg", "online"),
            TermSpec("offline_pg", "offline", params={"ratio": "luffy", "gamma": 0.1}),
            TermSpec("entropy_bonus", "all", coefficient_params={"value": 0.001}),
        ),
        aggregation="seq_sum_lmax",
        advantage="dr_grpo",
    ),
    LossSpec(
        "srft",
        (
            TermSpec("srft_rollout", "online"),
            TermSpec("nll", "offline", coefficient="srft_entropy"),
            TermSpec("offline_pg", "offline", params={"ratio": "luffy", "gamma": 0.1}),
        ),
    ),
    LossSpec(
        "chord",
        (
            TermSpec(
                "clipped_pg",
                "online",
                coefficient="chord_mu",
                coefficient_params={**_CHORD_SCHEDULE, "complement": True},
            ),
            TermSpec(
                "nll_phi", "offline", coefficient="chord_mu", coefficient_params=_CHORD_SCHEDULE
            ),
        ),
        normaliser="per_term",
        aggregation="token_mean",
    ),
    LossSpec("red_shift", (_PG, TermSpec("offline_pg", "offline"))),
    LossSpec(
        "red_entropy",
        (_PG, TermSpec("offline_pg", "offline", "entropy_regulated", params={"ratio": "pi_theta"})),
    ),
    LossSpec("red", (_PG, TermSpec("offline_pg", "offline", coefficient="entropy_regulated"))),
):
    PRESETS.add(_spec.name, _spec)


def get_preset(name: str) -> LossSpec:
    """The :class:`LossSpec` registered as ``name``; unknown names list the valid ones."""
    return PRESETS.get(name)


def describe(spec: LossSpec) -> str:
    """One human-readable line per term, for ``nemo-red presets``."""
    lines = [
        f"{spec.name}: aggregation={spec.aggregation} normaliser={spec.normaliser} "
        f"advantage={spec.advantage}"
    ]
    for t in spec.terms:
        params = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(t.term_params).items())
        coef = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(t.coef_params).items())
        lines.append(f"  {t.on:<7} {t.term}({params})  x {t.coefficient}({coef})".rstrip())
    return "\n".join(lines)
