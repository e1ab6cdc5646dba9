"""Mailjet Event API webhooks: HTTP Basic credentials and event mapping.

Mailjet does not sign its event callbacks; it recommends credentials in the
callback URL (``https://mailjet:password@host/webhooks/mailjet``), which it
sends as HTTP Basic auth. relmail checks them as for Postmark
(:func:`~relmail.feedback.webhook.check_basic_auth`): the password is the
secret ``mailjet_webhook_password``, the user name ``[feedback.mailjet]
username`` (default ``mailjet``). Where the URL cannot carry credentials, the
password may be its last path segment (``/webhooks/mailjet/<password>``).

A POST holds one event object, or, with event grouping (the callback URL's
``Version`` 2), a JSON array of the events of the last second, kinds mixed.
Every event has ``event``, ``time`` (Unix seconds), ``email``, ``MessageID``
(``mj_message_id`` in older events), ``Message_GUID``, ``CustomID`` and
``Payload``. The Mailjet adapter (:mod:`relmail.delivery.mailjet`)
sends relmail's metadata as the ``EventPayload``, which comes back as
``Payload``: it names the customer, run and message. A payload that is not
relmail's (another tool's text, a value that is not a string) is ignored,
never half-read; the event is then tied to its delivery through
``MessageID``, the number the send was answered with (``Message_GUID``,
the ``MessageUUID`` of the answer, where an event has no number), and
failing that through the recipient's address.

Events: ``sent`` (the receiving server took it) is ``delivered``; ``open``,
``click``; ``spam`` a complaint and ``unsub`` an unsubscribe from
everything (Mailjet's unsubscribe is not scoped to relmail's topics).
``bounce`` (Mailjet tried) and ``blocked`` (Mailjet did not try) are read
from ``error`` (:data:`ERRORS`, Mailjet's documented list): refusals of the
sender or content (``error_related_to`` ``spam``, ``relay/access denied``)
are blocks (:mod:`.blocks`); Mailjet's own faults (``system``), a fault of
the message's template (``content``: relmail sends none) and ``duplicate in
campaign`` say nothing about the recipient and are ignored;
an address Mailjet holds as bounced (``preblocked``) is a hard bounce, one
that complained before (``spam reporter``) a complaint. ``blacklisted`` (on
the account's exclusion list, for a reason Mailjet does not give) is a block:
no consent is changed on a guess. A bounce of the recipient's mailbox is hard
or soft as its ``hard_bounce`` says; a ``blocked`` event with an error not in
the list is an invalid event (recorded, not guessed at).

Mailjet gives events no id: each gets one derived from its message,
recipient, kind, time and URL or error, so a redelivered POST (Mailjet
retries every 30 seconds until it gets a 200, for up to 24 hours) writes
nothing twice. Export files: saved webhook bodies, a JSON array or JSON Lines
of events (``relmail feedback import --format mailjet``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..delivery import metadata
from .blocks import BLOCKED, SOFT, soft_or_blocked
from .events import FeedbackEvent, derived_id, relmail_ids
from .provider import Nonce, Provider
from .records import FieldError, Record, parse_json_body
from .webhook import WebhookConfig, WebhookRequest, check_basic_auth

SECRET = "mailjet_webhook_password"
DEFAULT_USERNAME = "mailjet"
HARD = "bounced_hard"

#: ``error`` of a bounce or blocked event -> normalized type (None: says nothing about the recipient).
#: ``HARD`` and ``SOFT`` are about the mailbox: a bounce's ``hard_bounce`` decides between them.
ERRORS: dict[str, str | None] = {
    # error_related_to: recipient
    "user unknown": HARD,
    "mailbox inactive": HARD,
    "quota exceeded": SOFT,
    "blacklisted": BLOCKED,
    "spam reporter": "complained",
    # domain
    "invalid domain": HARD,
    "no mail host": HARD,
    "relay/access denied": BLOCKED,
    "greylisted": SOFT,
    "typofix": HARD,
    # spam: the receiving side's or Mailjet's filter refused the sender or the content
    "sender blocked": BLOCKED,
    "content blocked": BLOCKED,
    "policy issue": BLOCKED,
    # content: the message's template, which relmail does not use
    "bad or empty template": None,
    "error in template language": None,
    # system: Mailjet's own fault, never permanent
    "system issue": None,
    "protocol issue": None,
    "connection issue": None,
    # mailjet
    "preblocked": HARD,
    "duplicate in campaign": None,
}
#: ``error_related_to`` -> type, for an error not in :data:`ERRORS`.
RELATED: dict[str, str | None] = {"spam": BLOCKED, "system": None, "mailjet": None, "content": None, "recipient": SOFT,
                                  "domain": SOFT}


class Mailjet(Provider):
    name = "mailjet"
    secret = SECRET

    def verify(self, request: WebhookRequest, config: WebhookConfig) -> Nonce | None:
        """Raise :class:`~relmail.errors.SignatureError` unless the request carries the configured credentials."""
        check_basic_auth(request, config, self.name, SECRET, DEFAULT_USERNAME)
        return None

    def webhook_records(self, request: WebhookRequest, config: WebhookConfig) -> list[Record]:
        body = parse_json_body(request.body, "mailjet webhook", (dict, list), "a JSON object or an array of events")
        return [Record(i, event) for i, event in enumerate(body if isinstance(body, list) else [body])]

    def kind(self, record: Mapping[str, Any]) -> str:
        kind = record.get("event")
        kind = kind if isinstance(kind, str) and kind else "unknown"
        error = record.get("error")
        return f"{kind}/{error}" if kind in ("bounce", "blocked") and isinstance(error, str) and error else kind

    def parse_event(self, record: Mapping[str, Any]) -> list[FeedbackEvent]:
        """One Mailjet event as relmail events ([] for kinds relmail does not track)."""
        kind = _string(record, "event")
        url = None
        if kind == "sent":
            normalized = "delivered"
        elif kind in ("open", "spam", "unsub"):
            normalized = {"open": "opened", "spam": "complained", "unsub": "unsubscribed"}[kind]
        elif kind == "click":
            normalized, url = "clicked", _string(record, "url")
        elif kind in ("bounce", "blocked"):
            normalized = self.failure(record, kind)
        else:  # kinds Mailjet may add
            return []
        if normalized is None:
            return []
        when = self.time(record, "time")
        recipient = _string(record, "email")
        number = _message_id(record)
        error = record.get("error") if isinstance(record.get("error"), str) else None
        return [
            FeedbackEvent(
                type=normalized,
                occurred_at=when,
                recipient=recipient,
                provider=self.name,
                # From MessageID alone: the ids of events already stored stay what they were.
                provider_event_id=derived_id(number, recipient, kind, record.get("time"), url or error),
                **relmail_ids(_payload(record)),
                reason=_reason(record),
                url=url,
                sent_id=number or _guid(record),
                detail="unsubscribed through Mailjet's link" if normalized == "unsubscribed" else None,
                esp_event=dict(record),
            )
        ]

    def failure(self, record: Mapping[str, Any], kind: str) -> str | None:
        """The type of a ``bounce`` or ``blocked`` event, from its ``error`` (see the module docstring)."""
        error = _string(record, "error", required=kind == "blocked")
        related = record.get("error_related_to")
        key = " ".join((error or "").split()).lower()
        if key in ERRORS:
            normalized = ERRORS[key]
        elif isinstance(related, str) and related.lower() in RELATED:
            normalized = RELATED[related.lower()]
        elif kind == "blocked":
            raise FieldError("error", f"unknown error {error!r} (error_related_to {related!r})")
        else:
            normalized = SOFT
        if kind == "bounce" and normalized in (HARD, SOFT):
            # The bounce's own verdict on the mailbox; a soft one whose reply blames the sender is a block.
            if _flag(record, "hard_bounce"):
                return HARD
            return soft_or_blocked(_text_of(record, "smtp_reply"), _text_of(record, "comment"))
        return normalized


def _string(record: Mapping[str, Any], key: str, required: bool = True) -> str | None:
    value = record.get(key)
    if value is None or value == "":
        if required:
            raise FieldError(key, "is missing")
        return None
    if not isinstance(value, str):
        raise FieldError(key, f"must be text, got {type(value).__name__}")
    return value


def _text_of(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    return value if isinstance(value, str) else None


def _flag(record: Mapping[str, Any], key: str) -> bool:
    value = record.get(key)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):  # a CSV export's cell
        return value.strip().lower() == "true"
    raise FieldError(key, "is missing" if value is None else f"must be true or false, got {value!r}")


def _message_id(record: Mapping[str, Any]) -> str | None:
    """``MessageID`` (``mj_message_id`` in older events) as the adapter recorded it: the number as text, or None."""
    for key in ("MessageID", "mj_message_id"):
        value = record.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return str(value)
        if isinstance(value, str) and value.isdigit() and int(value) > 0:
            return value
    return None


def _guid(record: Mapping[str, Any]) -> str | None:
    """``Message_GUID``, the e-mail's UUID (the send's ``MessageUUID``, which the adapter records without a ``MessageID``)."""
    value = record.get("Message_GUID")
    return value.strip() if isinstance(value, str) and value.strip() else None


def _payload(record: Mapping[str, Any]) -> dict[str, str]:
    """relmail's metadata from ``Payload``; {} when the payload is not relmail's."""
    raw = record.get("Payload")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else None
        except (ValueError, RecursionError):
            return {}
    if not isinstance(raw, dict):
        return {}
    values = {k: raw.get(k) for k in metadata.KEYS if k in raw}
    # Every relmail key a string, or none of it is used: a half-read payload could name the wrong delivery.
    if not values or not all(isinstance(v, str) and v for v in values.values()):
        return {}
    return values


def _reason(record: Mapping[str, Any]) -> str | None:
    parts = [_text_of(record, k) for k in ("error_related_to", "error", "smtp_reply", "comment", "source")]
    text = ": ".join(p for p in parts if p)
    return text or None
