"""Uplift from a second-stage regression on a pseudo-outcome built of cross-fitted nuisance models.

* DR-learner (Kennedy): the doubly robust pseudo-outcome
  ``phi = mu1 - mu0 + t (y - mu1) / p - (1 - t) (y - mu0) / (1 - p)``,
  regressed on the features;
* R-learner (Nie & Wager): the outcome's residual on ``m(x) = E[y | x]``
  divided by the sent flag's residual on ``p``, regressed on the features
  with weights ``(t - p)^2``.

``p`` is the share sent: the assignment is random, so it is known and no
propensity model is fitted. The nuisance models (the two group models, or
``m``) are logistic regressions fitted on one half of the rows and
predicting the other (cross-fitting), so a row's own outcome never enters
the prediction it is compared with. The second stage is the base learner's
regression: on ``logistic`` a ridge regression on the preprocessed features
and their spline columns, its penalty chosen by leave-one-out
cross-validation (the pseudo-outcomes are noisy); on ``hgb`` shallow,
strongly regularized gradient-boosted trees.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import Pipeline

from .bases import Layout, fit_probability, predict_probability

#: Ridge penalties leave-one-out cross-validation chooses from (noisy targets need up to 10^6).
ALPHAS = tuple(np.logspace(0, 6, 13))


def second_stage(layout: Layout, base: str, seed: int) -> Pipeline:
    """The regression of a pseudo-outcome on the features (see the module's docstring)."""
    if base == "logistic":
        model = RidgeCV(alphas=ALPHAS)
    elif base == "hgb":
        # Shallower and more strongly regularized than the group models' trees:
        # a pseudo-outcome is a single noisy number per customer, not a 0/1 rate.
        model = HistGradientBoostingRegressor(
            max_iter=60, learning_rate=0.05, max_depth=2, min_samples_leaf=500, l2_regularization=10.0, random_state=seed
        )
    else:
        raise ValueError(f"unknown base learner {base!r}; choose from logistic, hgb")
    return Pipeline([("prep", layout.preprocessor(curves=base == "logistic")), ("model", model)])


def _share(t: np.ndarray, name: str) -> float:
    p = float(np.mean(t))
    if p in (0.0, 1.0):
        raise ValueError(f"the {name} needs both sends and hold-outs")
    return p


def _folds(n: int, seed: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """``(predicted, fitted)`` row masks: two random halves of ``n`` rows, each predicted by a model of the other."""
    half = np.random.default_rng(seed).random(n) < 0.5
    return (half, ~half), (~half, half)


class PseudoOutcome:
    """What the DR- and R-learner share: the known share sent, the second stage, the model file's parts."""

    kind = ""

    def __init__(self, layout: Layout, base: str = "logistic", seed: int = 0):
        self.layout, self.base, self.seed = layout, base, seed

    def _regress(self, X, target, weight=None) -> None:
        self.model_ = second_stage(self.layout, self.base, self.seed).fit(X, target, model__sample_weight=weight)

    def predict_uplift(self, X) -> np.ndarray:
        return self.model_.predict(X)

    def parts(self) -> dict:
        return {"model": self.model_, "share_treated": self.share_treated_}

    @classmethod
    def from_parts(cls, layout: Layout, base: str, parts: dict):
        obj = cls(layout, base)
        obj.model_, obj.share_treated_ = parts["model"], float(parts["share_treated"])
        return obj


class DRLearner(PseudoOutcome):
    """Kennedy's DR-learner: the doubly robust pseudo-outcome regressed on the features.

    ``E[phi | x]`` is the uplift whenever either the group models or the
    share sent is right, and the share sent is known. The group models
    ``mu1`` (sends) and ``mu0`` (hold-outs) are calibrated logistic
    regressions, cross-fitted on two halves of the rows.
    """

    kind = "dr_learner"

    def fit(self, X, y, t) -> DRLearner:
        t = np.asarray(t, dtype=float)
        y = np.asarray(y, dtype=float)
        p = self.share_treated_ = _share(t, "DR-learner")
        mu1, mu0 = np.zeros(len(y)), np.zeros(len(y))
        for part, rest in _folds(len(y), self.seed):
            sent, held = rest & (t == 1), rest & (t == 0)
            mu1[part] = predict_probability(fit_probability(self.layout, "logistic", X[sent], y[sent], self.seed), X[part])
            mu0[part] = predict_probability(fit_probability(self.layout, "logistic", X[held], y[held], self.seed), X[part])
        phi = mu1 - mu0 + t * (y - mu1) / p - (1 - t) * (y - mu0) / (1 - p)
        self._regress(X, phi)
        return self


class RLearner(PseudoOutcome):
    """Nie & Wager's R-learner: the effect that best explains the outcome's residual by the sent flag's.

    Minimizing ``sum ((y - m(x)) - (t - p) tau(x))^2`` over ``tau`` is a
    regression of ``(y - m) / (t - p)`` on the features with weights
    ``(t - p)^2``. ``m``, the chance of the outcome whether sent or not, is a
    calibrated logistic regression cross-fitted on two halves of the rows;
    taking it out of the outcome removes what the customer would have done
    anyway, the noise a transformed outcome leaves in.
    """

    kind = "r_learner"

    def fit(self, X, y, t) -> RLearner:
        t = np.asarray(t, dtype=float)
        y = np.asarray(y, dtype=float)
        p = self.share_treated_ = _share(t, "R-learner")
        m = np.zeros(len(y))
        for part, rest in _folds(len(y), self.seed):
            m[part] = predict_probability(fit_probability(self.layout, "logistic", X[rest], y[rest], self.seed), X[part])
        self._regress(X, (y - m) / (t - p), (t - p) ** 2)
        return self
