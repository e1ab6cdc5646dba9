"""Brevo (formerly Sendinblue) transactional webhooks: credentials and event mapping.

Brevo does not sign webhooks; a webhook is protected by the credentials it
is created with, and relmail checks them in constant time against the
secret ``brevo_webhook_token``: Brevo's token authentication (``auth`` of
type ``bearer``, sent as ``Authorization: Bearer <token>``), HTTP Basic
credentials in the URL (``https://brevo:<token>@host/webhooks/brevo``, the
user name ``[feedback.brevo] username``, default ``brevo``), or the token
as the last path segment (``/webhooks/brevo/<token>``).

A POST holds one event object, or an array of them when the webhook is
created with ``batched``. relmail's ids come back in ``X-Mailin-custom``,
the JSON the adapter put there (:mod:`relmail.delivery.brevo`); a value
that is not relmail's JSON (the shop's other mail through the same
account) carries no ids, and the event's ``message-id`` (the id Brevo
answered the send with) finds the delivery, else the recipient's address.

Brevo gives an event no id of its own (``id`` is the webhook's): each gets
one derived from its message, recipient, kind and second, so a redelivered
event writes nothing twice, and a first open reported both as ``opened``
and ``unique_opened`` counts once. Events, by Brevo's names:

- ``delivered``: delivered; ``spam``: complained; ``unsubscribed``:
  unsubscribed, every topic (Brevo's transactional mail has no lists);
- ``hard_bounce`` and ``invalid_email``: hard bounces, unless the
  receiving server's status is about the sender or the message (``5.7.1``):
  a block (:mod:`.blocks`); ``soft_bounce``: soft, or a block by that rule;
- ``blocked``: Brevo did not send because the address is on its own block
  list; stored as a block, read by no rule: the bounce, complaint or
  unsubscribe that put the address there came as its own event;
- ``opened`` and ``unique_opened``: opened; ``click``: clicked;
- ``proxy_open`` and ``unique_proxy_open`` (a mail program's privacy proxy
  fetched the images, not the customer), ``request`` (sent: the ledger
  records that itself), ``deferred`` (Brevo retries), ``error`` and any
  other kind are ignored and counted.

Export files: webhook objects as a JSON array or JSON Lines, CSV with the
same field names, or a page of ``GET /v3/smtp/statistics/events``
(``{"events": [...]}``, with ``messageId``, ``date`` and the API's event
names: ``hardBounces``, ``clicks`` ...).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from typing import Any

from ..delivery import metadata
from ..delivery.brevo import METADATA_HEADER
from ..errors import SignatureError
from .blocks import BLOCKED, sender_side, soft_or_blocked, status_in
from .events import FeedbackEvent, derived_id, relmail_ids
from .provider import Nonce, Provider
from .records import FieldError, Record, invalid, parse_json_body, text
from .webhook import WebhookConfig, WebhookRequest, check_basic_auth

SECRET = "brevo_webhook_token"
DEFAULT_USERNAME = "brevo"

#: Brevo's webhook event -> relmail's type (None: ignored; see the module docstring).
EVENTS: dict[str, str | None] = {
    "delivered": "delivered",
    "hard_bounce": "bounced_hard",
    "invalid_email": "bounced_hard",
    "soft_bounce": "bounced_soft",
    "blocked": BLOCKED,
    "spam": "complained",
    "unsubscribed": "unsubscribed",
    "opened": "opened",
    "unique_opened": "opened",
    "click": "clicked",
    "proxy_open": None,
    "unique_proxy_open": None,
    "request": None,
    "deferred": None,
    "error": None,
}

#: The events API's names for the same kinds (the others are the webhook's own).
API_EVENTS = {
    "requests": "request",
    "hardBounces": "hard_bounce",
    "softBounces": "soft_bounce",
    "invalid": "invalid_email",
    "clicks": "click",
    "loadedByProxy": "proxy_open",
}

#: Where an event's time is, in the order relmail reads them: the webhook's seconds and
#: milliseconds (UTC), then the API's ISO 8601 ``date`` (the webhook's own ``date`` has no offset).
_TIMES = ("ts_event", "ts_epoch", "ts", "date")


class Brevo(Provider):
    name = "brevo"
    secret = SECRET
    wrappers = ("events",)

    def verify(self, request: WebhookRequest, config: WebhookConfig) -> Nonce | None:
        """Raise :class:`SignatureError` unless the request carries the webhook's token: Brevo's bearer token, or
        the Basic credentials or path segment of the URL (:func:`~relmail.feedback.webhook.check_basic_auth`)."""
        scheme, _, value = (request.header("Authorization") or "").strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            # As bytes: compare_digest refuses a str with a non-ASCII character, which anyone can send.
            if not hmac.compare_digest(value.strip().encode(), config.secret(SECRET).encode()):
                raise SignatureError("brevo: wrong webhook credentials")
        else:
            check_basic_auth(request, config, self.name, SECRET, DEFAULT_USERNAME)
        return None  # the same credentials on every POST: a replay repeats an event, which de-duplicates

    def webhook_records(self, request: WebhookRequest, config: WebhookConfig) -> list[Record]:
        body = parse_json_body(request.body, "brevo webhook", (dict, list), "a JSON object or an array of them")
        events = body if isinstance(body, list) else [body]
        if not events:
            raise invalid("brevo webhook", "body is an empty array")
        return [Record(i, event) for i, event in enumerate(events)]

    def kind(self, record: Mapping[str, Any]) -> str:
        return str(record.get("event") or "unknown")

    def parse_event(self, record: Mapping[str, Any]) -> list[FeedbackEvent]:
        """One Brevo event (webhook object or events API record) as relmail events."""
        kind = text(record, "event")
        if record.get("__wrapper__") == "events":
            kind = API_EVENTS.get(kind, kind)
        normalized = EVENTS.get(kind)
        if normalized is None:
            return []
        recipient = text(record, "email")
        if "@" not in recipient:
            raise FieldError("email", f"expected an e-mail address, got {recipient[:80]!r}")
        sent = text(record, "message-id", required=False) or text(record, "messageId", required=False)
        sent = (sent.strip().strip("<>") or None) if sent else None
        when = self.time(record, next((k for k in _TIMES if record.get(k) not in (None, "")), _TIMES[0]))
        reason = text(record, "reason", required=False)
        if kind in ("hard_bounce", "invalid_email") and sender_side(status_in(reason, failures_only=True)):
            normalized = BLOCKED
        elif kind == "soft_bounce":
            normalized = soft_or_blocked(reason)
        url = text(record, "link") if kind == "click" else None
        return [
            FeedbackEvent(
                type=normalized,
                occurred_at=when,
                recipient=recipient,
                provider=self.name,
                provider_event_id=derived_id(sent, recipient.lower(), normalized, int(when.timestamp()), url),
                **relmail_ids(_metadata(record)),
                reason=reason,
                url=url,
                sent_id=sent,
                esp_event={k: v for k, v in record.items() if k != "__wrapper__"},
            )
        ]


def _metadata(record: Mapping[str, Any]) -> dict[str, str]:
    """relmail's ids from ``X-Mailin-custom``; ``{}`` when it holds something else than relmail's JSON."""
    raw = record.get(METADATA_HEADER)
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, str):
        raise FieldError(METADATA_HEADER, f"must be text, got {type(raw).__name__}")
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError):
        return {}  # another sender's custom header: not relmail's e-mail, or not its ids
    if not isinstance(meta, dict):
        return {}
    for key in metadata.KEYS:
        if key in meta and not isinstance(meta[key], str):
            raise FieldError(METADATA_HEADER, f"{key} must be text, got {type(meta[key]).__name__}")
    return meta
