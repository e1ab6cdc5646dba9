"""UNSUBSCRIBED (hard): opted out of all e-mail, or unsubscribed through a link or the provider."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Rule, RuleFindings, num, when_and_source

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
        """What decided; with ``opt_out`` (``relmail why`` asked the store), when and from where."""
        text = ("opted out of all e-mail (global preference)" if decided_by_preference(logged)
                else "unsubscribed (link or provider event) after the last opt-in")
        return text + when_and_source(logged.get("opt_out"))


def decided_by_preference(logged) -> bool:
    """Whether the global preference decided (else the unsubscribe event did).

    Zero values are not logged: an absent consent_global is 0, opted out (as a
    Mailchimp unsubscribed export, the preference page or an import records
    it). ``null`` is unknown: then the unsubscribe event decided.
    """
    return logged.get("consent_global", 0.0) is not None and num(logged, "consent_global", 0.0) < 0.5
