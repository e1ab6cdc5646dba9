"""HARD_BOUNCE (hard): the address bounced permanently and nothing was delivered since."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Outcome, Rule

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class HardBounce(Rule):
    code = "HARD_BOUNCE"
    hard = True
    summary = "the address bounced permanently"
    columns = ("hard_bounced",)

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> Outcome:
        return Outcome(self.is_one(self.col(frame, message, "hard_bounced")))

    def explain(self, logged) -> str:
        return "the address hard-bounced, with no delivery, open or click since"
