"""Mailchimp Transactional (Mandrill) webhooks: the ``X-Mandrill-Signature`` and event mapping.

Mandrill POSTs ``application/x-www-form-urlencoded`` with one field,
``mandrill_events``: a JSON array of up to 1,000 events. It signs each POST
with ``X-Mandrill-Signature``: base64 of the HMAC-SHA1, keyed with the
webhook's key (the secret ``mandrill_webhook_key``), of the webhook's URL
exactly as it was entered in Mandrill followed by every POST field's name
and value, sorted by name. Behind a proxy the URL the request reaches
differs from that one, so relmail signs with the configured URL:
``[feedback.mandrill] url``, else ``[unsubscribe] base_url`` +
``/webhooks/mandrill`` (the public address ``relmail serve`` is reached at).
The signature covers the whole body; it carries no time, so a replay can
only repeat events, which de-duplicate.

Adding a webhook, Mandrill checks the URL with a HEAD request (answered 200
by ``relmail serve``) and, failing that, a POST with an empty
``mandrill_events`` signed with the key ``test-webhook``: accepted, nothing
is written. The webhook's own key exists only once the webhook does.

Message events (``event``, ``ts``, ``_id``, ``msg``): ``_id`` is the id of
the e-mail, the one the send answered with (:mod:`relmail.delivery.mandrill`),
which finds its delivery; ``msg.metadata`` holds the relmail ids the send
put in ``X-MC-Metadata``, which name the customer, run and message outright;
failing both, ``msg.email``, the recipient, finds the customer. ``msg`` may be
empty (Mandrill says so for an open or click of an e-mail older than 30 days,
or not yet indexed): such an event is read by its ``_id`` alone.

- ``send`` (Mandrill sent it) and ``delivered`` (the receiving server said
  it took it): delivered, once per e-mail whichever comes first;
- ``hard_bounce``: a hard bounce, unless the receiving server's status in
  ``msg.diag`` is about the sender or the message (``5.7.1``): a block
  (:mod:`.blocks`); ``soft_bounce``: soft, or a block by the same rule;
- ``spam``: complained; ``unsub``: unsubscribed from everything (Mandrill's
  unsubscribe covers the whole account, not one of relmail's topics);
- ``open`` and ``click``: opened and clicked;
- ``reject``: Mandrill did not send (its denylist, a rule, the sender):
  stored as a block, read by no rule; the bounce, complaint or unsubscribe
  that put an address on the denylist came as its own event, and a refusal
  at send time is recorded by the send itself;
- ``deferral`` (Mandrill retries) is ignored and counted.

Sync events (``type`` ``blacklist`` or ``whitelist`` with ``action`` and
``reject``; ``denylist`` and ``allowlist``, the lists' current names, are
read alike) report changes to Mandrill's denylist and allowlist, not to an
e-mail: ignored and counted, as are ``inbound`` messages.

Mandrill gives events no id of their own: each gets one derived from the
message, kind, time and URL (a delivery: from the message alone), so a
redelivered POST (Mandrill retries a failed one for about an hour) writes
nothing twice. relmail derived these ids differently before it read
``delivered`` (from ``msg._id`` first, and a ``send`` by its time): an event
stored under that older id counts as the same event, and a delivery stored
for an e-mail makes any later ``send`` or ``delivered`` of it a duplicate,
so a store upgraded in between records each e-mail's delivery once. Export files: saved ``mandrill_events`` arrays, as JSON or
JSON Lines (``relmail feedback import --format mandrill``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from ..errors import ConfigError, SignatureError
from .blocks import BLOCKED, sender_side, soft_or_blocked, status_in
from .events import FeedbackEvent, derived_id, relmail_ids
from .provider import Nonce, Provider
from .records import FieldError, Record, invalid, obj, parse_json_body, text
from .webhook import MissingCredentials, WebhookConfig, WebhookRequest

SECRET = "mandrill_webhook_key"
SIGNATURE_HEADER = "X-Mandrill-Signature"
FIELD = "mandrill_events"
#: The key Mandrill signs its URL check with, before the webhook (and its key) exists.
CHECK_KEY = "test-webhook"

#: Mandrill's message event -> relmail's type (None: ignored; see the module docstring).
EVENTS: dict[str, str | None] = {
    "send": "delivered",
    "delivered": "delivered",
    "hard_bounce": "bounced_hard",
    "soft_bounce": "bounced_soft",
    "spam": "complained",
    "unsub": "unsubscribed",
    "open": "opened",
    "click": "clicked",
    "reject": BLOCKED,
    "deferral": None,
    "inbound": None,
}


def signature(key: str, url: str, fields: Mapping[str, str]) -> str:
    """``X-Mandrill-Signature`` of a POST of ``fields`` to ``url``: base64(HMAC-SHA1(key, url + sorted names and values))."""
    signed = url + "".join(name + fields[name] for name in sorted(fields))
    return base64.b64encode(hmac.new(key.encode(), signed.encode("utf-8"), hashlib.sha1).digest()).decode("ascii")


def webhook_url(config: WebhookConfig) -> str:
    """The URL Mandrill signs: ``[feedback.mandrill] url``, else ``[unsubscribe] base_url`` + ``/webhooks/mandrill``."""
    url = config.provider_settings("mandrill").get("url")
    if url is not None and (not isinstance(url, str) or not url.startswith(("https://", "http://"))):
        raise ConfigError("relmail.toml [feedback.mandrill]: url must be the webhook's URL as entered in Mandrill (https://...)")
    if url:
        return url
    if not config.base_url:
        raise ConfigError("the Mandrill webhook needs its public URL: set [feedback.mandrill] url (as entered in Mandrill) "
                          "or [unsubscribe] base_url")
    return config.base_url.rstrip("/") + "/webhooks/mandrill"


def _fields(body: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError:
        raise invalid("mandrill webhook", "body is not UTF-8 form data") from None


#: ``type`` of a sync event: a change to Mandrill's lists, not to an e-mail.
SYNC_TYPES = ("blacklist", "whitelist", "denylist", "allowlist")

class Mandrill(Provider):
    name = "mandrill"
    secret = SECRET
    answers_head = True

    def verify(self, request: WebhookRequest, config: WebhookConfig) -> Nonce | None:
        """Raise :class:`SignatureError` unless ``X-Mandrill-Signature`` signs the configured URL and the POST fields."""
        given = (request.header(SIGNATURE_HEADER) or "").strip()
        if not given:
            raise MissingCredentials(f"mandrill: no {SIGNATURE_HEADER} header")
        fields, url = _fields(request.body), webhook_url(config)
        keys = [config.secret(SECRET)] if not _empty(fields) else [CHECK_KEY, *filter(None, [config.secret_lookup(SECRET)])]
        # As bytes: compare_digest refuses a str with a character outside ASCII, which anyone can send.
        if not any(hmac.compare_digest(given.encode(), signature(key, url, fields).encode()) for key in keys):
            raise SignatureError(f"mandrill: the signature does not match for {url} (the URL must be the one "
                                 "entered in Mandrill, the key its webhook's)")
        return None

    def webhook_records(self, request: WebhookRequest, config: WebhookConfig) -> list[Record]:
        fields = _fields(request.body)
        if FIELD not in fields:
            raise invalid("mandrill webhook", f"the form has no field {FIELD}")
        events = parse_json_body(fields[FIELD].encode("utf-8"), "mandrill webhook", list, "a JSON array of events", FIELD)
        return [Record(i, event) for i, event in enumerate(events)]

    def kind(self, record: Mapping[str, Any]) -> str:
        kind = record.get("event") or record.get("type")
        return kind if isinstance(kind, str) and kind else "unknown"

    def parse_event(self, record: Mapping[str, Any]) -> list[FeedbackEvent]:
        """One Mandrill event as relmail events ([] for kinds relmail does not track)."""
        if "event" not in record and record.get("type") in SYNC_TYPES:
            return []  # a sync event: Mandrill's lists changed, not an e-mail
        kind = text(record, "event")
        normalized = EVENTS.get(kind)
        if normalized is None:
            return []
        msg = obj(record, "msg")
        # The event's _id is documented as the id of the e-mail it is about, and is there when msg is empty.
        sent = text(record, "_id", required=False) or text(msg, "_id", required=False)
        recipient = text(msg, "email", required=not (sent and not msg))
        if recipient is not None and "@" not in recipient:
            raise FieldError("msg.email", f"expected an e-mail address, got {recipient[:80]!r}")
        recipient = recipient or ""
        when = self.time(record, "ts")
        diag = text(msg, "diag", required=False)
        if kind == "hard_bounce" and sender_side(status_in(diag, failures_only=True)):
            normalized = BLOCKED
        elif kind == "soft_bounce":
            normalized = soft_or_blocked(diag)
        url = text(record, "url") if kind == "click" else None
        reason = diag or text(msg, "bounce_description", required=False)
        # send and delivered both say the e-mail arrived: one id, so whichever comes second writes nothing.
        once = normalized == "delivered" and bool(sent)
        key = ("delivered", None) if once else (kind, int(when.timestamp()))
        return [
            FeedbackEvent(
                type=normalized,
                occurred_at=when,
                recipient=recipient,
                provider=self.name,
                provider_event_id=derived_id(sent, recipient.lower(), *key, url),
                former_ids=_former_ids(record, msg, kind, when, url),
                one_per_email=once,
                reason=reason,
                url=url,
                sent_id=sent,
                **relmail_ids(obj(msg, "metadata", required=False)),
                esp_event=dict(record),
            )
        ]


def _former_ids(record: Mapping[str, Any], msg: Mapping[str, Any], kind: str, when: datetime, url: str | None) -> tuple[str, ...]:
    """The id relmail derived for this event before it read ``delivered`` and preferred the event's ``_id``.

    Then every event needed ``msg.email``, took ``msg._id`` before the
    event's own ``_id`` (Mandrill's samples give them different values) and
    keyed a ``send`` by its time like any other kind; ``delivered`` was not
    read. A store written then holds its events under these ids.
    """
    try:
        recipient = text(msg, "email", required=False)
        sent = text(msg, "_id", required=False) or text(record, "_id", required=False)
    except FieldError:
        return ()  # such an event was invalid then: never stored
    if kind == "delivered" or recipient is None or "@" not in recipient:
        return ()
    return (derived_id(sent, recipient.lower(), kind, int(when.timestamp()), url),)


def _empty(fields: Mapping[str, str]) -> bool:
    """Whether the POST carries no event: Mandrill's check of a new webhook's URL."""
    return "".join(fields.get(FIELD, "").split()) == "[]"
