"""Postmark webhooks: HTTP Basic credentials and event mapping.

Postmark does not sign webhooks; it recommends credentials in the webhook
URL (``https://user:password@host/webhooks/postmark``), which it sends as
HTTP Basic auth. relmail compares both in constant time: the password is
the secret ``postmark_webhook_password``, the user name ``[feedback.postmark]
username`` (default ``postmark``). Where Basic auth cannot be used, the same
password may be the last path segment (``/webhooks/postmark/<password>``).

Each POST carries one JSON object with a ``RecordType``: ``Delivery``,
``Bounce``, ``SpamComplaint``, ``Open``, ``Click`` or ``SubscriptionChange``;
relmail's metadata is in ``Metadata``.

Export files: JSON arrays or JSON Lines of webhook objects, or a page of the
Bounces / Opens / Clicks API (``{"TotalCount": n, "Bounces": [...]}``).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import SignatureError
from .events import META_CUSTOMER, META_MESSAGE, META_RUN, FeedbackEvent, derived_id, meta_value
from .records import FieldError, invalid, iso_time, obj, parse_all, parse_json_body, read_records, text
from .webhook import MissingCredentials, WebhookConfig, WebhookRequest

NAME = "postmark"
SECRET = "postmark_webhook_password"
DEFAULT_USERNAME = "postmark"

#: Bounce ``Type`` -> normalized type; types not listed (AutoResponder,
#: AddressChange, Subscribe, OpenRelayTest, ChallengeVerification, ...) say
#: nothing about the recipient and are skipped.
BOUNCE_TYPES = {
    "HardBounce": "bounced_hard",
    "BadEmailAddress": "bounced_hard",
    "ManuallyDeactivated": "bounced_hard",
    "SoftBounce": "bounced_soft",
    "Transient": "bounced_soft",
    "DnsError": "bounced_soft",
    "Blocked": "bounced_soft",
    "Unknown": "bounced_soft",
    "SpamComplaint": "complained",
    "SpamNotification": "complained",
    "Unsubscribe": "unsubscribed",
}

#: SubscriptionChange ``SuppressionReason`` -> normalized type.
SUPPRESSION_REASONS = {
    "HardBounce": "bounced_hard",
    "SpamComplaint": "complained",
    "ManualSuppression": "unsubscribed",
}

#: Default RecordType for the arrays of Postmark's API pages.
_WRAPPERS = {"Bounces": "Bounce", "Opens": "Open", "Clicks": "Click"}


def verify(request: WebhookRequest, config: WebhookConfig) -> None:
    """Raise :class:`SignatureError` unless the request carries the configured credentials."""
    password = config.secret(SECRET)
    username = str(config.provider_settings(NAME).get("username", DEFAULT_USERNAME))
    if request.auth is not None:
        user_ok = hmac.compare_digest(request.auth[0].encode(), username.encode())
        pass_ok = hmac.compare_digest(request.auth[1].encode(), password.encode())
        if user_ok and pass_ok:
            return
        raise SignatureError("postmark: wrong webhook credentials")
    if request.path_secret is not None:
        if hmac.compare_digest(request.path_secret.encode(), password.encode()):
            return
        raise SignatureError("postmark: wrong webhook credentials")
    raise MissingCredentials("postmark: no credentials (use https://user:password@host/webhooks/postmark)")


def parse_record(record: Mapping[str, Any]) -> list[FeedbackEvent]:
    """One Postmark webhook object (or API record) as relmail events."""
    kind = text(record, "RecordType", required=False) or _WRAPPERS.get(str(record.get("__wrapper__")))
    if kind is None:
        raise FieldError("RecordType", "is missing")
    message = text(record, "MessageID", required=False)
    url = None
    if kind == "Delivery":
        normalized, when = "delivered", iso_time(record, "DeliveredAt")
        recipient = text(record, "Recipient")
        event_id = derived_id(message, recipient, kind)
    elif kind in ("Bounce", "SpamComplaint"):
        bounce_type = text(record, "Type")
        normalized = BOUNCE_TYPES.get(bounce_type)
        if normalized is None:
            return []
        when, recipient = iso_time(record, "BouncedAt"), text(record, "Email")
        event_id = f"{kind}:{text(record, 'ID')}"
    elif kind in ("Open", "Click"):
        normalized = "opened" if kind == "Open" else "clicked"
        when, recipient = iso_time(record, "ReceivedAt"), text(record, "Recipient")
        url = text(record, "OriginalLink", required=kind == "Click")
        event_id = derived_id(message, recipient, kind, record.get("ReceivedAt"), url)
    elif kind == "SubscriptionChange":
        if record.get("SuppressSending") is not True:
            # A reactivation is Postmark sending again, not the customer's
            # fresh consent: relmail never re-opts someone in on its own.
            return []
        normalized = SUPPRESSION_REASONS.get(text(record, "SuppressionReason"))
        if normalized is None:
            return []
        when, recipient = iso_time(record, "ChangedAt"), text(record, "Recipient")
        event_id = derived_id(message, recipient, kind, record.get("ChangedAt"))
    else:  # Inbound and anything newer
        return []
    meta = obj(record, "Metadata", required=False)
    reason = record.get("Description") or record.get("Details") or record.get("SuppressionReason")
    return [
        FeedbackEvent(
            type=normalized,
            occurred_at=when,
            recipient=recipient,
            provider=NAME,
            provider_event_id=event_id,
            customer_id=meta_value(meta, META_CUSTOMER),
            run_id=meta_value(meta, META_RUN),
            message_id=meta_value(meta, META_MESSAGE),
            reason=str(reason) if reason else None,
            url=url,
            esp_event={k: v for k, v in record.items() if k != "__wrapper__"},
        )
    ]


def receive(request: WebhookRequest, config: WebhookConfig) -> list[FeedbackEvent]:
    """Check the credentials of a webhook POST and return its events."""
    verify(request, config)
    body = parse_json_body(request.body, "postmark webhook")
    if not isinstance(body, dict):
        raise invalid("postmark webhook", "body must be a JSON object")
    return parse_all("postmark webhook", [(1, body)], parse_record)


def read_export(path: Path) -> list[FeedbackEvent]:
    """Events from a JSON array, JSON Lines, or a Bounces/Opens/Clicks API page."""
    return parse_all(str(path), read_records(path, wrappers=tuple(_WRAPPERS)), parse_record)
