"""FREQUENCY_CAP: the customer has had (or is due) as many e-mails as the cap allows.

Counts sends recorded as ``email_sent`` events plus ``send`` decisions of
other runs not delivered yet, over whole calendar days: the ``7d`` window of
a plan made on day D is D-6..D (see :mod:`relmail.planning.pending` and
:func:`relmail.windows.days_start`). The customer's frequency wish (max per
week) tightens the 7-day cap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import CALENDAR, Rule, RuleFindings, calendar_days, n, num, plural, whole_mailbox

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


def effective_caps(frame: FeatureFrame, message: Message, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (7-day cap with the frequency wish applied, 30-day cap); inf = no cap."""
    size = len(frame)
    cap7 = policy.cap("7d")
    cap30 = policy.cap("30d")
    wish = np.asarray(frame["frequency_wish"], dtype=np.float64)
    c7 = np.full(size, np.inf if cap7 is None else float(cap7))
    c7 = np.where(np.isnan(wish), c7, np.minimum(c7, np.maximum(wish, 0.0)))
    c30 = np.full(size, np.inf if cap30 is None else float(cap30))
    return c7, c30


def reached(logged, cap: str, count: str):
    """(days, sent, planned, cap) of each window whose logged cap ``{cap}_7d``/``_30d`` the logged
    ``{count}_{days}`` sends and ``planned_`` ones (same prefix) reach; for the explanations."""
    for days, key in ((7, "7d"), (30, "30d")):
        limit = logged.get(f"{cap}_{key}")
        if limit is None:
            continue
        sent, planned = num(logged, f"{count}sends_{days}"), num(logged, f"{count}planned_{days}")
        if sent + planned >= limit:
            yield days, sent, planned, limit


def counted(sent: float, planned: float) -> str:
    """`` (2 sent, 1 planned)`` (it goes before the window) when some of the count is this run's own plan, else nothing."""
    return f" ({n(sent)} sent, {n(planned)} planned)" if planned else ""


class FrequencyCap(Rule):
    code = "FREQUENCY_CAP"
    summary = "frequency cap reached (all topics)"
    columns = ("sends_7", "sends_30", "planned_7", "planned_30", "frequency_wish", "address_shared")

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> RuleFindings:
        c7, c30 = effective_caps(frame, message, policy)
        s7 = self.col(frame, message, "sends_7") + self.col(frame, message, "planned_7")
        s30 = self.col(frame, message, "sends_30") + self.col(frame, message, "planned_30")
        mask = (s7 >= c7) | (s30 >= c30)
        return RuleFindings(mask, {"cap_7d": np.where(np.isinf(c7), np.nan, c7), "cap_30d": np.where(np.isinf(c30), np.nan, c30),
                                   **CALENDAR})

    def explain(self, logged) -> str:
        parts = []
        wish = logged.get("frequency_wish", 0.0)  # absent = 0, null = no wish
        for days, sent, planned, cap in reached(logged, "cap", ""):
            why = " (the customer's own wish)" if days == 7 and wish is not None and float(wish) <= cap else ""
            parts.append(f"{plural(sent + planned, 'e-mail')}{counted(sent, planned)} {calendar_days(days, planned, logged)}, "
                         f"cap is {n(cap)}{why}")
        return ("; ".join(parts) or self.summary) + whole_mailbox(logged)
