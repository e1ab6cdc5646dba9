"""NO_CONSENT (hard): the customer has not agreed to mail on this message's topic.

Consent for a topic is the topic's own record (opted in or out, the latest
one); without one, a global opt-in (topic ``*``, a shop's "accepts e-mail
marketing") counts where ``[consent]`` in relmail.toml lets it: every topic
by default, except the ``explicit_topics``. Opted out always blocks; no
consent at all blocks a message whose policy is ``consent: opt-in``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import Rule, RuleFindings, num, when_and_source

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class NoConsent(Rule):
    code = "NO_CONSENT"
    hard = True
    summary = "no consent for the message's topic"
    columns = ("k.consent_topic",)

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> RuleFindings:
        consent = self.col(frame, message, "k.consent_topic")
        opt_in = policy.consent == "opt-in"
        # Opted out always blocks; no record blocks only under opt-in consent.
        mask = (consent < 0.5) | (np.isnan(consent) & opt_in)
        context = frame.contexts.get(message.id)
        counts = 1.0 if context is not None and context.global_consent else 0.0
        return RuleFindings(mask, {"opt_in_required": 1.0 if opt_in else 0.0, "global_opt_in_counts": counts})

    def explain(self, logged) -> str:
        topic = logged.get("topic", "this topic")
        # Zero values are not logged: absent = 0 (opted out), null = no record.
        if "consent_topic" in logged and logged["consent_topic"] is None:
            if logged.get("global_opt_out"):  # set by relmail why when UNSUBSCRIBED decided by the global preference
                return f"no consent on record for topic '{topic}', and the customer opted out of all e-mail (UNSUBSCRIBED)"
            if "global_opt_in_counts" not in logged:  # decided before [consent] existed
                return f"no consent on record for topic '{topic}', and this campaign needs an explicit opt-in"
            if num(logged, "global_opt_in_counts") >= 0.5:
                return f"no consent on record for topic '{topic}' and no global opt-in; this campaign needs an opt-in"
            return (f"no consent on record for topic '{topic}', which needs its own opt-in (a global opt-in does not "
                    "count for it: [consent] in relmail.toml)")
        return f"opted out of topic '{topic}'" + when_and_source(logged.get("topic_opt_out"))


def opted_out_of_topic(logged) -> bool:
    """Whether a NO_CONSENT decision's topic was opted out (zero values are not logged: an absent consent_topic
    is 0, opted out; ``null`` is no record)."""
    return "consent_topic" not in logged and bool(logged.get("topic")) and logged.get("topic") != "*"
