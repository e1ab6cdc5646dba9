"""INVALID_ADDRESS (hard): the e-mail address is not a valid address."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Rule, RuleFindings

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class InvalidAddress(Rule):
    code = "INVALID_ADDRESS"
    hard = True
    summary = "the e-mail address is invalid"
    columns = ("email_valid",)

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> RuleFindings:
        return RuleFindings(self.col(frame, message, "email_valid") < 0.5)

    def explain(self, logged) -> str:
        # ``address_problem`` is added by ``relmail why`` from the stored address: the decision logs only the flag.
        why = logged.get("address_problem")
        if why is None:
            return "the e-mail address is not a valid address"
        if not why:
            return "the e-mail address was not a valid address when this was decided; the stored one is valid now"
        return f"the e-mail address is not a valid address: {why}"
