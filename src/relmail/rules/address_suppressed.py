"""ADDRESS_SUPPRESSED (hard): the address is on the suppression list (erased or blocked)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Outcome, Rule

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class AddressSuppressed(Rule):
    code = "ADDRESS_SUPPRESSED"
    hard = True
    summary = "the address is on the suppression list"
    columns = ("address_suppressed",)

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> Outcome:
        return Outcome(self.is_one(self.col(frame, message, "address_suppressed")))

    def explain(self, logged) -> str:
        return "the address is on the suppression list (erased on request or blocked)"
