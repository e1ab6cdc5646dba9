"""HELD_OUT: the customer is in this message's control group from an earlier run.

A hold-out is kept back at random to measure what the message does
(``relmail report incrementality``, the uplift models): its outcomes count
for the days after the run. Mailed the same message the next week, the
customer would no longer show what happens without it. So a customer held
out of a message is not sent it by a later run of the campaign: a one-off
message never, a recurring one (``repeat_after_days: N``) not on the issue
she was kept from, that is by runs less than N days away, as for
ALREADY_SENT. ``policy.rules: {HELD_OUT: false}`` releases the control group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Rule, RuleFindings, n

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class HeldOut(Rule):
    code = "HELD_OUT"
    summary = "held out of this message by an earlier run: the customer stays in its control group"
    kind = "experiment"
    columns = ("k.held_out",)

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> RuleFindings:
        gap = message.repeat_after_days
        detail = {} if gap is None else {"repeat_after_days": float(gap)}
        return RuleFindings(self.col(frame, message, "k.held_out") > 0, detail)

    def explain(self, logged) -> str:
        gap = logged.get("repeat_after_days")
        when = f" planned less than {n(gap)} days from this one" if gap else ""
        return (f"held out of this message by an earlier run{when}: the customer stays in its control group, "
                "so the message's effect can be measured")
