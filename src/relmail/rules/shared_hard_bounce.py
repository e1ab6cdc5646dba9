"""SHARED_HARD_BOUNCE (hard): the address hard-bounced under another customer id, nothing reached it since."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Rule, RuleFindings
from .shared_opt_out import under_whom

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class SharedHardBounce(Rule):
    code = "SHARED_HARD_BOUNCE"
    hard = True
    summary = "the same address bounced permanently under another customer id"
    columns = ("shared_hard_bounced", "address_shared")

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> RuleFindings:
        return RuleFindings(self.is_one(self.col(frame, message, "shared_hard_bounced")))

    def explain(self, logged) -> str:
        return (f"the same address hard-bounced under {under_whom(logged, self.code)}, with no delivery, open or click "
                "to it since under any customer id")
