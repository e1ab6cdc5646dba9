"""The uplift estimators relmail trains: their registry, the funnel model and the protocol they follow.

* uplift: ``P(outcome | sent) - P(outcome | not sent)`` from sends and
  hold-outs, by the meta-learners of :mod:`.metalearners` (T-learner,
  X-learner, transformed outcome, a proportional-effect model that ranks
  like the response model, each on two base learners: logistic regression
  and gradient boosting) and the single-regression models of
  :mod:`.interaction` (an interaction logistic regression whose effect
  terms are shrunk hard, the same pooled with the sends of the other
  messages, and the shared-shift solo model);
* the funnel model of an outcome reached through another (a purchase after
  a visit): the upstream outcome's uplift times ``P(outcome | upstream, x)``;
* propensity and irritation: calibrated classifiers (:mod:`.bases`).

Each estimator can list its fitted scikit-learn ``parts()`` and be rebuilt
from them (``from_parts``): only those parts are written to disk, so a
model file never has to trust relmail's own classes when it is loaded.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from .bases import Layout, Propensity, fit_probability, predict_probability
from .interaction import Interaction, Pooled, Solo
from .metalearners import Proportional, TLearner, TransformedOutcome, XLearner

UPLIFT_KINDS = ("t_learner", "x_learner", "transformed_outcome", "proportional", "solo", "interaction", "pooled", "funnel")
#: Estimators that exist on some base learners only (the rest run on all of BASES).
KIND_BASES = {"solo": ("logistic",), "interaction": ("logistic",), "pooled": ("logistic",)}
#: Estimators built on the estimator chosen for another outcome (see :class:`Funnel`): candidates only through it.
UPSTREAM_KINDS = ("funnel",)
#: Estimators that also learn from other messages' sends (``siblings``); without them they are not candidates.
POOLING_KINDS = ("pooled",)
#: With siblings, a pooling estimator stands in for the estimator it extends (the same model on more data).
POOLING_REPLACES = {"pooled": "interaction"}
#: An outcome reached through another (its upstream in this mapping) can be modelled as a funnel (see :class:`Funnel`).
UPSTREAM = {"conversion": "visit"}
#: Uplift estimators that give every customer the sign of the lift they learned: the response times the relative
#: lift, and one sent-flag coefficient on the log-odds. Their sign is only as sure as that lift.
UNIFORM_SIGN = ("proportional", "solo")
#: The share of an outcome's cases that must also have its upstream outcome for the funnel to apply.
NESTED_SHARE = 0.95


class Funnel:
    """Uplift of an outcome reached through another: ``uplift_upstream(x) * P(outcome | upstream, x)``.

    A purchase follows a visit. When the e-mail changes *whether* a customer
    visits and not what a visitor does, the purchase uplift is the visit
    uplift times the chance that a visitor buys. Visits are many times more
    common than purchases, so the first factor is learned from far more
    cases than a purchase model ever sees; the second is a plain classifier
    on the visitors (sends and hold-outs alike). The upstream estimator is
    the one selection chose for the upstream outcome (``upstream_kind`` /
    ``base``), so the funnel inherits the evidence behind that choice.
    """

    kind = "funnel"

    def __init__(self, layout: Layout, base: str = "logistic", seed: int = 0, upstream_kind: str = "proportional"):
        self.layout, self.base, self.seed, self.upstream_kind = layout, base, seed, upstream_kind

    def fit(self, X, y, t, upstream=None, siblings: tuple[np.ndarray, np.ndarray] | None = None) -> Funnel:
        """Fit on the outcome ``y`` and the ``upstream`` outcome (0/1 per row; ``siblings`` = their ``(X, upstream)``)."""
        if upstream is None:
            raise ValueError("the funnel estimator needs the upstream outcome of every row")
        upstream = np.asarray(upstream, dtype=int)
        y = np.asarray(y, dtype=int)
        up_layout = Layout.of(X, self.layout.n_numeric, self.layout.n_categorical, upstream)
        est = make_uplift(self.upstream_kind, up_layout, self.base, self.seed)
        self.upstream_ = est.fit(X, upstream, t, siblings=siblings) if self.upstream_kind in POOLING_KINDS else est.fit(X, upstream, t)
        reached = upstream == 1
        ratio_layout = Layout.of(X[reached], self.layout.n_numeric, self.layout.n_categorical, y[reached])
        self.ratio_ = fit_probability(ratio_layout, "logistic", X[reached], y[reached], self.seed)
        return self

    def predict_uplift(self, X) -> np.ndarray:
        return self.upstream_.predict_uplift(X) * predict_probability(self.ratio_, X)

    def parts(self) -> dict:
        return {"upstream_kind": self.upstream_kind, "upstream": self.upstream_.parts(), "ratio": self.ratio_}

    @classmethod
    def from_parts(cls, layout: Layout, base: str, parts: dict) -> Funnel:
        obj = cls(layout, base, upstream_kind=str(parts["upstream_kind"]))
        obj.upstream_ = UPLIFT_CLASSES[obj.upstream_kind].from_parts(layout, base, parts["upstream"])
        obj.ratio_ = parts["ratio"]
        return obj


def nested(y: np.ndarray, upstream: np.ndarray) -> bool:
    """Whether the cases of ``y`` happen through ``upstream``: at least :data:`NESTED_SHARE` of them also have it."""
    y, upstream = np.asarray(y) > 0, np.asarray(upstream) > 0
    return bool(y.any()) and float(upstream[y].mean()) >= NESTED_SHARE



UPLIFT_CLASSES = {c.kind: c for c in (TLearner, XLearner, TransformedOutcome, Proportional, Solo, Interaction, Pooled, Funnel)}
#: Estimators whose first step is a T-learner's two group models (shared when fitted side by side).
USES_GROUPS = ("t_learner", "x_learner", "proportional")


def make_uplift(kind: str, layout: Layout, base: str, seed: int = 0):
    try:
        return UPLIFT_CLASSES[kind](layout, base, seed)
    except KeyError:
        raise ValueError(f"unknown uplift estimator {kind!r}; choose from {', '.join(UPLIFT_KINDS)}") from None


def rebuild(kind: str, layout: Layout, base: str, parts: dict):
    """An estimator of ``kind`` from the parts a model file stored."""
    if kind == Propensity.kind:
        return Propensity.from_parts(layout, base, parts)
    return UPLIFT_CLASSES[kind].from_parts(layout, base, parts)

@runtime_checkable
class UpliftEstimator(Protocol):
    """``P(outcome | sent, x) - P(outcome | not sent, x)`` from a randomized sample.

    Every estimator in :data:`UPLIFT_CLASSES` follows it: ``fit`` on the
    encoded features, 0/1 outcomes ``y`` and the 0/1 sent flag ``t``;
    ``predict_uplift`` per row; ``parts`` for the model file, from which
    ``from_parts(layout, base, parts)`` rebuilds it. Selection and training
    use nothing else, so a new estimator that follows this protocol and is
    registered in :data:`UPLIFT_CLASSES` becomes a candidate.
    """

    kind: str

    def fit(self, X: np.ndarray, y: np.ndarray, t: np.ndarray) -> UpliftEstimator:
        """Learn from the sends (``t == 1``) and hold-outs (``t == 0``)."""

    def predict_uplift(self, X: np.ndarray) -> np.ndarray:
        """The estimated effect of sending, per row (on the probability scale)."""

    def parts(self) -> dict:
        """The fitted scikit-learn objects and numbers to store."""
