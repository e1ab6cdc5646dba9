"""The estimators relmail trains, built from scikit-learn parts.

Every model works on the float matrix :class:`~relmail.learn.dataset.FeatureSpec`
encodes (numeric columns, then category codes), so one preprocessing
pipeline (impute + scale numbers, one-hot the codes) serves all of them.

* propensity: ``P(outcome | sent)``, a calibrated classifier on sends only;
* uplift: ``P(outcome | sent) - P(outcome | not sent)`` from sends and
  hold-outs, by six estimators (T-learner, X-learner, transformed outcome,
  a proportional-effect model that ranks like the response model, each on
  two base learners: logistic regression and gradient boosting; an
  interaction logistic regression whose effect terms are shrunk hard; and
  the same interaction model pooled with the sends of the other messages);
* the funnel model of an outcome reached through another (a purchase after
  a visit): the upstream outcome's uplift times ``P(outcome | upstream, x)``;
* irritation: ``P(unsubscribe or complaint | sent)``, a calibrated classifier.

Each estimator can list its fitted scikit-learn ``parts()`` and be rebuilt
from them (``from_parts``): only those parts are written to disk, so a
model file never has to trust relmail's own classes when it is loaded.
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
#: The share of an outcome's cases that must also have its upstream outcome for the funnel to apply.
NESTED_SHARE = 0.95
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


def _predict_value(part, X: np.ndarray) -> np.ndarray:
    if isinstance(part, float):
        return np.full(len(X), part)
    return part.predict(X)


def _fit_regression(layout: Layout, base: str, X: np.ndarray, target: np.ndarray, seed: int):
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
        self.tau_treated_ = _fit_regression(self.layout, self.base, X[t], d_treated, self.seed)
        self.tau_control_ = _fit_regression(self.layout, self.base, X[~t], d_control, self.seed)
        self.share_treated_ = float(t.mean())
        return self

    def predict_uplift(self, X) -> np.ndarray:
        g = self.share_treated_
        return g * _predict_value(self.tau_control_, X) + (1 - g) * _predict_value(self.tau_treated_, X)

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
        self.model_ = _fit_regression(self.layout, self.base, X, z, self.seed)
        self.share_treated_ = g
        return self

    def predict_uplift(self, X) -> np.ndarray:
        return _predict_value(self.model_, X)

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


class Interaction:
    """One logistic regression on the features, the sent flag and sent × features (Lo's model).

    ``P(y | x, t) = sigmoid(a·x + b·t + t·(c·x))``: the customer's baseline
    (``a``) is learned from sends and hold-outs together, and the effect
    terms (``b``, ``c``) only have to explain the difference. The ``c``
    columns are multiplied by :attr:`EFFECT_SCALE` before the (L2) fit,
    which penalizes them ``1 / EFFECT_SCALE**2`` times more than the
    baseline: an effect that varies must earn its variation, which is what
    keeps noisy segments from being ranked first. Uplift is the difference
    of the two predicted probabilities, so its scale is comparable across
    messages (the plan ranks messages by it).
    """

    kind = "interaction"
    #: Effect-term columns are scaled by this (0.1: 100x the baseline's L2 penalty).
    EFFECT_SCALE = 0.1

    def __init__(self, layout: Layout, base: str = "logistic", seed: int = 0):
        if base != "logistic":
            raise ValueError(f"the {self.kind} estimator runs on logistic regression only, not {base!r}")
        self.layout, self.base, self.seed = layout, base, seed

    def _basis(self, X) -> np.ndarray:
        """The preprocessed features as a dense matrix: the baseline's columns."""
        Z = self.prep_.transform(X)
        return Z.toarray() if hasattr(Z, "toarray") else np.asarray(Z, dtype=float)

    def _design(self, X, t, email=None) -> np.ndarray:
        """Baseline, sent flag, sent × features. (``email`` is the pooled model's flag; here it is ``t`` itself.)"""
        Z = self._basis(X)
        t = _flag(t, len(Z))
        return np.hstack([Z, t, self.scale_ * Z * t])

    def fit(self, X, y, t) -> Interaction:
        return self._fit(X, y, t, t)

    def _fit(self, X, y, t, email) -> Interaction:
        """Fit on design rows: ``t`` "got this message", ``email`` "got an e-mail of the campaign".

        The message's own rows have ``email == t``; the pooled model's
        sibling sends (``email = 1, t = 0``) only add to the fit, never to
        the lift used when the data is too thin.
        """
        t = np.asarray(t, dtype=float)
        email = np.asarray(email, dtype=float)
        y = np.asarray(y, dtype=int)
        self.scale_ = self.EFFECT_SCALE
        self.prep_ = self._preprocessor().fit(X)
        positives = int(y.sum())
        own = email == t
        sent, held = own & (t == 1), own & (t == 0)
        if min(positives, len(y) - positives) < MIN_POSITIVES or not sent.any() or not held.any():
            # Too thin to fit: everyone gets the observed lift (ranks like random).
            self.model_ = float(y[sent].mean() - y[held].mean()) if sent.any() and held.any() else 0.0
            return self
        self.model_ = LogisticRegression(C=1.0, max_iter=2000).fit(self._design(X, t, email), y)
        return self

    def _preprocessor(self) -> ColumnTransformer:
        return self.layout.preprocessor(curves=True)

    def predict_sent(self, X, sent: bool) -> np.ndarray:
        """``P(outcome | x, sent)`` or ``P(outcome | x, not sent)``."""
        return self.model_.predict_proba(self._design(X, 1.0 if sent else 0.0))[:, 1]

    def predict_uplift(self, X) -> np.ndarray:
        if isinstance(self.model_, float):
            return np.full(len(X), self.model_)
        return self.predict_sent(X, True) - self.predict_sent(X, False)

    def parts(self) -> dict:
        return {"prep": self.prep_, "model": self.model_, "scale": self.scale_}

    @classmethod
    def from_parts(cls, layout: Layout, base: str, parts: dict) -> Interaction:
        obj = cls(layout, base)
        obj.prep_, obj.model_, obj.scale_ = parts["prep"], parts["model"], float(parts["scale"])
        return obj


class Solo(Interaction):
    """One logistic regression on the features and the sent flag, fitted on sends and hold-outs together.

    ``P(y | x, t) = sigmoid(a·x + b·t)``: the mail shifts every customer's
    log-odds by the same ``b``, so the uplift ``sigmoid(a·x + b) - sigmoid(a·x)``
    ranks (where the chance with the mail is below one half) like a response model, as
    the proportional model does, but the baseline ``a`` is learned from the
    hold-outs as well as the sends: half as many rows again when a third
    of the customers are held out. Like the proportional model it sees
    numbers straight, without the spline; it is the response-like model
    whose uplift is on the probability scale by construction.
    """

    kind = "solo"

    def _design(self, X, t, email=None) -> np.ndarray:
        Z = self._basis(X)
        return np.hstack([Z, _flag(t, len(Z))])

    def _preprocessor(self) -> ColumnTransformer:
        return self.layout.preprocessor(curves=False)


class Pooled(Interaction):
    """The interaction model, also fitted on the sends of the other messages.

    ``P(y | x) = sigmoid(a·x + e·(b + c·x) + t·(b' + c'·x))``, where ``e``
    is "got an e-mail of this campaign" and ``t`` "got this message". The
    ``siblings`` are sends of other messages to customers who have no
    decision for this one in that run: for them ``e = 1``, ``t = 0``. So the
    part of the effect that every message shares (who reacts to e-mail at
    all) is learned from all sends, and this message's own terms, shrunk
    as hard as the shared ones, only say how it differs: the message is a
    feature of the model rather than a separate data set. The uplift of
    this message is ``P(e = t = 1) - P(e = t = 0)``, as for the interaction
    model. Selection keeps it only where cross-validation on this message's
    own sends and hold-outs says it ranks better.
    """

    kind = "pooled"

    def _design(self, X, t, email=None) -> np.ndarray:
        Z = self._basis(X)
        t = _flag(t, len(Z))
        e = t if email is None else _flag(email, len(Z))
        return np.hstack([Z, e, self.scale_ * Z * e, t, self.scale_ * Z * t])

    def fit(self, X, y, t, siblings: tuple[np.ndarray, np.ndarray] | None = None) -> Pooled:
        """Fit on this message's rows and, when given, ``siblings = (X, y)`` of other messages' sends."""
        if siblings is None or len(siblings[0]) == 0:
            return self._fit(X, y, t, t)
        t = np.asarray(t, dtype=float)
        n = len(siblings[1])
        return self._fit(np.vstack([X, siblings[0]]), np.concatenate([np.asarray(y), siblings[1]]),
                         np.concatenate([t, np.zeros(n)]), np.concatenate([t, np.ones(n)]))


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


def _flag(value, n: int) -> np.ndarray:
    """A 0/1 flag (one number or one per row) as an ``n × 1`` column."""
    return np.broadcast_to(np.asarray(value, dtype=float).reshape(-1, 1), (n, 1))


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
class ProbabilityModel(Protocol):
    """``P(outcome = 1 | x)`` from rows of the encoded feature matrix (propensity and irritation)."""

    kind: str

    def fit(self, X: np.ndarray, y: np.ndarray, t: np.ndarray | None = None) -> ProbabilityModel:
        """Learn from ``X`` and 0/1 outcomes ``y`` (only the rows with ``t == 1`` when ``t`` is given)."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        """A probability per row."""

    def parts(self) -> dict:
        """The fitted scikit-learn objects and numbers to store (rebuilt by ``from_parts``)."""


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
