"""OPEN_TICKET: service first — no promotion while a service ticket is open."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Rule, RuleFindings, num, plural, whole_mailbox

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class OpenTicket(Rule):
    code = "OPEN_TICKET"
    summary = "an open service ticket (service messages still go)"
    columns = ("open_tickets", "address_shared")

    def applies(self, message: Message) -> bool:
        return message.offer != "service"

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> RuleFindings:
        return RuleFindings(self.col(frame, message, "open_tickets") > 0)

    def explain(self, logged) -> str:
        return f"{plural(num(logged, 'open_tickets'), 'open service ticket')}{whole_mailbox(logged)}: service comes first, promotions wait"
