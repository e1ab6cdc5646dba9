"""ALREADY_SENT: this very message went (or is due to go) to the customer before.

For a recurring message (``repeat_after_days: N``) only the sends of the
plan's day and the N - 1 calendar days before count (and pending ones of
runs less than N days away, see :mod:`relmail.planning.pending`): sent on a
Monday, a weekly issue with ``repeat_after_days: 7`` goes again the next
Monday at any hour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import CALENDAR, Rule, RuleFindings, calendar_days, n, num, plural, whole_mailbox

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class AlreadySent(Rule):
    code = "ALREADY_SENT"
    summary = "this message was already sent to the customer"
    columns = ("k.already_sent", "k.planned_same", "address_shared")

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> RuleFindings:
        sent = self.is_one(self.col(frame, message, "k.already_sent"))
        gap = message.repeat_after_days
        detail = {} if gap is None else {"repeat_after_days": float(gap), **CALENDAR}
        return RuleFindings(sent | (self.col(frame, message, "k.planned_same") > 0), detail)

    def explain(self, logged) -> str:
        gap = logged.get("repeat_after_days")
        repeats = f"; it repeats at most every {plural(gap, 'day')}" if gap else ""
        if num(logged, "already_sent") >= 0.5:
            return (f"this message was already sent to the customer{f' {calendar_days(gap, logged=logged)}' if gap else ''}{repeats}"
                    + whole_mailbox(logged))
        # Another run's pending send counts from either side: it may be planned ahead.
        near = f", planned for a day less than {n(gap)} days from the plan's" if gap else ""
        return f"this message is already planned for the customer in another run{near}{repeats}" + whole_mailbox(logged)
