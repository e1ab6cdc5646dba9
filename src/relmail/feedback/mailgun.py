"""Mailgun webhooks: HMAC-SHA256 signature, replay protection and event mapping.

Mailgun posts ``{"signature": {"timestamp", "token", "signature"},
"event-data": {...}}``; the signature is the hex HMAC-SHA256 of
``timestamp + token`` keyed with the account's HTTP webhook signing key
(secret ``mailgun_webhook_key``). It does not cover ``event-data``: anyone
who has seen one signed POST could send other event data with the same
signature. As Mailgun's documentation advises, relmail remembers every
accepted token for the replay window (``[feedback] max_signature_age``,
900 s) and refuses a token it has seen with a different body; Mailgun's own
redelivery of the same body is answered as a duplicate. relmail's metadata
travels as Mailgun user variables (``v:relmail_customer`` ...), read back
from ``event-data["user-variables"]``.

An event without an ``id`` (older payloads) gets one derived from its
message, recipient, kind and time, so a redelivery still de-duplicates.

Export files: a page of the Events API (``{"items": [...], "paging": ...}``),
a JSON array, or JSON Lines of event-data objects (whole webhook bodies are
unwrapped too).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from .. import timestamps
from ..errors import SignatureError
from .blocks import BLOCKED, soft_or_blocked
from .events import FeedbackEvent, derived_id, relmail_ids
from .provider import Nonce, Provider
from .records import FieldError, Record, invalid, obj, parse_json_body, text
from .webhook import MissingCredentials, WebhookConfig, WebhookRequest

SECRET = "mailgun_webhook_key"

#: ``failed`` with ``severity: permanent``, by ``reason``: Mailgun's own
#: suppression lists say why it did not even try. Any other permanent
#: reason (``bounce``, ``delayed-bounce`` ...) is a hard bounce.
PERMANENT_REASONS = {
    "suppress-unsubscribe": "unsubscribed",
    "suppress-complaint": "complained",
    "suppress-bounce": "bounced_hard",
}


#: ``failed`` reasons that are the receiving side refusing the sender (Mailgun's ESP-block and
#: block-list classes), whatever the severity: not a dead or full mailbox.
BLOCK_REASONS = ("espblock", "blacklisted", "blocklisted")


def sign(key: str, timestamp: str, token: str) -> str:
    """Mailgun's signature of (timestamp, token): hex HMAC-SHA256."""
    return hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()


class Mailgun(Provider):
    name = "mailgun"
    secret = SECRET
    wrappers = ("items",)

    def verify(self, request: WebhookRequest, config: WebhookConfig) -> Nonce:
        """Raise :class:`SignatureError` unless the body's signature is Mailgun's and recent.

        Returns the token to remember: the signature alone does not stop a replay.
        """
        body = parse_json_body(request.body, "mailgun webhook")
        signature = body.get("signature")
        key = config.secret(SECRET)
        if not isinstance(signature, dict) or not all(signature.get(k) for k in ("timestamp", "token", "signature")):
            raise MissingCredentials("mailgun: missing signature object (timestamp, token, signature)")
        timestamp, token, given = (str(signature[k]) for k in ("timestamp", "token", "signature"))
        # As bytes: compare_digest refuses a str with a non-ASCII character, which anyone can send.
        if not hmac.compare_digest(sign(key, timestamp, token).encode(), given.lower().encode()):
            raise SignatureError(f"mailgun: signature does not match (is {config.held_in(SECRET)} the domain's HTTP "
                                 "webhook signing key?)")
        try:
            signed_at = timestamps.from_unix(timestamp)
        except (ValueError, OverflowError, OSError):
            raise SignatureError("mailgun: signed timestamp is not a number") from None
        config.check_fresh(signed_at, self.name)
        expires = signed_at + timedelta(seconds=config.max_age)
        return Nonce(self.name, token, expires, hashlib.sha256(request.body).hexdigest())

    def webhook_records(self, request: WebhookRequest, config: WebhookConfig) -> list[Record]:
        body = parse_json_body(request.body, "mailgun webhook")
        if not isinstance(body.get("event-data"), dict):
            raise invalid("mailgun webhook", "missing 'event-data' object")
        return [Record(0, body["event-data"])]

    def kind(self, record: Mapping[str, Any]) -> str:
        data = record.get("event-data", record)
        return str(data.get("event") or "unknown") if isinstance(data, dict) else "unknown"

    def parse_event(self, record: Mapping[str, Any]) -> list[FeedbackEvent]:
        """One Mailgun event-data object as relmail events."""
        data = record.get("event-data", record)
        if not isinstance(data, dict):
            raise FieldError("event-data", "must be an object")
        kind = text(data, "event")
        status = obj(data, "delivery-status", required=False)
        if kind == "delivered":
            normalized = "delivered"
        elif kind == "failed":
            severity, why = text(data, "severity"), str(data.get("reason") or "")
            if severity not in ("permanent", "temporary"):
                raise FieldError("severity", f"expected 'permanent' or 'temporary', got {severity!r}")
            if why in BLOCK_REASONS:
                normalized = BLOCKED
            elif severity == "permanent":
                normalized = PERMANENT_REASONS.get(why, "bounced_hard")
            else:  # the receiving server's reply says whether it refused the sender (4.7.x) or the mailbox
                normalized = soft_or_blocked(str(status.get("message") or ""), str(status.get("description") or ""))
        elif kind in ("opened", "clicked", "complained", "unsubscribed"):
            normalized = kind
        else:  # accepted, rejected, stored, list events
            return []
        reason = status.get("description") or status.get("message") or data.get("reason")
        return [
            FeedbackEvent(
                type=normalized,
                occurred_at=self.time(data, "timestamp"),
                recipient=text(data, "recipient"),
                provider=self.name,
                provider_event_id=text(data, "id", required=False) or derived_id(
                    _message_id(data), data.get("recipient"), kind, data.get("timestamp")),
                **relmail_ids(obj(data, "user-variables", required=False)),
                reason=str(reason) if reason else None,
                url=text(data, "url", required=False),
                esp_event=dict(data),
            )
        ]


def _message_id(data: Mapping[str, Any]) -> str | None:
    message = data.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    return headers.get("message-id") if isinstance(headers, dict) else None
