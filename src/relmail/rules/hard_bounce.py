"""HARD_BOUNCE (hard): the address bounced permanently and nothing was delivered since.

For an address several customer ids share, a delivery, open or click under any
of them is mail reaching the mailbox: it lifts each id's own earlier bounce
(:mod:`relmail.planning.shared_mailbox`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Rule, RuleFindings

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class HardBounce(Rule):
    code = "HARD_BOUNCE"
    hard = True
    summary = "the address bounced permanently"
    columns = ("hard_bounced", "address_shared")

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> RuleFindings:
        return RuleFindings(self.is_one(self.col(frame, message, "hard_bounced")))

    def explain(self, logged) -> str:
        """With ``bounce`` (``relmail why`` asked the store: ``{"at", "source"}``), when and who reported it."""
        anywhere = " to it under any customer id with it" if logged.get("address_shared") else ""
        found = logged.get("bounce") or {}
        when = f" on {found['at']:%Y-%m-%d %H:%M} UTC" if found.get("at") is not None else ""
        source = f" (source: {found['source']})" if found.get("source") else ""
        return f"the address hard-bounced{when}{source}, with no delivery, open or click{anywhere} since"
