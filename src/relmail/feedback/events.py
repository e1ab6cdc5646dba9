"""The normalized feedback event every provider's payload is turned into.

Each ESP names its events differently (SendGrid ``spamreport``, Mailgun
``complained``, Postmark ``SpamComplaint``, SES ``Complaint``); the rest of
relmail only ever sees :class:`FeedbackEvent` with one of :data:`TYPES`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..delivery import metadata

#: Normalized feedback types, and the ``events.type`` each is stored as, in the order a reader follows an
#: e-mail (the run report's columns): did it arrive, did it come back, what did the customer do.
STORE_TYPES = {
    "delivered": "email_delivered",
    "bounced_soft": "email_bounced_soft",
    "bounced_blocked": "email_bounced_blocked",
    "bounced_hard": "email_bounced_hard",
    "complained": "email_complained",
    "unsubscribed": "email_unsubscribed",
    "opened": "email_opened",
    "clicked": "email_clicked",
}
TYPES = tuple(STORE_TYPES)

#: The providers of relmail's own pages: an unsubscribe link, the preference page.
LINK_PROVIDER, PREFERENCES_PROVIDER = "link", "preferences"

#: Types that withdraw consent (they also write a preference opt-out).
OPT_OUT_TYPES = ("complained", "unsubscribed")
#: A provider's re-subscription the customer made on its page (SendGrid's ``group_resubscribe``): it
#: opts the scope's topics back in and is kept in the consent history, not as an ``events`` row.
RESUBSCRIBED = "resubscribed"

#: ``events.event_id`` is a String(128).
_MAX_EVENT_ID = 128

@dataclass(frozen=True)
class FeedbackEvent:
    """One thing that happened to one sent e-mail, in relmail's words.

    ``customer_id``, ``run_id`` and ``message_id`` come from the metadata the
    delivery adapter attached (:mod:`relmail.delivery.metadata`); when they are
    missing the recipient address finds the customer. ``topic`` is set for
    list-level unsubscribes (an opt-out of one topic instead of everything);
    ``topics`` for a provider's scope that covers several (a SendGrid
    unsubscribe group), and ``detail`` names that scope in the consent
    history (``unsubscribed from SendGrid group 'Promotions' (group 123)``).
    A :data:`RESUBSCRIBED` event opts ``topics`` (or every topic, scope
    ``all``) back in.
    ``sent_id`` is the provider's own id of the e-mail the event is about (the
    SES ``mail.messageId``): where the metadata is missing, it finds the
    delivery relmail recorded it on (:func:`relmail.feedback.apply.tie_to_deliveries`).

    ``bounced_soft`` is a temporary failure of the recipient's mailbox;
    ``bounced_blocked`` a refusal of the *sender* or of this message
    (policy, reputation, content, size) by the receiving side, which says
    nothing about the mailbox and so never rests the address
    (:mod:`relmail.feedback.blocks`).
    ``esp_event`` keeps the provider's raw event for debugging; it is never
    stored in full.
    """

    type: str
    occurred_at: datetime
    recipient: str
    provider: str
    provider_event_id: str
    customer_id: str | None = None
    run_id: str | None = None
    message_id: str | None = None
    topic: str | None = None
    #: For ``unsubscribed``: ``"all"`` (every topic) or ``"topic"`` (only the
    #: list the message came from: ``topic``, else the sent message's topic).
    scope: str = "all"
    #: For scope ``topic``: every topic the provider's list covers (empty: ``topic``, or the message's).
    topics: tuple[str, ...] = ()
    #: For scope ``topic`` without ``topics``: the provider's lists, each a tuple of topics, of which the
    #: e-mail went with the one holding its topic (``("*",)``: every topic no other list holds, and the
    #: whole list means everything). The scope is that list, resolved when the e-mail's topic is known
    #: (everything when it is not): a SendGrid drop that does not name the group.
    lists: tuple[tuple[str, ...], ...] = ()
    #: What the consent history says of the scope (default: ``<provider> unsubscribe``).
    detail: str | None = None
    reason: str | None = None
    url: str | None = None
    sent_id: str | None = None
    #: The ids an earlier relmail derived for this same event (its parser built them from other fields):
    #: an event stored under one of them is this one, so a provider's redelivery after an upgrade writes nothing.
    former_ids: tuple[str, ...] = ()
    #: At most one event of this type from this provider per e-mail (customer, run, message): one already
    #: stored, under whatever id, makes this one a duplicate (Mandrill's ``send`` and ``delivered``).
    one_per_email: bool = False
    esp_event: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.type not in STORE_TYPES and self.type != RESUBSCRIBED:
            raise ValueError(f"unknown feedback type {self.type!r}; expected one of {', '.join(TYPES)}, {RESUBSCRIBED}")
        if self.occurred_at.tzinfo is None:
            raise ValueError("occurred_at must be timezone-aware")
        if self.scope not in ("all", "topic"):
            raise ValueError(f"scope must be 'all' or 'topic', got {self.scope!r}")
        if not self.provider_event_id:
            raise ValueError("provider_event_id must not be empty")

    @property
    def store_type(self) -> str:
        """The ``events.type`` this event is stored as (``email_bounced_hard`` ...)."""
        return STORE_TYPES[self.type]

    @property
    def event_id(self) -> str:
        """The store's de-duplication key: provider plus the provider's event id.

        A webhook the provider delivers twice has the same key, so the second
        delivery writes nothing. Over-long ids are hashed to fit the column.
        """
        return self._store_key(self.provider_event_id)

    @property
    def former_event_ids(self) -> list[str]:
        """The store's keys of :attr:`former_ids`, as :attr:`event_id` is of the current one."""
        return [self._store_key(former) for former in self.former_ids if former != self.provider_event_id]

    def _store_key(self, provider_event_id: str) -> str:
        key = f"{self.provider}:{provider_event_id}"
        if len(key) <= _MAX_EVENT_ID:
            return key
        return f"{self.provider}:sha256:{hashlib.sha256(provider_event_id.encode()).hexdigest()}"


def derived_id(*parts: Any) -> str:
    """A stable id for providers that give an event no id of its own.

    Built from the fields that identify the event (message, recipient, kind,
    time), so the same event exported twice, or redelivered, maps to the
    same id.
    """
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return "h:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def meta_value(meta: Mapping[str, Any] | None, key: str) -> str | None:
    """A metadata value as a non-empty string, or None (SES tags are lists)."""
    if not meta:
        return None
    value = meta.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None or value == "":
        return None
    return str(value)


def relmail_ids(meta: Mapping[str, Any] | None) -> dict[str, str | None]:
    """``customer_id``, ``run_id`` and ``message_id`` from the metadata an adapter attached."""
    return {
        "customer_id": meta_value(meta, metadata.CUSTOMER),
        "run_id": meta_value(meta, metadata.RUN),
        "message_id": meta_value(meta, metadata.MESSAGE),
    }
