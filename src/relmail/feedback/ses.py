"""Amazon SES events through Amazon SNS: SNS signature and event mapping.

SES publishes events (configuration-set event publishing, or the older
identity notifications) to an SNS topic, and SNS POSTs them to
``/webhooks/ses``. Every SNS message is signed with RSA: SignatureVersion 1
over SHA-1, 2 over SHA-256, of a canonical "Key\\nValue\\n" string. The
certificate is fetched from ``SigningCertURL``, which relmail accepts only
over https from ``sns.<region>.amazonaws.com`` (the TLS connection to an
Amazon host is what vouches for it), and caches. Only topics listed in
``[feedback.ses] topic_arns`` are accepted; a ``SubscriptionConfirmation``
for such a topic is confirmed by a GET to its ``SubscribeURL``.

relmail's metadata travels as SES message tags (``mail.tags``, lists of
values). Identity notifications (bounces and complaints SNS sends for the
identity, not through a configuration set) carry no tags: their
``mail.messageId``, the id SES answered the send with, finds the delivery
relmail recorded it on, and only an id relmail never recorded falls back to
the recipient's address. Raw message delivery is not supported: it drops
the signature.

Bounce kinds follow SES's bounce types: ``Permanent`` is a hard bounce;
``Transient`` ``ContentRejected``, ``AttachmentRejected`` and
``MessageTooLarge`` refuse the message, not the mailbox, and are blocks
(:mod:`.blocks`), as is any other ``Transient`` or ``Undetermined`` bounce
whose recipient status is about the sender or message (``5.7.1``); the
rest of them are soft.

Export files: JSON Lines (one SES event per line, as Kinesis Firehose
writes them to S3), a JSON array, or either of these holding SNS envelopes.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..delivery.ses import decode_tag
from ..errors import ConfigError, SignatureError
from .blocks import BLOCKED, soft_or_blocked
from .events import FeedbackEvent, derived_id, relmail_ids
from .provider import Nonce, Provider
from .records import FieldError, Record, obj, parse_json_body, text
from .webhook import MissingCredentials, ProviderRefused, ProviderUnreachable, WebhookConfig, WebhookRequest

log = logging.getLogger(__name__)

NAME = "ses"
_SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SUBSCRIPTION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")

#: ``Transient`` bounce subtypes that refuse this message (content, attachment, size), not the mailbox.
MESSAGE_REFUSED = ("ContentRejected", "AttachmentRejected", "MessageTooLarge")

_cert_cache: dict[str, Any] = {}
_cert_lock = threading.Lock()
_CACHE_SIZE = 16


def clear_certificate_cache() -> None:
    with _cert_lock:
        _cert_cache.clear()


def check_sns_url(url: str, field: str) -> str:
    """``url`` if it is https on an SNS host, else :class:`SignatureError`."""
    try:
        parts = urlsplit(url or "")
        port = parts.port
    except ValueError:  # a port that is no number, a broken IPv6 address: anyone can send one
        port = -1
    if port == -1 or parts.scheme != "https" or not _SNS_HOST.match(parts.hostname or "") or port not in (None, 443):
        # The URL is the sender's text (anyone can post one, a SubscribeURL carries a secret token): the
        # answer and the log name the shape it lacks, never the URL.
        raise SignatureError(f"ses: {field} is not an https URL on sns.<region>.amazonaws.com (port 443)")
    return url


def string_to_sign(envelope: Mapping[str, Any]) -> bytes:
    """SNS's canonical text: the signed keys in order, each as ``Key\\nValue\\n``."""
    kind = envelope.get("Type")
    keys = _NOTIFICATION_KEYS if kind == "Notification" else _SUBSCRIPTION_KEYS
    out = []
    for key in keys:
        if key in envelope and envelope[key] is not None:
            out.append(f"{key}\n{envelope[key]}\n")
        elif key != "Subject":
            raise SignatureError(f"ses: SNS message lacks signed field {key!r}")
    return "".join(out).encode("utf-8")


def _public_key(url: str, config: WebhookConfig):
    from cryptography import x509

    with _cert_lock:
        key = _cert_cache.get(url)
    if key is not None:
        return key
    try:
        cert = x509.load_pem_x509_certificate(config.http_get(url))
    except ValueError as exc:
        raise SignatureError(f"ses: the signing certificate on {urlsplit(url).hostname} is not a PEM certificate: {exc}") from None
    except ProviderUnreachable as exc:
        # Answered 503: SNS sends the message again, where a 403 would make it drop it.
        raise ProviderUnreachable(f"ses: cannot fetch the signing certificate: {exc}") from None
    except ProviderRefused as exc:  # the SNS host has no such certificate
        raise SignatureError(f"ses: cannot fetch the signing certificate: {exc}") from None  # names the host only
    key = cert.public_key()
    with _cert_lock:
        if len(_cert_cache) >= _CACHE_SIZE:
            _cert_cache.pop(next(iter(_cert_cache)))
        _cert_cache[url] = key
    return key


def _recipients(items: Any, field: str) -> list[str]:
    if not isinstance(items, list) or not items:
        raise FieldError(field, "must be a non-empty list")
    out = []
    for item in items:
        address = item.get("emailAddress") if isinstance(item, dict) else item
        if not isinstance(address, str) or not address:
            raise FieldError(field, "holds an entry without an e-mail address")
        out.append(address)
    return out


def _unwrap(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The SES event inside an SNS envelope (as exports of webhook bodies hold them), or the record itself."""
    if record.get("Type") == "Notification" and isinstance(record.get("Message"), str):
        try:
            record = json.loads(record["Message"])
        except (json.JSONDecodeError, RecursionError):
            raise FieldError("Message", "is not a JSON SES event") from None
        if not isinstance(record, dict):
            raise FieldError("Message", "is not a JSON object")
    return record


def _envelope(request: WebhookRequest) -> dict:
    return parse_json_body(request.body, "ses webhook", shape="a JSON object (an SNS message)")


class Ses(Provider):
    name = NAME

    def verify(self, request: WebhookRequest, config: WebhookConfig) -> Nonce | None:
        """Raise :class:`SignatureError` unless SNS signed this message for a configured topic."""
        self.verify_envelope(_envelope(request), config)
        return None  # SNS signs the whole message

    def check_ready(self, config: WebhookConfig) -> None:
        _topics(config)

    def verify_envelope(self, envelope: Mapping[str, Any], config: WebhookConfig) -> None:
        """Raise :class:`SignatureError` unless SNS signed this message for a configured topic."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        topics = _topics(config)
        if not envelope.get("Signature") or not envelope.get("SigningCertURL"):
            raise MissingCredentials("ses: SNS message has no Signature or SigningCertURL")
        version = str(envelope.get("SignatureVersion", ""))
        algorithms = {"1": hashes.SHA1, "2": hashes.SHA256}
        if version not in algorithms:
            raise SignatureError(f"ses: unsupported SignatureVersion {version!r}")
        key = _public_key(check_sns_url(str(envelope["SigningCertURL"]), "SigningCertURL"), config)
        try:
            signature = base64.b64decode(str(envelope["Signature"]), validate=True)
            key.verify(signature, string_to_sign(envelope), padding.PKCS1v15(), algorithms[version]())
        except (InvalidSignature, binascii.Error, ValueError, TypeError):
            raise SignatureError("ses: SNS signature does not match") from None
        # After the signature, so the ARN we compare is one SNS vouched for.
        if envelope.get("TopicArn") not in topics:
            raise SignatureError(f"ses: topic {envelope.get('TopicArn')!r} is not in [feedback.ses] topic_arns")

    def webhook_records(self, request: WebhookRequest, config: WebhookConfig) -> list[Record]:
        """A notification's SES event; a subscription confirmation is confirmed (and has none)."""
        envelope = _envelope(request)
        kind = envelope.get("Type")
        if kind == "SubscriptionConfirmation":
            # Only now (signed by SNS, for our topic) do we follow the URL.
            topic = envelope.get("TopicArn")
            url = check_sns_url(str(envelope.get("SubscribeURL")), "SubscribeURL")
            try:
                config.http_get(url)
            except (ProviderUnreachable, ProviderRefused) as exc:
                # 503 (even for a 4xx): SNS sends the confirmation again, and the log says why the
                # topic is not confirmed yet. The message names the host only (see webhook._fetch).
                raise ProviderUnreachable(f"ses: could not confirm the subscription to {topic}: {exc}") from None
            log.info("ses: confirmed the SNS subscription to %s", topic)
            return []
        if kind == "Notification":
            return [Record(0, envelope)]
        return []  # UnsubscribeConfirmation: nothing to do

    def kind(self, record: Mapping[str, Any]) -> str:
        try:
            record = _unwrap(record)
        except FieldError:
            return "unknown"
        return str(record.get("eventType") or record.get("notificationType") or "unknown")

    def parse_event(self, record: Mapping[str, Any]) -> list[FeedbackEvent]:
        """One SES event (or an SNS envelope holding one) as relmail events."""
        record = _unwrap(record)
        kind = text(record, "eventType", required=False) or text(record, "notificationType", required=False)
        if kind is None:
            raise FieldError("eventType", "is missing")
        mail = obj(record, "mail")
        message = text(mail, "messageId")
        tags = obj(mail, "tags", required=False)
        if tags:
            # The SES adapter encodes values into the characters SES allows.
            tags = {k: [decode_tag(str(x)) for x in (v if isinstance(v, list) else [v])] for k, v in tags.items()}

        ids = relmail_ids(tags)

        def make(normalized, when_of, recipient, event_id, reason=None, url=None, scope="all", topic=None):
            return FeedbackEvent(
                type=normalized, occurred_at=self.time(when_of, "timestamp"), recipient=recipient, provider=NAME,
                provider_event_id=event_id, **ids, reason=reason, url=url, scope=scope, topic=topic, sent_id=message,
                esp_event=dict(record),
            )

        if kind == "Bounce":
            bounce = obj(record, "bounce")
            bounce_type, subtype = text(bounce, "bounceType"), bounce.get("bounceSubType")
            feedback = text(bounce, "feedbackId")
            items = bounce.get("bouncedRecipients")
            found = {i.get("emailAddress"): i for i in items or [] if isinstance(i, dict)}

            def bounced(recipient: str) -> str:
                if bounce_type == "Permanent":
                    return "bounced_hard"
                if bounce_type == "Transient" and subtype in MESSAGE_REFUSED:
                    return BLOCKED
                item = found.get(recipient, {})
                return soft_or_blocked(item.get("status"), item.get("diagnosticCode"))

            return [make(bounced(r), bounce, r, derived_id(feedback, r), found.get(r, {}).get("diagnosticCode") or subtype)
                    for r in _recipients(items, "bounce.bouncedRecipients")]
        if kind == "Complaint":
            complaint = obj(record, "complaint")
            feedback = text(complaint, "feedbackId")
            reason = complaint.get("complaintFeedbackType")
            return [make("complained", complaint, r, derived_id(feedback, r), reason)
                    for r in _recipients(complaint.get("complainedRecipients"), "complaint.complainedRecipients")]
        if kind == "Delivery":
            delivery = obj(record, "delivery")
            return [make("delivered", delivery, r, derived_id(message, "Delivery", r), delivery.get("smtpResponse"))
                    for r in _recipients(delivery.get("recipients"), "delivery.recipients")]
        if kind in ("Open", "Click"):
            detail = obj(record, kind.lower())
            url = text(detail, "link", required=kind == "Click")
            normalized = "opened" if kind == "Open" else "clicked"
            return [make(normalized, detail, r, derived_id(message, kind, r, detail.get("timestamp"), url), url=url)
                    for r in _recipients(mail.get("destination"), "mail.destination")]
        if kind == "Subscription":
            sub = obj(record, "subscription")
            prefs = obj(sub, "newTopicPreferences")
            recipients = _recipients(mail.get("destination"), "mail.destination")
            if prefs.get("unsubscribeAll") is True:
                return [make("unsubscribed", sub, r, derived_id(message, kind, r, "*")) for r in recipients]
            left = [t.get("topicName") for t in prefs.get("topicSubscriptionStatus") or []
                    if isinstance(t, dict) and t.get("subscriptionStatus") == "OptOut" and t.get("topicName")]
            return [make("unsubscribed", sub, r, derived_id(message, kind, r, t), scope="topic", topic=t)
                    for r in recipients for t in left]
        return []  # Send, Reject, DeliveryDelay, Rendering Failure


def _topics(config: WebhookConfig) -> list[str]:
    """The SNS topics ``[feedback.ses] topic_arns`` accepts; none set is a :class:`ConfigError`."""
    topics = config.provider_settings(NAME).get("topic_arns", [])
    if isinstance(topics, str):
        topics = [topics]
    if not topics:
        raise ConfigError("relmail.toml [feedback.ses] topic_arns is not set; the SES endpoint refuses every message")
    return topics
