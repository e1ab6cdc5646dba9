"""The base learners every estimator is built from: the encoded features' layout and scikit-learn pipelines.

Every model works on the float matrix :class:`~relmail.learn.dataset.FeatureSpec`
encodes (numeric columns, then category codes), so one preprocessing
pipeline (impute + scale numbers, one-hot the codes, a spline for the
many-valued numbers of linear models) serves all of them, on two base
learners: logistic regression and gradient boosting. Propensity,
``P(outcome | sent)``, is a calibrated classifier on sends only; so is
irritation, ``P(unsubscribe or complaint | sent)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, SplineTransformer, StandardScaler

BASES = ("logistic", "hgb")
#: Fewer positives than this in a group and a classifier is not trained:
#: the group's observed rate is used instead (calibration needs both classes
#: in every fold).
MIN_POSITIVES = 10


#: A numeric column with more distinct values than this gets a spline basis in linear models.
CURVE_MIN_VALUES = 6
#: Columns a curved column's spline adds (4 knots, degree 2).
CURVE_COLUMNS = 5
#: Curves only when the rarer class has this many cases per encoded column
#: (Peduzzi et al.'s events-per-variable rule for logistic regression).
EVENTS_PER_COLUMN = 10


@dataclass(frozen=True)
class Layout:
    """Which encoded columns are numeric and which are category codes.

    ``curved`` lists the numeric columns (by index) with enough distinct
    values to bend: linear models see them through a spline basis as well
    as linearly (see :meth:`preprocessor`).
    """

    n_numeric: int
    n_categorical: int
    curved: tuple[int, ...] = ()

    @classmethod
    def of(cls, X: np.ndarray, n_numeric: int, n_categorical: int, y: np.ndarray | None = None) -> Layout:
        """The layout of a training matrix, with its curved columns found from the data.

        A numeric column bends when it has more than :data:`CURVE_MIN_VALUES`
        distinct values, and only when outcome ``y`` (if given) has enough
        cases to pay for the extra columns: a rare outcome (a conversion
        among a few thousand sends) gets straight lines, which it can
        estimate, rather than curves, which it would fit to noise.
        """
        curved = []
        for j in range(n_numeric):
            col = X[:, j]
            if len(np.unique(col[np.isfinite(col)])) > CURVE_MIN_VALUES:
                curved.append(j)
        if curved and y is not None:
            positives = int(np.sum(np.asarray(y) > 0))
            events = min(positives, len(y) - positives)
            categories = sum(len(np.unique(X[:, j])) for j in range(n_numeric, n_numeric + n_categorical))
            width = n_numeric + categories + CURVE_COLUMNS * len(curved)
            if events < EVENTS_PER_COLUMN * width:
                curved = []
        return cls(n_numeric, n_categorical, tuple(curved))

    def preprocessor(self, curves: bool = False) -> ColumnTransformer:
        """Impute + scale numbers, one-hot the category codes.

        With ``curves`` (linear models), the :attr:`curved` columns also get
        a quadratic spline basis (4 evenly spaced knots, flat beyond them):
        a logistic regression is otherwise forced to treat recency or
        spend as straight lines on the logit scale, and cross-validation on
        Hillstrom preferred the curved interaction model on 5 of 5 splits.
        Trees bend by themselves and never get it.
        """
        num = list(range(self.n_numeric))
        cat = list(range(self.n_numeric, self.n_numeric + self.n_categorical))
        steps = []
        if num:
            # A feature no training row has a value for (a frequency wish no customer
            # stated) stays a column of zeros, which no model can use: dropping it
            # instead makes scikit-learn warn on every fit of every candidate.
            impute = SimpleImputer(strategy="median", keep_empty_features=True)
            steps.append(("num", Pipeline([("impute", impute), ("scale", StandardScaler())]), num))
        if cat:
            steps.append(("cat", OneHotEncoder(handle_unknown="ignore"), cat))
        if curves and self.curved:
            spline = SplineTransformer(n_knots=CURVE_COLUMNS - 1, degree=2, extrapolation="constant")
            steps.append(
                ("curve", Pipeline([("impute", SimpleImputer(strategy="median")), ("spline", spline), ("scale", StandardScaler())]),
                 list(self.curved))
            )
        # Always dense: with several category features the one-hot share of the
        # matrix falls below ColumnTransformer's sparse threshold, and gradient
        # boosting refuses sparse input (store, zip and channel codes did it).
        return ColumnTransformer(steps, remainder="drop", sparse_threshold=0.0)


def classifier(layout: Layout, base: str, seed: int = 0) -> Pipeline:
    if base == "logistic":
        model = LogisticRegression(C=1.0, max_iter=2000)
    elif base == "hgb":
        # Shallow, strongly regularized trees: uplift signals are small
        # differences of noisy rates, and deep trees chase the noise.
        model = HistGradientBoostingClassifier(
            max_iter=80, learning_rate=0.05, max_depth=3, min_samples_leaf=200, l2_regularization=1.0, random_state=seed
        )
    else:
        raise ValueError(f"unknown base learner {base!r}; choose from {', '.join(BASES)}")
    return Pipeline([("prep", layout.preprocessor(curves=base == "logistic")), ("model", model)])


def regressor(layout: Layout, base: str, seed: int = 0) -> Pipeline:
    if base == "logistic":
        model = Ridge(alpha=1.0)
    elif base == "hgb":
        model = HistGradientBoostingRegressor(
            max_iter=80, learning_rate=0.05, max_depth=3, min_samples_leaf=200, l2_regularization=1.0, random_state=seed
        )
    else:
        raise ValueError(f"unknown base learner {base!r}; choose from {', '.join(BASES)}")
    return Pipeline([("prep", layout.preprocessor(curves=base == "logistic")), ("model", model)])


def fit_probability(layout: Layout, base: str, X: np.ndarray, y: np.ndarray, seed: int = 0):
    """A calibrated ``P(y = 1 | x)``, or the observed rate (a float) when data is too thin.

    Platt (sigmoid) calibration on 3 folds: it keeps the ranking inside the
    model smooth, where isotonic steps would create ties in uplift ranks.
    """
    y = np.asarray(y, dtype=int)
    positives = int(y.sum())
    if len(y) == 0:
        return 0.0
    if positives < MIN_POSITIVES or len(y) - positives < MIN_POSITIVES:
        return float(y.mean())
    model = CalibratedClassifierCV(classifier(layout, base, seed), method="sigmoid", cv=3)
    return model.fit(X, y)


def predict_probability(part, X: np.ndarray) -> np.ndarray:
    """Probabilities from a part made by :func:`fit_probability`."""
    if isinstance(part, float):
        return np.full(len(X), part)
    return part.predict_proba(X)[:, 1]


def predict_value(part, X: np.ndarray) -> np.ndarray:
    """Values from a regression part made by :func:`fit_regression`."""
    if isinstance(part, float):
        return np.full(len(X), part)
    return part.predict(X)


def fit_regression(layout: Layout, base: str, X: np.ndarray, target: np.ndarray, seed: int):
    """A regression of ``target`` on ``X``, or the mean (a float) when there are too few rows."""
    if len(target) < 2 * MIN_POSITIVES:
        return float(target.mean()) if len(target) else 0.0
    return regressor(layout, base, seed).fit(X, target)


class Propensity:
    """``P(outcome | sent)``, fitted on sends only."""

    kind = "propensity"

    def __init__(self, layout: Layout, base: str = "logistic", seed: int = 0):
        self.layout, self.base, self.seed = layout, base, seed

    def fit(self, X, y, t=None) -> Propensity:
        if t is not None:
            X, y = X[np.asarray(t) == 1], np.asarray(y)[np.asarray(t) == 1]
        self.model_ = fit_probability(self.layout, self.base, X, y, self.seed)
        return self

    def predict(self, X) -> np.ndarray:
        return predict_probability(self.model_, X)

    def parts(self) -> dict:
        return {"model": self.model_}

    @classmethod
    def from_parts(cls, layout: Layout, base: str, parts: dict) -> Propensity:
        obj = cls(layout, base)
        obj.model_ = parts["model"]
        return obj


def flag(value, n: int) -> np.ndarray:
    """A 0/1 flag (one number or one per row) as an ``n × 1`` column."""
    return np.broadcast_to(np.asarray(value, dtype=float).reshape(-1, 1), (n, 1))



@runtime_checkable
class ProbabilityModel(Protocol):
    """``P(outcome = 1 | x)`` from rows of the encoded feature matrix (propensity and irritation)."""

    kind: str

    def fit(self, X: np.ndarray, y: np.ndarray, t: np.ndarray | None = None) -> ProbabilityModel:
        """Learn from ``X`` and 0/1 outcomes ``y`` (only the rows with ``t == 1`` when ``t`` is given)."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        """A probability per row."""

    def parts(self) -> dict:
        """The fitted scikit-learn objects and numbers to store (rebuilt by ``from_parts``)."""
