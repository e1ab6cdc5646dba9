"""NO_CONSENT (hard): the customer has not agreed to mail on this message's topic."""

from __future__ import annotations

import numpy as np

from .base import Outcome, Rule


class NoConsent(Rule):
    code = "NO_CONSENT"
    hard = True
    summary = "no consent for the message's topic"
    columns = ("k.consent_topic",)

    def evaluate(self, frame, message, policy) -> Outcome:
        consent = self.col(frame, message, "k.consent_topic")
        opt_in = policy.consent == "opt-in"
        # Opted out always blocks; no record blocks only under opt-in consent.
        mask = (consent < 0.5) | (np.isnan(consent) & opt_in)
        return Outcome(mask, {"opt_in_required": 1.0 if opt_in else 0.0})

    def explain(self, logged) -> str:
        topic = logged.get("topic", "this topic")
        # Zero values are not logged: absent = 0 (opted out), null = no record.
        if "consent_topic" in logged and logged["consent_topic"] is None:
            return f"no consent on record for topic '{topic}', and this campaign needs an explicit opt-in"
        return f"opted out of topic '{topic}'"
