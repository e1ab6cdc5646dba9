"""The parsed campaign: :class:`Campaign`, its :class:`Message` s and their :class:`Policy`.

Plain frozen dataclasses, made from a campaign file by
:mod:`relmail.campaigns.parse`; every stage after it reads these.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NotFound

#: Offer types the rules know. ``service`` messages pass the "service comes
#: first" rules; ``usage-tip`` messages are about a product the customer owns.
OFFERS = ("promotion", "new-customers-only", "loyalty", "service", "usage-tip")
#: Rolling windows a frequency cap can count over (the feature store keeps these).
CAP_WINDOWS = {"7d": 7, "30d": 30}


@dataclass(frozen=True)
class Policy:
    """The effective policy for one message (campaign policy + the message's overrides)."""

    min_relevance: float = 0.2
    frequency_cap: dict[str, int] = field(default_factory=lambda: {"7d": 3, "30d": 10})
    topic_frequency_cap: dict[str, int] = field(default_factory=lambda: {"7d": 1, "30d": 5})
    holdout_share: float = 0.0
    max_messages_per_run: int = 1
    contact_cost: float = 0.0
    fatigue_threshold: float = 0.6
    recent_complaint_days: int = 30
    #: REPEATED_SOFT_BOUNCE: e-mails soft-bounced since the last delivery (in 90 days) that rest the address.
    soft_bounce_limit: int = 3
    #: opt-in: a topic needs an explicit yes; opt-out: anyone who has not said no.
    consent: str = "opt-in"
    #: Rule code → on/off, for rules that can be switched.
    rules: dict[str, bool] = field(default_factory=dict)
    #: ``auto``: use the message's trained model when one exists (``models/<message>/``); ``off``: never.
    model: str = "auto"
    #: The model outcome whose probability is P(positive); None = the model's primary outcome.
    model_outcome: str | None = None
    #: What losing the customer (unsubscribe or complaint) costs; None = their ``clv`` feature.
    irritation_cost: float | None = None

    def rule_on(self, code: str) -> bool:
        return self.rules.get(code, True)

    def cap(self, window: str) -> int | None:
        return self.frequency_cap.get(window)

    def topic_cap(self, window: str) -> int | None:
        return self.topic_frequency_cap.get(window)


@dataclass(frozen=True)
class Message:
    """One e-mail of a campaign; ``policy`` is already merged with the campaign's."""

    id: str
    template: str
    #: A Jinja string, or one per locale; None = the template's ``subject`` block.
    subject: str | dict[str, str] | None
    topic: str
    segments: tuple[str, ...]
    offer: str
    policy: Policy
    products: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    feature: str | None = None
    priority: int = 0
    value: float = 1.0
    #: A recurring message (a newsletter) may go again this many days after the
    #: last one; None = a one-off, never sent twice to the same customer.
    repeat_after_days: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scoring:
    weights: dict[str, float]
    model_weight: float = 0.0


@dataclass(frozen=True)
class Campaign:
    """A parsed, validated campaign file."""

    #: The campaign's identifier: the file's stem (runs are ``<name>:<window>``).
    name: str
    path: Path | None
    messages: tuple[Message, ...]
    policy: Policy
    scoring: Scoring
    title: str = ""
    description: str = ""
    seed: int | None = None
    #: ``weekly`` | ``daily`` | ``monthly``: what ``--window auto`` resolves to.
    schedule: str = "weekly"
    #: SHA-256 of the file's text: a run records what it was planned from.
    digest: str = ""

    def message(self, message_id: str) -> Message:
        for m in self.messages:
            if m.id == message_id:
                return m
        raise NotFound(f"campaign '{self.name}' has no message '{message_id}' (have: {', '.join(self.message_ids)})")

    @property
    def message_ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.messages)

    def run_seed(self, window: str) -> int:
        """The hold-out seed: the campaign's ``seed`` if set, else stable per (campaign, window)."""
        if self.seed is not None:
            return self.seed
        return int.from_bytes(hashlib.blake2b(f"{self.name}:{window}".encode(), digest_size=6).digest(), "big")
