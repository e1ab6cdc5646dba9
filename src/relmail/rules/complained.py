"""COMPLAINED (hard): the customer reported our mail as spam."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Outcome, Rule, num, plural

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class Complained(Rule):
    code = "COMPLAINED"
    hard = True
    summary = "reported our e-mail as spam"
    columns = ("complained_ever", "complaints_90")

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> Outcome:
        return Outcome(self.is_one(self.col(frame, message, "complained_ever")))

    def explain(self, logged) -> str:
        recent = num(logged, "complaints_90")
        tail = f" ({plural(recent, 'complaint')} in the last 90 days)" if recent else ""
        return f"reported our e-mail as spam{tail}"
