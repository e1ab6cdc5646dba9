"""LOW_RELEVANCE: the relevance score is below the campaign's threshold."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Outcome, Rule, num

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class LowRelevance(Rule):
    code = "LOW_RELEVANCE"
    summary = "relevance below the threshold"
    columns = ("k.score",)

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> Outcome:
        score = self.col(frame, message, "k.score")
        return Outcome(~(score >= policy.min_relevance), {"min_relevance": float(policy.min_relevance)})

    def explain(self, logged) -> str:
        return f"relevance {num(logged, 'score'):.2f} is below the threshold {num(logged, 'min_relevance'):.2f}"
