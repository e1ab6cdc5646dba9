"""NOT_NEW_CUSTOMER: a new-customers-only offer never goes to an existing customer.

Loyal customers must not be treated worse than new ones: showing them a
welcome discount they cannot have irritates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Outcome, Rule, n, num, plural

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class NotNewCustomer(Rule):
    code = "NOT_NEW_CUSTOMER"
    summary = "a new-customers-only offer to an existing customer"
    columns = ("is_new", "loyal", "tenure_days", "orders_total")

    def applies(self, message: Message) -> bool:
        return message.offer == "new-customers-only"

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> Outcome:
        return Outcome(~self.is_one(self.col(frame, message, "is_new")))

    def explain(self, logged) -> str:
        who = "a loyal customer" if num(logged, "loyal") >= 0.5 else "an existing customer"
        tenure = n(round(num(logged, "tenure_days")))
        return f"{who} (customer for {tenure} days, {plural(num(logged, 'orders_total'), 'order')}); the offer is for new customers only"
