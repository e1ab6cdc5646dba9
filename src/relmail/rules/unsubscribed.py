"""UNSUBSCRIBED (hard): opted out of all e-mail, or unsubscribed through a link or the provider."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Rule, RuleFindings, num

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class Unsubscribed(Rule):
    code = "UNSUBSCRIBED"
    hard = True
    summary = "globally unsubscribed"
    columns = ("consent_global", "unsubscribed_event")

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> RuleFindings:
        opted_out = self.col(frame, message, "consent_global") < 0.5
        return RuleFindings(opted_out | self.is_one(self.col(frame, message, "unsubscribed_event")))

    def explain(self, logged) -> str:
        # Zero values are not logged: an absent consent_global is 0, opted out (as a Mailchimp
        # unsubscribed export, the preference page or an import records it).
        # ``null`` is unknown: then the unsubscribe event decided.
        if logged.get("consent_global", 0.0) is not None and num(logged, "consent_global", 0.0) < 0.5:
            return "opted out of all e-mail (global preference)"
        return "unsubscribed (link or provider event) after the last opt-in"
