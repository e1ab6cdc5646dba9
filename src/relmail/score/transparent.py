"""Relevance of a message to a customer, in [0, 1], with the contributions that make it up.

Until a trained model exists, :class:`TransparentScorer` computes a weighted
mean of five named components, each in [0, 1]:

``consent``
    topic preference fit: opted in 1.0, no stated preference 0.5.
``affinity``
    interest in the message's categories: ``1 - exp(-a / 2)`` of the
    time-decayed purchase/view score ``a`` (one recent purchase ≈ 0.78).
    Not applicable to a message without categories.
``usage``
    usage tips only: owns the product and does not use the feature yet
    (``1 / (1 + uses in 30 days)``); 0 for a customer without the product.
``engagement``
    how recently the customer opened an e-mail: ``exp(-days / 60)``;
    0.5 when nothing was sent in 90 days (no evidence), 0.1 when mail was
    sent but never opened.
``recency``
    how recently the customer bought: ``exp(-days / 180)``, 0.2 for never.
    For ``loyalty`` and ``service`` messages long silence counts too
    (``1 / (1 + sends in 30 days)``, the larger of the two), because a
    relevant relationship message is worth more after a quiet spell. Not
    applicable to new-customers-only offers (their audience has no history).

A component that is not applicable (NaN) drops out of the mean for that
row, so the weights of the others are renormalised. Contributions are
``weight × component / sum of applicable weights``: they add up to the score,
which is what ``relmail why`` shows.

A trained model plugs in through the :class:`Scorer` protocol: anything with
``columns(message)`` and ``score(frame, message) -> (scores, contributions)``.
:class:`BlendedScorer` mixes it with the transparent score
(``scoring.model_weight`` in the campaign; 1.0 replaces it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from ..features.columns import frame_key

if TYPE_CHECKING:
    from ..campaigns.model import Campaign, Message
    from ..features.frame import FeatureFrame

#: Default component weights; a campaign's ``scoring.weights`` overrides any of them.
DEFAULT_WEIGHTS = {"consent": 1.0, "affinity": 2.0, "usage": 2.0, "engagement": 1.0, "recency": 1.0}


@runtime_checkable
class Scorer(Protocol):
    """Scores one message for every row of a feature frame."""

    def columns(self, message: Message) -> tuple[str, ...]:
        """Feature columns the score reads (``k.`` = the message's own columns); they are logged."""

    def score(self, frame: FeatureFrame, message: Message) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(scores in [0, 1], named contributions), one value per frame row."""


def _col(frame, message, name: str) -> np.ndarray:
    return np.asarray(frame[frame_key(name, message.id)], dtype=np.float64)


class TransparentScorer:
    """The weighted, explainable score described in the module docstring."""

    def __init__(self, weights: dict[str, float] | None = None):
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}

    def columns(self, message: Message) -> tuple[str, ...]:
        cols = ["k.consent_topic", "days_since_open", "sends_90", "recency_days"]
        if message.categories or message.products:
            cols.append("k.category_affinity")
        if message.offer == "usage-tip":
            cols += ["k.owns_product", "k.feature_usage_30"]
        if message.offer in ("loyalty", "service"):
            cols.append("sends_30")
        return tuple(cols)

    def components(self, frame: FeatureFrame, message: Message) -> dict[str, np.ndarray]:
        """Each component in [0, 1] per row, NaN where it does not apply."""
        n = len(frame)
        nan = np.full(n, np.nan)
        consent = _col(frame, message, "k.consent_topic")
        out = {"consent": np.where(np.isnan(consent), 0.5, np.clip(consent, 0.0, 1.0))}

        if message.categories or message.products:
            a = np.nan_to_num(_col(frame, message, "k.category_affinity"), nan=0.0)
            out["affinity"] = 1.0 - np.exp(-np.maximum(a, 0.0) / 2.0)
        else:
            out["affinity"] = nan

        if message.offer == "usage-tip":
            owns = np.nan_to_num(_col(frame, message, "k.owns_product"), nan=0.0) > 0
            uses = np.maximum(np.nan_to_num(_col(frame, message, "k.feature_usage_30"), nan=0.0), 0.0)
            out["usage"] = np.where(owns, 1.0 / (1.0 + uses), 0.0)
        else:
            out["usage"] = nan

        opened = _col(frame, message, "days_since_open")
        sent = np.nan_to_num(_col(frame, message, "sends_90"), nan=0.0)
        out["engagement"] = np.where(
            np.isnan(opened), np.where(sent > 0, 0.1, 0.5), np.exp(-np.maximum(opened, 0.0) / 60.0)
        )

        if message.offer == "new-customers-only":
            out["recency"] = nan
        else:
            bought = _col(frame, message, "recency_days")
            rec = np.where(np.isnan(bought), 0.2, np.exp(-np.maximum(bought, 0.0) / 180.0))
            if message.offer in ("loyalty", "service"):
                silence = 1.0 / (1.0 + np.maximum(np.nan_to_num(_col(frame, message, "sends_30"), nan=0.0), 0.0))
                rec = np.maximum(rec, silence)
            out["recency"] = rec
        return out

    def score(self, frame: FeatureFrame, message: Message) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        comps = self.components(frame, message)
        n = len(frame)
        total_w = np.zeros(n)
        for name, c in comps.items():
            total_w += np.where(np.isnan(c), 0.0, self.weights.get(name, 0.0))
        safe = np.where(total_w > 0, total_w, 1.0)
        contributions = {
            name: np.where(np.isnan(c), 0.0, self.weights.get(name, 0.0) * np.nan_to_num(c) / safe)
            for name, c in comps.items()
            if self.weights.get(name, 0.0) > 0
        }
        score = np.zeros(n)
        for c in contributions.values():
            score += c
        return np.clip(score, 0.0, 1.0), contributions


class BlendedScorer:
    """``(1 - w) × base + w × model``; contributions of both, scaled the same way."""

    def __init__(self, base: Scorer, model: Scorer, model_weight: float):
        if not 0.0 <= model_weight <= 1.0:
            raise ValueError("model_weight must be in [0, 1]")
        self.base, self.model, self.w = base, model, float(model_weight)

    def columns(self, message: Message) -> tuple[str, ...]:
        cols = list(self.base.columns(message)) if self.w < 1 else []
        return tuple(dict.fromkeys(cols + list(self.model.columns(message))))

    def score(self, frame: FeatureFrame, message: Message) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        m_score, m_contrib = self.model.score(frame, message)
        m_score = np.clip(np.asarray(m_score, dtype=np.float64), 0.0, 1.0)
        model_part = {f"model.{k}": self.w * np.asarray(v) for k, v in m_contrib.items()} or {"model": self.w * m_score}
        if self.w >= 1.0:
            return m_score, model_part
        b_score, b_contrib = self.base.score(frame, message)
        contributions = {k: (1.0 - self.w) * v for k, v in b_contrib.items()}
        contributions.update(model_part)
        return np.clip((1.0 - self.w) * b_score + self.w * m_score, 0.0, 1.0), contributions


def make_scorer(campaign: Campaign, model: Scorer | None = None) -> Scorer:
    """The campaign's scorer: transparent, or blended with ``model`` by ``scoring.model_weight``."""
    base = TransparentScorer(campaign.scoring.weights)
    if model is None or campaign.scoring.model_weight <= 0:
        return base
    return BlendedScorer(base, model, campaign.scoring.model_weight)
