"""REPEATED_SOFT_BOUNCE (hard): the address soft-bounces again and again and nothing was delivered since.

A mailbox that is full for weeks, or one the receiving server keeps
answering with a temporary failure, is as dead as a hard-bounced one to the
mailbox providers that judge the sender. ``soft_bounces`` counts the e-mails
that soft-bounced in the last 90 days after the last delivery, open or click;
at ``soft_bounce_limit`` (campaign policy, default 3) the address rests. As
they age out of the 90 days it gets another try, so it soft-bounces at most
the limit in any 90 days. A refusal of the sender or the message (a block
list, a content filter, DMARC: ``email_bounced_blocked``) is not counted:
it says nothing about the mailbox (:mod:`relmail.feedback.blocks`). For an
address several customer ids share, both the soft bounces and the last sign
of delivery are the mailbox's, under any of them
(:mod:`relmail.planning.shared_mailbox`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..features.queries import SOFT_BOUNCE_DAYS
from .base import Rule, RuleFindings, n, num, plural, whole_mailbox

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class RepeatedSoftBounce(Rule):
    code = "REPEATED_SOFT_BOUNCE"
    hard = True
    summary = "the address soft-bounced again and again with no delivery, open or click since"
    columns = ("soft_bounces", "days_since_delivery", "address_shared")

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> RuleFindings:
        count = self.col(frame, message, "soft_bounces")
        return RuleFindings(count >= policy.soft_bounce_limit,
                            {"soft_bounce_limit": float(policy.soft_bounce_limit), "soft_bounce_days": float(SOFT_BOUNCE_DAYS)})

    def explain(self, logged) -> str:
        count, days = num(logged, "soft_bounces"), num(logged, "soft_bounce_days", SOFT_BOUNCE_DAYS)
        limit = n(num(logged, "soft_bounce_limit", 3))
        delivery = logged.get("days_since_delivery")
        if delivery is not None and float(delivery) < days:
            since = f"since the last delivery, open or click {n(round(float(delivery)))} days before the plan"
        else:
            since = f"in the last {n(days)} days, with no delivery, open or click since"
        return f"{plural(count, 'soft bounce')} {since}; the limit is {limit}" + whole_mailbox(logged)
