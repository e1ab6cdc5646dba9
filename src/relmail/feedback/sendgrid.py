"""SendGrid (Twilio) Event Webhook: ECDSA signature and event mapping.

SendGrid signs ``timestamp + raw body`` with ECDSA P-256/SHA-256 and sends
the base64 DER signature in ``X-Twilio-Email-Event-Webhook-Signature`` and
the timestamp in ``X-Twilio-Email-Event-Webhook-Timestamp``; the public key
is shown under Mail Settings (base64 DER, or PEM) and read from the secret
``sendgrid_webhook_public_key``. The body is a JSON array of events; the
``custom_args`` relmail attached appear as top-level keys of each event.

Unsubscribe groups: a ``group_unsubscribe`` or ``group_resubscribe`` names
the group in ``asm_group_id``, which is not always the group of the message
it came from (SendGrid's preference page shows every group in
``groups_to_display``). The project's ``[delivery.sendgrid]`` groups
(:class:`relmail.delivery.sendgrid.Groups`) say which topics that group
covers, or that it is the global one (every topic); a group the project does
not list falls back to the message's topic.

Export files: the webhook's own shape, as a JSON array or JSON Lines (one
event per line, as webhook archives are kept), or CSV whose header uses the
same field names (``email,timestamp,event,sg_event_id,...``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from .. import timestamps
from ..delivery.sendgrid import Groups
from ..errors import ConfigError, SignatureError
from .events import RESUBSCRIBED, FeedbackEvent, relmail_ids
from .provider import Nonce, Provider
from .records import FieldError, Record, parse_json_body, text
from .webhook import MissingCredentials, WebhookConfig, WebhookRequest

SECRET = "sendgrid_webhook_public_key"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

#: SendGrid's documented ``dropped`` reasons, matched exactly (case and
#: surrounding space aside). Only the ones about the address say anything
#: about the recipient; "Invalid SMTPAPI header", "Spam Content" and
#: "Recipient List over Package Quota" are about our request or account.
DROPPED = {
    "bounced address": "bounced_hard",
    "invalid": "bounced_hard",
    "unsubscribed address": "unsubscribed",
    "spam reporting address": "complained",
    "invalid smtpapi header": None,
    "spam content": None,
    "recipient list over package quota": None,
}


#: SendGrid's ``bounce_classification`` values that blame the sender or the message, not the
#: address, and those that blame the mailbox (the others: Technical Failure, Unclassified).
SENDER_CLASSIFICATIONS = ("content", "reputation", "frequency or volume too high")
MAILBOX_CLASSIFICATIONS = ("mailbox unavailable", "invalid address")


def load_public_key(value: str):
    """The ECDSA public key from SendGrid's base64 DER text, or from PEM."""
    from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

    try:
        if "BEGIN PUBLIC KEY" in value:
            return load_pem_public_key(value.encode())
        return load_der_public_key(base64.b64decode(value.strip()))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ConfigError(f"secret '{SECRET}' is not an ECDSA public key: {exc}") from None


def dropped_type(reason: str | None) -> str | None:
    """The relmail type of a ``dropped`` event with this reason (None: not about the recipient)."""
    key = " ".join((reason or "").split()).lower()
    # "Spam Content (if Spam Checker app is enabled)" is how the list names it.
    return DROPPED.get(key.split(" (")[0]) if key else None


class SendGrid(Provider):
    name = "sendgrid"
    secret = SECRET

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.groups = Groups.from_config(self.delivery)

    def group_scope(self, event: Mapping[str, Any], kind: str) -> dict[str, Any]:
        """``scope``, ``topics`` and ``detail`` of a group (un)subscribe, from the group it names."""
        group_id = _group_id(event)
        group = self.groups.get(group_id)
        verb, rest = {"group_resubscribe": ("resubscribed to", ""), "dropped": ("on the unsubscribe list of", " or the global one")
                      }.get(kind, ("unsubscribed from", ""))
        if group is None:
            # A group the project does not list: the message's own topic is all relmail knows.
            what = f"SendGrid group {group_id}" if group_id is not None else "a SendGrid group"
            return {"scope": "topic", "detail": f"{verb} {what}{rest}, not in [delivery.sendgrid] asm_groups"}
        if group.everything:
            return {"scope": "all", "detail": f"{verb} {group}, every topic"}
        return {"scope": "topic", "topics": group.topics, "detail": f"{verb} {group}{rest}"}

    def dropped_scope(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """``scope``, ``topics``/``lists`` and ``detail`` of a ``dropped`` "Unsubscribed Address".

        SendGrid does not say which list holds the address: the group the e-mail
        went with, or the global one. The sound minimum is the group's topics (a
        global unsubscribe shows up as drops in the other groups too). The event's
        ``asm_group_id`` names the group; without it, the group of the e-mail's
        topic (resolved when the feedback is applied). Without groups, SendGrid's
        unsubscribe is its global list: every topic.
        """
        if _group_id(event) is not None:
            scope = self.group_scope(event, "dropped")
            return {**scope, "detail": f"dropped by SendGrid: {scope['detail']}"}
        if not self.groups:
            return {"scope": "all", "detail": "dropped by SendGrid: on its global unsubscribe list"}
        lists = tuple(g.topics for g in self.groups.by_id.values())
        return {"scope": "topic", "lists": lists,
                "detail": "dropped by SendGrid: on the unsubscribe list of its topic's group or the global one"}

    def check_ready(self, config: WebhookConfig) -> None:
        load_public_key(config.secret(SECRET))

    def verify(self, request: WebhookRequest, config: WebhookConfig) -> Nonce | None:
        """Raise :class:`SignatureError` unless SendGrid signed this body recently."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        key = load_public_key(config.secret(SECRET))
        signature, timestamp = request.header(SIGNATURE_HEADER), request.header(TIMESTAMP_HEADER)
        if not signature or not timestamp:
            raise MissingCredentials(f"sendgrid: missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER} header")
        try:
            signed_at = timestamps.from_unix(timestamp)
            raw = base64.b64decode(signature, validate=True)
            key.verify(raw, timestamp.encode() + request.body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError, binascii.Error, OverflowError, OSError):
            raise SignatureError(f"sendgrid: signature does not match (is {config.held_in(SECRET)} the verification key "
                                 "SendGrid shows for this Event Webhook, and does a proxy pass the body on unchanged?)") from None
        # Freshness after the signature: a forged timestamp is a forgery first.
        config.check_fresh(signed_at, self.name)
        return None  # the signature covers the body: a replay can only repeat it

    def webhook_records(self, request: WebhookRequest, config: WebhookConfig) -> list[Record]:
        body = parse_json_body(request.body, "sendgrid webhook", list, "a JSON array of events")
        return [Record(i, event) for i, event in enumerate(body)]

    def kind(self, record: Mapping[str, Any]) -> str:
        return str(record.get("event") or "unknown")

    def parse_event(self, event: Mapping[str, Any]) -> list[FeedbackEvent]:
        """One SendGrid event as relmail events ([] for kinds relmail does not track)."""
        kind = text(event, "event")
        reason = text(event, "reason", required=False) or text(event, "response", required=False)
        if kind == "delivered":
            normalized = "delivered"
        elif kind == "bounce":
            # ``type`` is "bounce" (permanent) or "blocked": SendGrid's block is a refusal of the message
            # or the sender (an IP on a block list, a content filter), not of the address, as is a bounce
            # SendGrid classifies as Content, Reputation or Frequency or Volume Too High. A block that
            # SendGrid classifies as the mailbox's (full, unavailable) is a soft bounce.
            classification = str(event.get("bounce_classification") or "").strip().lower()
            if classification in SENDER_CLASSIFICATIONS:
                normalized = "bounced_blocked"
            elif event.get("type") == "blocked":
                normalized = "bounced_soft" if classification in MAILBOX_CLASSIFICATIONS else "bounced_blocked"
            else:
                normalized = "bounced_hard"
        elif kind == "dropped":
            normalized = dropped_type(reason)
        elif kind == "open":
            # Apple Mail Privacy Protection pre-fetches images: a machine open is
            # not the customer's engagement and would fake it in every feature.
            normalized = None if str(event.get("sg_machine_open", "")).lower() == "true" else "opened"
        elif kind == "click":
            normalized = "clicked"
        elif kind == "spamreport":
            normalized = "complained"
        elif kind in ("unsubscribe", "group_unsubscribe"):
            normalized = "unsubscribed"
        elif kind == "group_resubscribe":
            # The customer's own choice on SendGrid's preference page; a group the project does not list
            # re-opts nothing in (relmail cannot tell what it covers).
            normalized = RESUBSCRIBED if self.groups.get(_group_id(event)) is not None else None
        else:  # processed, deferred, account events
            normalized = None
        if normalized is None:
            return []
        if kind.startswith("group_"):
            scope = self.group_scope(event, kind)
        elif kind == "dropped" and normalized == "unsubscribed":
            scope = self.dropped_scope(event)
        else:
            scope = {"scope": "all"}
        return [
            FeedbackEvent(
                type=normalized,
                occurred_at=self.time(event, "timestamp"),
                recipient=text(event, "email"),
                provider=self.name,
                provider_event_id=text(event, "sg_event_id"),
                **relmail_ids(event),
                **scope,
                reason=reason,
                url=text(event, "url", required=False),
                esp_event=dict(event),
            )
        ]


def _group_id(event: Mapping[str, Any]) -> int | None:
    """The event's ``asm_group_id`` (None when absent); a value that is no id is a :class:`FieldError`."""
    raw = event.get("asm_group_id")
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise FieldError("asm_group_id", f"expected a group id, got {raw!r}") from None
