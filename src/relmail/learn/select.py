"""Per message and outcome: which uplift estimator to trust, and why.

Every candidate (estimator × base learner) is judged on customers it did not
train on, by 2-fold cross-fitting inside the training data: fit on one half
of the customers, score the other, swap, and pool the scores. Pooling keeps
the whole training set as validation data, which matters because uplift
metrics are differences of noisy rates. The winner has the highest Qini
coefficient (or the criterion asked for); the reason names its figures and
the runners-up so a person can check the choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from . import metrics
from .dataset import split_mask
from .estimators import BASES, UPLIFT_KINDS, Layout, Propensity, make_uplift

CRITERIA = ("qini", "keep_at_30", "keep_at_50")


@dataclass
class Choice:
    kind: str
    base: str
    propensity_base: str
    criterion: str
    reason: str
    candidates: list[dict] = field(default_factory=list)


def candidate_names(kinds: Sequence[str] = UPLIFT_KINDS, bases: Sequence[str] = BASES) -> list[tuple[str, str]]:
    return [(k, b) for k in kinds for b in bases]


def choose(
    X: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    groups: np.ndarray,
    layout: Layout,
    seed: int = 0,
    kinds: Sequence[str] = UPLIFT_KINDS,
    bases: Sequence[str] = BASES,
    criterion: str = "qini",
) -> Choice:
    """Cross-fit every candidate on the training rows and pick the best by ``criterion``."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown selection criterion {criterion!r}; choose from {', '.join(CRITERIA)}")
    fold = split_mask(groups, seed, 0.5, salt="validation")
    scores = {name: np.zeros(len(y)) for name in candidate_names(kinds, bases)}
    response = {b: np.zeros(len(y)) for b in bases}
    for held in (fold, ~fold):
        fit = ~held
        for kind, base in scores:
            est = make_uplift(kind, layout, base, seed).fit(X[fit], y[fit], t[fit])
            scores[(kind, base)][held] = est.predict_uplift(X[held])
            if kind == "t_learner":
                # The T-learner's send model is the response model: reuse it.
                response[base][held] = est.predict_treated(X[held])
        for base in bases:
            if not any(k == "t_learner" for k in kinds):
                response[base][held] = Propensity(layout, base, seed).fit(X[fit], y[fit], t[fit]).predict(X[held])
    rows = []
    for (kind, base), s in scores.items():
        rows.append(
            {
                "kind": kind,
                "base": base,
                "qini": metrics.qini_coefficient(s, y, t, seed),
                "keep_at_30": metrics.keep_at(s, y, t, 0.3, seed),
                "keep_at_50": metrics.keep_at(s, y, t, 0.5, seed),
            }
        )
    sends = t == 1
    briers = {b: metrics.brier(response[b][sends], y[sends]) for b in bases}
    propensity_base = min(briers, key=briers.get)
    ranked = sorted(rows, key=lambda r: -_finite(r[criterion]))
    best = ranked[0]
    others = ", ".join(f"{r['kind']}/{r['base']} {_fmt(r[criterion])}" for r in ranked[1:4])
    reason = (
        f"{best['kind']}/{best['base']} has the highest cross-validated {criterion.replace('_', ' ')} "
        f"{_fmt(best[criterion])} (next: {others}); it keeps {_fmt(best['keep_at_30'])} of incremental outcomes "
        f"at 30% volume and {_fmt(best['keep_at_50'])} at 50%. Propensity uses {propensity_base} "
        f"(Brier {briers[propensity_base]:.4f})."
    )
    for r in rows:
        r.update({k: (None if not np.isfinite(v) else float(v)) for k, v in r.items() if k in CRITERIA})
    return Choice(best["kind"], best["base"], propensity_base, criterion, reason, rows)


def _finite(value: float) -> float:
    return value if value is not None and np.isfinite(value) else -np.inf


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"
