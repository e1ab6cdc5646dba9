"""Postmark webhooks: HTTP Basic credentials and event mapping.

Postmark does not sign webhooks; it recommends credentials in the webhook
URL (``https://user:password@host/webhooks/postmark``), which it sends as
HTTP Basic auth. relmail compares both in constant time: the password is
the secret ``postmark_webhook_password``, the user name ``[feedback.postmark]
username`` (default ``postmark``). Where Basic auth cannot be used, the same
password may be the last path segment (``/webhooks/postmark/<password>``).

Postmark keeps a suppression list per message stream: an unsubscribe
(``SubscriptionChange`` ``ManualSuppression``, a ``Bounce`` of Type
``Unsubscribe``) stops that stream only. On a stream of ``[delivery.postmark]
streams`` it is read as the topics that stream carries; on
``message_stream`` (every other topic) as every topic. With either setting,
one on another stream of the server (the shop's transactional mail) stops
nothing relmail sends and is ignored; without them (or when the event names
no stream) it is every topic. Hard bounces and complaints are the
mailbox's and the person's, on any stream.

Each POST carries one JSON object with a ``RecordType``: ``Delivery``,
``Bounce``, ``SpamComplaint``, ``Open``, ``Click`` or ``SubscriptionChange``;
relmail's metadata is in ``Metadata``. A bounce ``Type`` that is not in
Postmark's documented list is an invalid event (recorded, not guessed at).

Export files: JSON arrays or JSON Lines of webhook objects, or a page of the
Bounces / Opens / Clicks API (``{"TotalCount": n, "Bounces": [...]}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..delivery.postmark import Streams
from .blocks import soft_or_blocked
from .events import FeedbackEvent, derived_id, relmail_ids
from .provider import Nonce, Provider
from .records import FieldError, Record, obj, parse_json_body, text
from .webhook import WebhookConfig, WebhookRequest, check_basic_auth

SECRET = "postmark_webhook_password"
DEFAULT_USERNAME = "postmark"

#: Bounce ``Type`` -> normalized type, for every type of Postmark's bounce
#: list. ``Blocked`` (the ISP blocked the message), ``SpamNotification``
#: (the receiving server's filter refused it), ``VirusNotification`` and
#: ``DMARCPolicy`` (our domain's policy) refuse the sender or the message,
#: not the mailbox: blocks (:mod:`.blocks`), which change no consent and
#: never rest the address; a spam filter's refusal is not the recipient's
#: wish (that is ``SpamComplaint``). ``Transient``, ``SoftBounce`` and
#: ``Unknown`` are soft unless the server's reply is about the sender
#: (``4.7.x``). Types mapped to None say nothing about the recipient
#: (auto-replies, challenge mails, errors of our own request or template)
#: and are counted as ignored.
BOUNCE_TYPES: dict[str, str | None] = {
    "HardBounce": "bounced_hard",
    "BadEmailAddress": "bounced_hard",
    "ManuallyDeactivated": "bounced_hard",
    "Transient": "bounced_soft",
    "DnsError": "bounced_soft",
    "SoftBounce": "bounced_soft",
    "Blocked": "bounced_blocked",
    "Unknown": "bounced_soft",
    "SpamNotification": "bounced_blocked",
    "VirusNotification": "bounced_blocked",
    "DMARCPolicy": "bounced_blocked",
    "SpamComplaint": "complained",
    "Unsubscribe": "unsubscribed",
    "Subscribe": None,
    "AutoResponder": None,
    "AddressChange": None,
    "OpenRelayTest": None,
    "ChallengeVerification": None,
    "Unconfirmed": None,
    "SMTPApiError": None,
    "InboundError": None,
    "TemplateRenderingFailed": None,
}

#: SubscriptionChange ``SuppressionReason`` -> normalized type.
SUPPRESSION_REASONS = {
    "HardBounce": "bounced_hard",
    "SpamComplaint": "complained",
    "ManualSuppression": "unsubscribed",
}

#: Default RecordType for the arrays of Postmark's API pages.
_WRAPPERS = {"Bounces": "Bounce", "Opens": "Open", "Clicks": "Click"}


class Postmark(Provider):
    name = "postmark"
    secret = SECRET
    wrappers = tuple(_WRAPPERS)

    def verify(self, request: WebhookRequest, config: WebhookConfig) -> Nonce | None:
        """Raise :class:`~relmail.errors.SignatureError` unless the request carries the configured credentials."""
        check_basic_auth(request, config, self.name, SECRET, DEFAULT_USERNAME)
        return None

    def webhook_records(self, request: WebhookRequest, config: WebhookConfig) -> list[Record]:
        return [Record(0, parse_json_body(request.body, "postmark webhook"))]

    def stream_scope(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        """``scope``, ``topics`` and ``detail`` of an unsubscribe on the record's stream; None: not relmail's stream.

        Without ``[delivery.postmark] message_stream`` or ``streams``, events may
        come from mail an earlier setup sent on any stream, and an opt-out too
        many is the safe side: every topic.
        """
        stream = record.get("MessageStream")
        streams = Streams.from_config(self.delivery)
        if not stream or not streams.configured:
            return {"scope": "all"}
        topics = streams.topics_of(str(stream))
        if topics is None:
            return None
        if topics == ("*",):
            return {"scope": "all", "detail": f"unsubscribed from Postmark stream '{stream}', every topic"}
        return {"scope": "topic", "topics": topics, "detail": f"unsubscribed from Postmark stream '{stream}'"}

    def kind(self, record: Mapping[str, Any]) -> str:
        kind = record.get("RecordType") or _WRAPPERS.get(str(record.get("__wrapper__"))) or "unknown"
        return f"{kind}/{record['Type']}" if kind in ("Bounce", "SpamComplaint") and record.get("Type") else str(kind)

    def parse_event(self, record: Mapping[str, Any]) -> list[FeedbackEvent]:
        """One Postmark webhook object (or API record) as relmail events."""
        kind = text(record, "RecordType", required=False) or _WRAPPERS.get(str(record.get("__wrapper__")))
        if kind is None:
            raise FieldError("RecordType", "is missing")
        message = text(record, "MessageID", required=False)
        url = None
        if kind == "Delivery":
            normalized, when = "delivered", self.time(record, "DeliveredAt")
            recipient = text(record, "Recipient")
            event_id = derived_id(message, recipient, kind)
        elif kind in ("Bounce", "SpamComplaint"):
            bounce_type = text(record, "Type")
            if bounce_type not in BOUNCE_TYPES:
                raise FieldError("Type", f"unknown bounce type {bounce_type!r}")
            normalized = BOUNCE_TYPES[bounce_type]
            if normalized is None:
                return []
            if normalized == "bounced_soft":
                normalized = soft_or_blocked(str(record.get("Details") or ""), str(record.get("Description") or ""))
            when, recipient = self.time(record, "BouncedAt"), text(record, "Email")
            event_id = f"{kind}:{text(record, 'ID')}"
        elif kind in ("Open", "Click"):
            normalized = "opened" if kind == "Open" else "clicked"
            when, recipient = self.time(record, "ReceivedAt"), text(record, "Recipient")
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
            when, recipient = self.time(record, "ChangedAt"), text(record, "Recipient")
            event_id = derived_id(message, recipient, kind, record.get("ChangedAt"))
        else:  # Inbound and anything newer
            return []
        scope = self.stream_scope(record) if normalized == "unsubscribed" else {"scope": "all"}
        if scope is None:
            return []
        reason = record.get("Description") or record.get("Details") or record.get("SuppressionReason")
        return [
            FeedbackEvent(
                type=normalized,
                occurred_at=when,
                recipient=recipient,
                provider=self.name,
                provider_event_id=event_id,
                **relmail_ids(obj(record, "Metadata", required=False)),
                **scope,
                reason=str(reason) if reason else None,
                url=url,
                esp_event={k: v for k, v in record.items() if k != "__wrapper__"},
            )
        ]
