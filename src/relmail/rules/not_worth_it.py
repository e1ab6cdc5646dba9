"""NOT_WORTH_IT: with a trained model, the send's expected value is zero or less.

Expected value = P(positive | sent) × the message's value − P(unsubscribe or
complaint | sent) × the cost of losing the customer (policy
``irritation_cost``, default their ``clv``) − the policy's ``contact_cost``.
Applies only when the plan used a trained model for the message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import Rule, RuleFindings, n, num

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class NotWorthIt(Rule):
    code = "NOT_WORTH_IT"
    summary = "expected value of the send (gain minus the risk of losing the customer) is zero or less"
    kind = "value"
    columns = ("k.expected_value", "k.model_p_positive", "k.model_p_irritation", "k.irritation_cost")
    requires = ("k.expected_value",)
    logs_score_inputs = True

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> RuleFindings:
        ev = self.col(frame, message, "k.expected_value")
        mask = np.less_equal(ev, 0.0, where=~np.isnan(ev), out=np.zeros(len(ev), dtype=bool))
        return RuleFindings(mask, {"message_value": float(message.value), "contact_cost": float(policy.contact_cost)})

    def explain(self, logged) -> str:
        outcome = logged.get("model_outcome") or "a positive outcome"
        p, value = num(logged, "model_p_positive"), num(logged, "message_value")
        q, cost = num(logged, "model_p_irritation"), num(logged, "irritation_cost")
        contact = num(logged, "contact_cost")
        text = (
            f"expected value {num(logged, 'expected_value'):.2f} ≤ 0: P({outcome}) {_share(p)} × value {n(value)} = {p * value:.2f}, "
            f"less P(unsubscribe or complaint) {_share(q)} × cost of losing the customer {cost:.2f} = {q * cost:.2f}"
        )
        if contact:
            text += f", less contact cost {contact:.2f}"
        return text


def _share(p: float) -> str:
    """A probability as a percentage; below 1% with two significant digits.

    An unsubscribe chance of 0.04% times a clv of 175 is what outweighs a
    low-value message: "0.0%" would hide the term that decided.
    """
    return f"{p:.1%}" if p >= 0.01 or p <= 0 else f"{p * 100:.2g}%"
