"""SHARED_COMPLAINT (hard): the person behind the address reported our mail as spam under another customer id."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Rule, RuleFindings
from .shared_opt_out import under_whom

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class SharedComplaint(Rule):
    code = "SHARED_COMPLAINT"
    hard = True
    summary = "the same address reported our e-mail as spam under another customer id"
    columns = ("shared_complained", "address_shared")

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> RuleFindings:
        return RuleFindings(self.is_one(self.col(frame, message, "shared_complained")))

    def explain(self, logged) -> str:
        return f"the same address reported our e-mail as spam under {under_whom(logged, self.code)}"
