"""A trained model for one message, as the plan and ``why`` use it.

:func:`load_model` returns ``None`` when no model was trained (the plan then
keeps its transparent score) and raises :class:`~relmail.errors.ModelError`
when a model exists but cannot be trusted. Inputs are feature dicts, one
array per feature name (the plan's bulk form), or an already encoded 2D
float array in :attr:`TrainedModel.columns` order; outputs are NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import store
from .bases import predict_probability
from .dataset import FeatureSpec
from .estimators import UNIFORM_SIGN, UPSTREAM, rebuild

if TYPE_CHECKING:
    from ..project import Project

#: Preferred order for the outcome ``predict`` reports when none is named.
PRIMARY_ORDER = ("conversion", "click", "visit", "open")


@dataclass
class TrainedModel:
    """Propensity, uplift and irritation models of one message, with their sidecar."""

    meta: dict
    spec: FeatureSpec
    propensity: dict[str, Any]
    uplift: dict[str, Any]
    irritation: Any
    #: Per outcome, ``(slope, intercept)`` from validation: calibrated uplift = intercept + slope × raw.
    uplift_calibration: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def version(self) -> int:
        return int(self.meta["version"])

    @property
    def columns(self) -> list[str]:
        return self.spec.columns

    @property
    def outcomes(self) -> list[str]:
        return list(self.propensity)

    def primary_outcome(self, wanted: str | None = None) -> str:
        """``wanted`` if trained, else the first trained of conversion, click, visit, open."""
        if wanted:
            if wanted not in self.propensity:
                raise KeyError(f"model '{self.key}' has no '{wanted}' outcome (trained: {', '.join(self.outcomes)})")
            return wanted
        for name in (self.meta.get("primary_outcome"), *PRIMARY_ORDER):
            if name in self.propensity:
                return name
        raise KeyError(f"model '{self.key}' has no positive outcome")

    def _only_outcome(self) -> str:
        primary = self.meta.get("primary_outcome")
        if primary in self.propensity:
            return primary
        if len(self.propensity) == 1:
            return self.outcomes[0]
        raise ValueError(f"model '{self.key}' learned {', '.join(self.outcomes)}: name the outcome, "
                         f"e.g. predict(features, outcome={self.outcomes[0]!r})")

    def encode(self, features) -> np.ndarray:
        """A float matrix from feature columns (mapping), feature dicts (list) or a matrix."""
        if isinstance(features, Mapping):
            return self.spec.encode_columns(features)
        if isinstance(features, np.ndarray) and features.ndim == 2 and features.dtype.kind == "f":
            if features.shape[1] != len(self.columns):
                raise ValueError(f"expected {len(self.columns)} columns ({', '.join(self.columns)}), got {features.shape[1]}")
            return features
        return self.spec.encode(list(features))

    def predict(self, features, outcome: str | None = None) -> dict[str, np.ndarray]:
        """``p_positive_sent``, ``uplift`` and ``p_irritation`` per row, for ``outcome``.

        ``outcome`` may be left out only when it is unambiguous: the model
        learned one outcome, or training named a primary one (``[model]
        primary_outcome``); otherwise :class:`ValueError` names the choices,
        rather than quietly answering for an outcome the caller did not ask
        about. ``uplift`` is NaN when the model had no hold-outs to learn
        it from: the plan must then not suppress for negative uplift.
        """
        X = self.encode(features)
        name = self.primary_outcome(outcome) if outcome else self._only_outcome()
        if not len(X):
            # scikit-learn refuses zero rows; a plan or a preview may have none (a customer not in the store).
            return {key: np.empty(0) for key in ("p_positive_sent", "uplift", "p_irritation")}
        up = self.uplift.get(name)
        return {
            "p_positive_sent": np.clip(self.propensity[name].predict(X), 0.0, 1.0),
            "uplift": self._calibrated(name, up.predict_uplift(X)) if up is not None else np.full(len(X), np.nan),
            "p_irritation": np.clip(predict_probability(self.irritation, X), 0.0, 1.0),
        }

    def uplift_unfounded(self, outcome: str) -> str | None:
        """Why this model's uplift for ``outcome`` must not hold anyone back, or None when it may.

        A model that ranks customers apart had to beat the safe one by more
        than the noise to be chosen; the safe one (and the solo model) gives
        every customer the sign of the training customers' lift, so when that
        lift cannot be told from zero, neither can any customer's sign: a
        negative prediction would suppress the whole audience on chance. A
        funnel has the sign of the upstream model it multiplies. Models saved
        without the training lift say nothing (None).
        """
        outcomes = self.meta.get("estimators", {}).get("outcomes", {})
        info = (outcomes.get(outcome) or {}).get("uplift") or {}
        name = outcome
        if info.get("kind") == "funnel":
            name = UPSTREAM.get(outcome, outcome)
            info = (outcomes.get(name) or {}).get("uplift") or {}
        if info.get("kind") not in UNIFORM_SIGN or "lift_interval" not in info:
            return None
        low, high = info["lift_interval"]
        if not low <= 0.0 <= high:
            return None
        rows = self.meta.get("training", {}).get("rows")
        on = f"on its {rows:,} training rows " if rows else ""
        return (f"{on}the e-mail's {name} lift is {info['lift']:+.4f} (95% CI [{low:+.4f}, {high:+.4f}]), which cannot be "
                f"told from zero, and its {info['kind']}/{info.get('base')} uplift gives every customer the sign of that lift")

    def _calibrated(self, outcome: str, raw: np.ndarray) -> np.ndarray:
        # Models trained before calibration existed have none: identity.
        slope, intercept = self.uplift_calibration.get(outcome, (1.0, 0.0))
        return intercept + slope * raw

    @property
    def value_per_conversion(self) -> float | None:
        """Mean purchase value of converted sends in the training data."""
        return self.meta.get("training", {}).get("value_per_conversion")

    def contributions(self, features, outcome: str | None = None, target: str = "uplift") -> dict:
        """Per-feature contributions to ``target`` (``uplift``, ``p_positive_sent`` or ``p_irritation``).

        The same method for every estimator (linear or trees): a feature's
        contribution is how much the prediction changes when that feature
        alone is set back to its training baseline (median number, most
        common category). For a linear model on standardized inputs this is
        exactly coefficient × (value − baseline) on the logit or effect scale;
        for trees it is a one-at-a-time approximation that ignores
        interactions, stated as such in ``why``. Returns ``columns``, a
        ``values`` array (rows × features) and the ``prediction``.
        """
        X = self.encode(features)
        base = self.predict(X, outcome)[target]
        baseline = np.asarray(self.meta["baseline"], dtype=float)
        values = np.zeros_like(X)
        for j in range(X.shape[1]):
            moved = X.copy()
            moved[:, j] = baseline[j]
            values[:, j] = base - self.predict(moved, outcome)[target]
        return {"columns": list(self.columns), "values": values, "prediction": base}

    def explain(self, features: Mapping[str, Any], outcome: str | None = None, top: int = 5) -> list[dict]:
        """The ``top`` features behind one customer's uplift, largest effect first (for ``why``)."""
        X = self.encode([features])
        contrib = self.contributions(X, outcome)
        order = np.argsort(-np.abs(contrib["values"][0]), kind="stable")[:top]
        return [
            {"feature": self.columns[j], "value": self.spec.decode_value(j, X[0, j]), "contribution": float(contrib["values"][0, j])}
            for j in order
            if contrib["values"][0, j] != 0.0
        ]


def from_payload(meta: dict, payload: dict) -> TrainedModel:
    spec = FeatureSpec.from_dict(meta["spec"])
    layout = spec.layout
    est = meta["estimators"]
    propensity, uplift, calibration = {}, {}, {}
    for name, parts in payload["outcomes"].items():
        info = est["outcomes"][name]
        propensity[name] = rebuild("propensity", layout, info["propensity"]["base"], parts["propensity"])
        if parts.get("uplift") is not None:
            uplift[name] = rebuild(info["uplift"]["kind"], layout, info["uplift"]["base"], parts["uplift"])
            cal = info["uplift"].get("calibration")
            if cal:
                calibration[name] = (float(cal["slope"]), float(cal["intercept"]))
    return TrainedModel(
        meta=meta, spec=spec, propensity=propensity, uplift=uplift, irritation=payload["irritation"], uplift_calibration=calibration
    )


def load_model(project: Project, key: str, version: int | None = None) -> TrainedModel | None:
    """The newest (or given) version of the model for message ``key``, or None if none was trained.

    Raises :class:`~relmail.errors.ModelError` when the file was changed
    after training or contains a type outside the allow-list.
    """
    root = store.models_dir(project)
    meta = store.read_meta(root, key, version)
    if meta is None:
        return None
    return from_payload(meta, store.load_payload(root, meta))


def load_models(project: Project, keys: Sequence[str]) -> dict[str, TrainedModel]:
    """Every model among ``keys`` that exists (the plan's bulk form)."""
    out = {}
    for key in keys:
        model = load_model(project, key)
        if model is not None:
            out[key] = model
    return out
