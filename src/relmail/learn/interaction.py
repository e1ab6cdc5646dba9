"""Uplift from one logistic regression on the features and the sent flag: the interaction model and its kin.

* interaction: baseline, sent flag and sent × features, the effect terms
  shrunk hard (Lo's model);
* solo: baseline and the sent flag only (ranks like a response model);
* pooled: the interaction model also fitted on the sends of the campaign's
  other messages.
"""

from __future__ import annotations

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression

from .bases import MIN_POSITIVES, Layout, flag


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
        t = flag(t, len(Z))
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
        return np.hstack([Z, flag(t, len(Z))])

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
        t = flag(t, len(Z))
        e = t if email is None else flag(email, len(Z))
        return np.hstack([Z, e, self.scale_ * Z * e, t, self.scale_ * Z * t])

    def fit(self, X, y, t, siblings: tuple[np.ndarray, np.ndarray] | None = None) -> Pooled:
        """Fit on this message's rows and, when given, ``siblings = (X, y)`` of other messages' sends."""
        if siblings is None or len(siblings[0]) == 0:
            return self._fit(X, y, t, t)
        t = np.asarray(t, dtype=float)
        n = len(siblings[1])
        return self._fit(np.vstack([X, siblings[0]]), np.concatenate([np.asarray(y), siblings[1]]),
                         np.concatenate([t, np.zeros(n)]), np.concatenate([t, np.ones(n)]))
