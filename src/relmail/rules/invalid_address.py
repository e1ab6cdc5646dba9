"""INVALID_ADDRESS (hard): the e-mail address is not a valid address."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Outcome, Rule

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class InvalidAddress(Rule):
    code = "INVALID_ADDRESS"
    hard = True
    summary = "the e-mail address is invalid"
    columns = ("email_valid",)

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> Outcome:
        return Outcome(self.col(frame, message, "email_valid") < 0.5)

    def explain(self, logged) -> str:
        return "the e-mail address is not a valid address"
