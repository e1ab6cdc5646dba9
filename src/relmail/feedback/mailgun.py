"""Mailgun webhooks: HMAC-SHA256 signature and event mapping.

Mailgun posts ``{"signature": {"timestamp", "token", "signature"},
"event-data": {...}}``; the signature is the hex HMAC-SHA256 of
``timestamp + token`` keyed with the account's HTTP webhook signing key
(secret ``mailgun_webhook_key``). relmail's metadata travels as Mailgun
user variables (``v:relmail_customer`` ...), read back from
``event-data["user-variables"]``.

Export files: a page of the Events API (``{"items": [...], "paging": ...}``),
a JSON array, or JSON Lines of event-data objects (whole webhook bodies are
unwrapped too).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import SignatureError
from .events import META_CUSTOMER, META_MESSAGE, META_RUN, FeedbackEvent, from_unix, meta_value
from .records import FieldError, invalid, obj, parse_all, parse_json_body, read_records, text, unix_time
from .webhook import MissingCredentials, WebhookConfig, WebhookRequest

NAME = "mailgun"
SECRET = "mailgun_webhook_key"


def sign(key: str, timestamp: str, token: str) -> str:
    """Mailgun's signature of (timestamp, token): hex HMAC-SHA256."""
    return hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()


def verify_signature(signature: Any, config: WebhookConfig) -> None:
    """Raise :class:`SignatureError` unless ``signature`` is Mailgun's and recent."""
    key = config.secret(SECRET)
    if not isinstance(signature, dict) or not all(signature.get(k) for k in ("timestamp", "token", "signature")):
        raise MissingCredentials("mailgun: missing signature object (timestamp, token, signature)")
    timestamp, token, given = (str(signature[k]) for k in ("timestamp", "token", "signature"))
    if not hmac.compare_digest(sign(key, timestamp, token), given.lower()):
        raise SignatureError("mailgun: signature does not match")
    try:
        signed_at = from_unix(timestamp)
    except (ValueError, OverflowError):
        raise SignatureError("mailgun: signed timestamp is not a number") from None
    config.check_fresh(signed_at, NAME)


def parse_event(record: Mapping[str, Any]) -> list[FeedbackEvent]:
    """One Mailgun event-data object as relmail events."""
    data = record.get("event-data", record)
    if not isinstance(data, dict):
        raise FieldError("event-data", "must be an object")
    kind = text(data, "event")
    status = obj(data, "delivery-status", required=False)
    if kind == "delivered":
        normalized = "delivered"
    elif kind == "failed":
        severity = text(data, "severity")
        if severity not in ("permanent", "temporary"):
            raise FieldError("severity", f"expected 'permanent' or 'temporary', got {severity!r}")
        normalized = "bounced_hard" if severity == "permanent" else "bounced_soft"
    elif kind == "opened":
        normalized = "opened"
    elif kind == "clicked":
        normalized = "clicked"
    elif kind == "complained":
        normalized = "complained"
    elif kind == "unsubscribed":
        normalized = "unsubscribed"
    else:  # accepted, rejected, stored, list events
        return []
    variables = obj(data, "user-variables", required=False)
    reason = status.get("description") or status.get("message") or data.get("reason")
    return [
        FeedbackEvent(
            type=normalized,
            occurred_at=unix_time(data, "timestamp"),
            recipient=text(data, "recipient"),
            provider=NAME,
            provider_event_id=text(data, "id"),
            customer_id=meta_value(variables, META_CUSTOMER),
            run_id=meta_value(variables, META_RUN),
            message_id=meta_value(variables, META_MESSAGE),
            reason=str(reason) if reason else None,
            url=text(data, "url", required=False),
            esp_event=dict(data),
        )
    ]


def receive(request: WebhookRequest, config: WebhookConfig) -> list[FeedbackEvent]:
    """Verify a webhook POST and return its events."""
    body = parse_json_body(request.body, "mailgun webhook")
    if not isinstance(body, dict):
        raise invalid("mailgun webhook", "body must be a JSON object")
    verify_signature(body.get("signature"), config)
    if not isinstance(body.get("event-data"), dict):
        raise invalid("mailgun webhook", "missing 'event-data' object")
    return parse_all("mailgun webhook", [(1, body["event-data"])], parse_event)


def read_export(path: Path) -> list[FeedbackEvent]:
    """Events from an Events API page, JSON array or JSON Lines file."""
    return parse_all(str(path), read_records(path, wrappers=("items",)), parse_event)
