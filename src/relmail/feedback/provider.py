"""One interface for every ESP's feedback: verify, read, parse (django-anymail style).

A provider (:mod:`.sendgrid`, :mod:`.mailgun`, :mod:`.postmark`, :mod:`.ses`, :mod:`.brevo`, :mod:`.mailjet`,
:mod:`.mandrill`)
is a :class:`Provider` subclass that fills in three hooks:

- :meth:`Provider.verify`: check a webhook POST's signature or credentials
  (raising :class:`~relmail.errors.SignatureError`); returns the replay
  token to remember, for providers whose signature does not cover the body;
- :meth:`Provider.webhook_records`: the events of a verified POST body;
- :meth:`Provider.parse_event`: one provider event as relmail events
  (``[]`` for kinds relmail does not track), raising :class:`.FieldError`
  for a missing or bad field.

The base class turns these into :meth:`Provider.receive` (a webhook POST)
and :meth:`Provider.read_export` (an exported file), both partial: every
valid event is kept, every invalid one becomes an :class:`.InvalidEvent`
with its position, reason and the provider's raw event, so one odd event
never costs the others (:func:`relmail.feedback.ingest.ingest` applies the
first and records the second).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from .. import timestamps
from ..windows import current_time
from .events import FeedbackEvent
from .records import FieldError, InvalidEvent, Record, read_records
from .webhook import WebhookConfig, WebhookRequest

#: How the count of ignored events names clicks on relmail's own unsubscribe and preference links.
OWN_LINK_CLICK = "click on the unsubscribe or preference link"


@dataclass(frozen=True)
class Nonce:
    """A signed one-time value (Mailgun's ``token``) that must not be accepted twice.

    ``digest`` is the SHA-256 of the body it came with: the provider's own
    redelivery of the same body is a duplicate, any other body a replay.
    """

    provider: str
    token: str
    #: When the signed timestamp leaves the replay window (the token can be forgotten then).
    expires_at: datetime
    digest: str


@dataclass
class Batch:
    """What one webhook POST or export file held: the valid events and the invalid ones."""

    provider: str
    #: ``"webhook"`` or the export file's path: where the invalid events were found.
    source: str
    events: list[FeedbackEvent] = field(default_factory=list)
    invalid: list[InvalidEvent] = field(default_factory=list)
    #: Provider events relmail does not track, by the provider's kind (``processed``, ``Send`` ...).
    ignored: Counter = field(default_factory=Counter)
    #: The replay token to remember with the events (Mailgun webhooks).
    nonce: Nonce | None = None
    #: How many provider events the POST or file held.
    records: int = 0


class Provider(ABC):
    """Base of the feedback providers; see the module docstring."""

    #: Registry name (``relmail feedback import --format NAME``, ``/webhooks/NAME``).
    name: ClassVar[str] = ""
    #: The secret the webhook needs (for messages and docs).
    secret: ClassVar[str] = ""
    #: Keys of a JSON export page whose array holds the records (Mailgun ``items``).
    wrappers: ClassVar[tuple[str, ...]] = ()
    #: Whether the provider checks a new webhook's URL with a HEAD request, which must be answered 200 (Mandrill).
    answers_head: ClassVar[bool] = False

    def __init__(self, now: Callable[[], datetime] | None = None, delivery: Mapping[str, Any] | None = None,
                 links: str = ""):
        #: The clock the plausibility of event times is judged against.
        self.now = now or current_time
        #: ``[unsubscribe] base_url``: where relmail's own unsubscribe and preference links point.
        self.links = links
        #: The project's ``[delivery.<name>]`` table: the ESP's subscription scopes (SendGrid's groups,
        #: Postmark's stream); empty without a project.
        self.delivery = dict(delivery or {})

    # -- the hooks -----------------------------------------------------------

    @abstractmethod
    def verify(self, request: WebhookRequest, config: WebhookConfig) -> Nonce | None:
        """Raise :class:`~relmail.errors.SignatureError` unless the provider sent this request."""

    @abstractmethod
    def webhook_records(self, request: WebhookRequest, config: WebhookConfig) -> list[Record]:
        """The events of a verified POST body (a malformed body is a :class:`ValidationError`)."""

    @abstractmethod
    def parse_event(self, record: Mapping[str, Any]) -> list[FeedbackEvent]:
        """One provider event as relmail events; :class:`.FieldError` names a bad field."""

    def check_ready(self, config: WebhookConfig) -> None:
        """Raise :class:`~relmail.errors.ConfigError` when the webhook would refuse every request (its secret unset)."""
        if self.secret:
            config.secret(self.secret)

    # -- built on the hooks ----------------------------------------------------

    def receive(self, request: WebhookRequest, config: WebhookConfig) -> Batch:
        """Verify a webhook POST and read its events: the valid ones and the invalid ones."""
        nonce = self.verify(request, config)
        batch = self.parse_records(self.webhook_records(request, config), "webhook")
        batch.nonce = nonce
        return batch

    def read_export(self, path: str | Path) -> Batch:
        """The events of an export file (JSON, JSON Lines, CSV, gzip-compressed or not)."""
        return self.parse_records(read_records(Path(path), self.wrappers), str(path))

    def parse_records(self, records: Iterable[Record], source: str) -> Batch:
        """Parse each record on its own: one bad event never drops the others."""
        batch = Batch(self.name, source)
        count = 0
        for record in records:
            count += 1
            value = record.value
            raw = {k: v for k, v in value.items() if k != "__wrapper__"} if isinstance(value, dict) else value
            if not isinstance(value, dict):
                batch.invalid.append(InvalidEvent(record.index, None, f"expected a JSON object, got {type(value).__name__}", raw, record.line))
                continue
            try:
                events = self.parse_event(value)
            except FieldError as exc:
                batch.invalid.append(InvalidEvent(record.index, exc.field, exc.message, raw, record.line))
                continue
            except ValueError as exc:
                batch.invalid.append(InvalidEvent(record.index, None, str(exc), raw, record.line))
                continue
            if not events:
                batch.ignored[self.kind(value)] += 1
            elif own := [e for e in events if self.own_link_click(e)]:
                # An ESP's click tracking rewrites every link, relmail's unsubscribe link too: leaving is not
                # engagement, and counted as a click it would read as interest in the report and the model.
                batch.ignored[OWN_LINK_CLICK] += len(own)
                events = [e for e in events if e not in own]
            batch.events.extend(events)
        batch.records = count
        return batch

    def own_link_click(self, event: FeedbackEvent) -> bool:
        """Whether ``event`` is a click on one of relmail's unsubscribe or preference links (under ``links``)."""
        if event.type != "clicked" or not event.url or not self.links:
            return False
        link, base = urlsplit(event.url), urlsplit(self.links)
        if (link.hostname or "").lower() != (base.hostname or "").lower():
            return False
        root = base.path.rstrip("/")
        return link.path.startswith((f"{root}/unsubscribe/", f"{root}/preferences/"))

    def kind(self, record: Mapping[str, Any]) -> str:
        """The provider's name for the kind of ``record`` (for the count of ignored events)."""
        return "unknown"

    # -- helpers for subclasses ---------------------------------------------------

    def time(self, record: Mapping[str, Any], key: str) -> datetime:
        """Field ``key`` as a plausible time: Unix seconds or milliseconds, or ISO 8601 with an offset."""
        value = record.get(key)
        if value is None or value == "":
            raise FieldError(key, "is missing")
        try:
            when = timestamps.parse(value)
            why = timestamps.implausible(when, self.now())
        except (TypeError, ValueError, OverflowError, OSError) as exc:
            raise FieldError(
                key, f"expected Unix seconds or milliseconds, or an ISO 8601 time with a UTC offset; got {value!r} ({exc})"
            ) from None
        if why:
            raise FieldError(key, f"implausible time: {why}")
        return when
