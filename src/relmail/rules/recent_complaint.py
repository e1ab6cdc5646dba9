"""RECENT_COMPLAINT: the customer came to customer service with a problem recently.

Counts service tickets opened in the last ``recent_complaint_days`` (policy,
default 30), closed or not: someone who just had to complain should not get
a cheerful promotion next. Service messages still go.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Rule, RuleFindings, n, num, plural, whole_mailbox

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class RecentComplaint(Rule):
    code = "RECENT_COMPLAINT"
    summary = "a recent complaint to customer service (service messages still go)"
    columns = ("k.recent_tickets", "address_shared")

    def applies(self, message: Message) -> bool:
        return message.offer != "service"

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> RuleFindings:
        return RuleFindings(self.col(frame, message, "k.recent_tickets") > 0, {"complaint_days": float(policy.recent_complaint_days)})

    def explain(self, logged) -> str:
        days = n(num(logged, "complaint_days", 30))
        tickets = plural(num(logged, 'recent_tickets'), 'service ticket')
        return f"{tickets} opened in the last {days} days{whole_mailbox(logged)}: service comes first, promotions wait"
