"""SHARED_OPT_OUT (hard): the address opted out under another customer id (see :mod:`relmail.planning.shared_mailbox`).

The mailbox's latest dated consent change for the message's topic, or for
all e-mail, is another id's opt-out; or another id unsubscribed from all
e-mail after the mailbox's last global opt-in. An opt-in without a date never
beats a dated opt-out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Rule, RuleFindings, when_and_source

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class SharedOptOut(Rule):
    code = "SHARED_OPT_OUT"
    hard = True
    summary = "the same address opted out under another customer id"
    columns = ("shared_unsubscribed", "k.shared_topic_opt_out", "address_shared")

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> RuleFindings:
        return RuleFindings(self.is_one(self.col(frame, message, "shared_unsubscribed"))
                            | self.is_one(self.col(frame, message, "k.shared_topic_opt_out")))

    def explain(self, logged) -> str:
        """What the other id opted out of; with ``shared`` (``relmail why`` asked the store), which id, when and from where."""
        if logged.get("shared_unsubscribed"):
            what = "opted out of all e-mail"
        else:
            what = f"opted out of topic '{logged.get('topic', 'this topic')}'"
        found = (logged.get("shared") or {}).get(self.code)
        return f"the same address {what} under {other_id(found)}" + when_and_source(found)


def other_id(found: dict | None) -> str:
    """``customer C2`` when ``relmail why`` found which other customer id it was, else ``another customer id``."""
    return f"customer {found['customer']}" if found and found.get("customer") else "another customer id"


def under_whom(logged, code: str) -> str:
    """``customer C2 on 2026-11-20 08:00 UTC``: the other id behind rule ``code``'s decision and when, as far as
    ``relmail why`` found them (:func:`other_id`)."""
    found = (logged.get("shared") or {}).get(code)
    when = f" on {found['at']:%Y-%m-%d %H:%M} UTC" if found and found.get("at") else ""
    return other_id(found) + when
