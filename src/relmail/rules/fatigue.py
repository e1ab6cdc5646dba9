"""FATIGUE: engagement is falling while sends rise; give the customer a rest."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Rule, RuleFindings, num, whole_mailbox

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class Fatigue(Rule):
    code = "FATIGUE"
    summary = "signs of e-mail fatigue"
    columns = ("fatigue", "sends_30", "opens_30", "address_shared")

    def applies(self, message: Message) -> bool:
        return message.offer != "service"

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> RuleFindings:
        fatigue = self.col(frame, message, "fatigue")
        return RuleFindings(fatigue >= policy.fatigue_threshold, {"fatigue_threshold": float(policy.fatigue_threshold)})

    def explain(self, logged) -> str:
        return (
            f"fatigue {num(logged, 'fatigue'):.2f} ≥ {num(logged, 'fatigue_threshold'):.2f}: "
            f"{int(num(logged, 'opens_30'))} opens of {int(num(logged, 'sends_30'))} e-mails in 30 days, falling"
        ) + whole_mailbox(logged)
