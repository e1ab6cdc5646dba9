"""TOPIC_FREQUENCY_CAP: the customer has had enough e-mail on this message's topic (calendar days, as FREQUENCY_CAP)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import CALENDAR, Rule, RuleFindings, calendar_days, n, plural, whole_mailbox
from .frequency_cap import counted, reached

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class TopicFrequencyCap(Rule):
    code = "TOPIC_FREQUENCY_CAP"
    summary = "frequency cap for the topic reached"
    columns = ("k.topic_sends_7", "k.topic_sends_30", "k.topic_planned_7", "k.topic_planned_30", "address_shared")

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> RuleFindings:
        size = len(frame)
        mask = np.zeros(size, dtype=bool)
        detail = dict(CALENDAR)
        for days, key in ((7, "7d"), (30, "30d")):
            cap = policy.topic_cap(key)
            detail[f"topic_cap_{key}"] = np.nan if cap is None else float(cap)
            if cap is None:
                continue
            count = self.col(frame, message, f"k.topic_sends_{days}") + self.col(frame, message, f"k.topic_planned_{days}")
            mask |= count >= cap
        return RuleFindings(mask, detail)

    def explain(self, logged) -> str:
        topic = logged.get("topic", "this topic")
        parts = [f"{plural(sent + planned, 'e-mail')} on '{topic}'{counted(sent, planned)} {calendar_days(days, planned, logged)}, "
                 f"cap is {n(cap)}" for days, sent, planned, cap in reached(logged, "topic_cap", "topic_")]
        return ("; ".join(parts) or self.summary) + whole_mailbox(logged)
