"""ALREADY_SENT: this very message went (or is due to go) to the customer before.

For a recurring message (``repeat_after_days: N``) only the last N days
count: ``already_sent`` is then "sent in the last N days" (see
:mod:`relmail.planning.pending`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Outcome, Rule, n, num

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class AlreadySent(Rule):
    code = "ALREADY_SENT"
    summary = "this message was already sent to the customer"
    columns = ("k.already_sent", "k.planned_same")

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> Outcome:
        sent = self.is_one(self.col(frame, message, "k.already_sent"))
        gap = message.repeat_after_days
        detail = {} if gap is None else {"repeat_after_days": float(gap)}
        return Outcome(sent | (self.col(frame, message, "k.planned_same") > 0), detail)

    def explain(self, logged) -> str:
        gap = logged.get("repeat_after_days")
        within = f" in the last {n(gap)} days (it repeats at most every {n(gap)} days)" if gap else ""
        if num(logged, "already_sent") >= 0.5:
            return f"this message was already sent to the customer{within}"
        return f"this message is already planned for the customer in another run{within}"
