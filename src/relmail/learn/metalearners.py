"""Meta-learners: uplift from models of the outcome fitted per group or on a transformed target.

* T-learner: a calibrated classifier on sends and one on hold-outs; uplift
  is their difference;
* X-learner: the T-learner's imputed effects modelled per group;
* transformed outcome: one regression whose expectation is the uplift;
* proportional: the response model times the observed relative lift, which
  ranks like response-model targeting (the safe choice).

Each runs on either base learner (:data:`~relmail.learn.bases.BASES`).
"""

from __future__ import annotations

import numpy as np

from .bases import Layout, fit_probability, fit_regression, predict_probability, predict_value


class TLearner:
    """Two calibrated classifiers, one on sends and one on hold-outs; uplift is their difference."""

    kind = "t_learner"

    def __init__(self, layout: Layout, base: str = "logistic", seed: int = 0):
        self.layout, self.base, self.seed = layout, base, seed

    def fit(self, X, y, t, groups: TLearner | None = None) -> TLearner:
        """Fit both group models, or take them from ``groups``, a T-learner fitted on the same rows."""
        if groups is not None:
            self.treated_, self.control_ = groups.treated_, groups.control_
            return self
        t = np.asarray(t) == 1
        self.treated_ = fit_probability(self.layout, self.base, X[t], y[t], self.seed)
        self.control_ = fit_probability(self.layout, self.base, X[~t], y[~t], self.seed)
        return self

    def predict_treated(self, X) -> np.ndarray:
        return predict_probability(self.treated_, X)

    def predict_uplift(self, X) -> np.ndarray:
        return self.predict_treated(X) - predict_probability(self.control_, X)

    def parts(self) -> dict:
        return {"treated": self.treated_, "control": self.control_}

    @classmethod
    def from_parts(cls, layout: Layout, base: str, parts: dict) -> TLearner:
        obj = cls(layout, base)
        obj.treated_, obj.control_ = parts["treated"], parts["control"]
        return obj


class XLearner(TLearner):
    """Künzel et al.'s X-learner: T-learner first, then model the imputed effects.

    Each group's imputed effect (observed outcome against the other group's
    model) is regressed on the features; the two effect models are blended
    by the treated share ``g``: ``tau = g * tau_control + (1 - g) * tau_treated``,
    which leans on the effect model fitted on the larger group.
    """

    kind = "x_learner"

    def fit(self, X, y, t, groups: TLearner | None = None) -> XLearner:
        super().fit(X, y, t, groups)
        t = np.asarray(t) == 1
        y = np.asarray(y, dtype=float)
        d_treated = y[t] - predict_probability(self.control_, X[t])
        d_control = predict_probability(self.treated_, X[~t]) - y[~t]
        self.tau_treated_ = fit_regression(self.layout, self.base, X[t], d_treated, self.seed)
        self.tau_control_ = fit_regression(self.layout, self.base, X[~t], d_control, self.seed)
        self.share_treated_ = float(t.mean())
        return self

    def predict_uplift(self, X) -> np.ndarray:
        g = self.share_treated_
        return g * predict_value(self.tau_control_, X) + (1 - g) * predict_value(self.tau_treated_, X)

    def parts(self) -> dict:
        return {**super().parts(), "tau_treated": self.tau_treated_, "tau_control": self.tau_control_, "share_treated": self.share_treated_}

    @classmethod
    def from_parts(cls, layout: Layout, base: str, parts: dict) -> XLearner:
        obj = super().from_parts(layout, base, parts)
        obj.tau_treated_, obj.tau_control_ = parts["tau_treated"], parts["tau_control"]
        obj.share_treated_ = float(parts["share_treated"])
        return obj


class TransformedOutcome:
    """One regression on the transformed outcome ``Z = y (t - g) / (g (1 - g))``.

    With random assignment at rate ``g``, ``E[Z | x]`` is the uplift itself
    (the class-transformation idea of Jaskowski & Jaroszewicz, generalized to
    unequal groups), so a single model learns the effect directly.
    """

    kind = "transformed_outcome"

    def __init__(self, layout: Layout, base: str = "logistic", seed: int = 0):
        self.layout, self.base, self.seed = layout, base, seed

    def fit(self, X, y, t) -> TransformedOutcome:
        t = np.asarray(t, dtype=float)
        g = float(t.mean())
        if g in (0.0, 1.0):
            raise ValueError("transformed outcome needs both sends and hold-outs")
        z = np.asarray(y, dtype=float) * (t - g) / (g * (1 - g))
        self.model_ = fit_regression(self.layout, self.base, X, z, self.seed)
        self.share_treated_ = g
        return self

    def predict_uplift(self, X) -> np.ndarray:
        return predict_value(self.model_, X)

    def parts(self) -> dict:
        return {"model": self.model_, "share_treated": self.share_treated_}

    @classmethod
    def from_parts(cls, layout: Layout, base: str, parts: dict) -> TransformedOutcome:
        obj = cls(layout, base)
        obj.model_, obj.share_treated_ = parts["model"], float(parts["share_treated"])
        return obj


class Proportional:
    """Uplift proportional to the response: ``P(y | sent, x) * (1 - rate_holdout / rate_sent)``.

    The assumption that the mail multiplies everyone's chance by the same
    factor. It ranks exactly like response-model targeting, and its average
    equals the observed lift. When the effect does not vary in a learnable
    way (small data, a message that works alike for everyone), the
    heterogeneous estimators only add noise and this one wins selection, so
    relmail is never knowingly worse than response-model targeting.

    Its send model is the plain response model: a logistic regression sees
    numbers straight, without the spline the other linear estimators get.
    The fallback has to rank like response targeting, and on the design
    seeds of ``bench/uplift.py`` the curved send model ranked Hillstrom's
    Mens visits below the straight one.
    """

    kind = "proportional"

    def __init__(self, layout: Layout, base: str = "logistic", seed: int = 0):
        self.layout, self.base, self.seed = layout, base, seed

    def fit(self, X, y, t, groups: TLearner | None = None) -> Proportional:
        """Fit, or take the send model from ``groups`` (a T-learner fitted on the same rows) when it is the same model."""
        t = np.asarray(t) == 1
        y = np.asarray(y, dtype=float)
        straight = Layout(self.layout.n_numeric, self.layout.n_categorical)
        if groups is not None and (self.base != "logistic" or straight == self.layout):
            # Trees never bend by a spline: the T-learner's send model is this one.
            self.treated_ = groups.treated_
        else:
            self.treated_ = fit_probability(straight, self.base, X[t], y[t], self.seed)
        rate_t = float(y[t].mean()) if t.any() else 0.0
        rate_c = float(y[~t].mean()) if (~t).any() else 0.0
        self.relative_lift_ = 1.0 - rate_c / rate_t if rate_t > 0 else 0.0
        return self

    def predict_treated(self, X) -> np.ndarray:
        return predict_probability(self.treated_, X)

    def predict_uplift(self, X) -> np.ndarray:
        return self.predict_treated(X) * self.relative_lift_

    def parts(self) -> dict:
        return {"treated": self.treated_, "relative_lift": self.relative_lift_}

    @classmethod
    def from_parts(cls, layout: Layout, base: str, parts: dict) -> Proportional:
        obj = cls(layout, base)
        obj.treated_, obj.relative_lift_ = parts["treated"], float(parts["relative_lift"])
        return obj
