"""The delivery interface: a rendered message in, one precise result out.

Every adapter takes a batch of :class:`OutgoingMessage` and returns one
:class:`Result` per message, in the same order. Adapters never raise for a
per-message failure: a bounce, a temporary refusal or a lost connection is a
result. They raise :class:`~relmail.errors.DeliveryError` for configuration
problems found before anything is sent, :class:`~relmail.errors.UnsupportedFeature`
for what a provider cannot do (rather than silently dropping it), and
:class:`DeliveryAborted` when a provider refuses the account mid-batch (a
revoked key): that exception carries the results of every message, so a
caller never loses track of what was accepted before the stop.
"""

from __future__ import annotations

import contextlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formataddr
from typing import Any, ClassVar

from ..errors import DeliveryError
from .config import Config
from .idn import to_ascii
from .ratelimit import RateLimiter

ACCEPTED = "accepted"
DEFERRED = "deferred"
REJECTED = "rejected"
STATUSES = (ACCEPTED, DEFERRED, REJECTED)
#: The reason of a message not handed over because the send was stopped (:meth:`Adapter.stopped`).
STOPPED = "not sent: the send was stopped"

Clock = Callable[[], datetime]
Sleep = Callable[[float], None]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class OutgoingMessage:
    """One rendered e-mail for one recipient.

    ``raw`` is the complete RFC 5322 message the render stage built; SMTP,
    SES and the file adapter send exactly these bytes. The structured fields
    (subject, html, text, headers) are what API-based providers need; when
    ``raw`` is missing, :meth:`as_bytes` builds a MIME message from them.
    ``topic`` is the campaign message's consent topic: a provider with
    subscription scopes of its own (SendGrid's unsubscribe groups) sends the
    e-mail in the scope that covers it.
    """

    key: str
    to: str
    from_addr: str
    subject: str
    to_name: str | None = None
    from_name: str | None = None
    reply_to: str | None = None
    html: str | None = None
    text: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    topic: str | None = None

    def __post_init__(self) -> None:
        if not self.key:
            raise DeliveryError("OutgoingMessage.key must not be empty")
        if "@" not in self.to or "@" not in self.from_addr:
            raise DeliveryError(f"message {self.key}: 'to' and 'from_addr' must be e-mail addresses")
        if self.html is None and self.text is None and self.raw is None:
            raise DeliveryError(f"message {self.key}: needs html, text or raw content")
        # Tags arrive as lists from callers; a tuple keeps the dataclass hashable.
        object.__setattr__(self, "tags", tuple(self.tags))

    @property
    def message_id(self) -> str | None:
        """The Message-ID header, if the render stage set one."""
        return header(self.headers, "Message-ID")

    def as_bytes(self) -> bytes:
        """The message as RFC 5322 bytes with CRLF line endings."""
        if self.raw is not None:
            return to_crlf(self.raw)
        msg = EmailMessage()
        msg["From"] = formataddr((self.from_name or "", self.from_addr))
        msg["To"] = formataddr((self.to_name or "", self.to))
        msg["Subject"] = self.subject
        if self.reply_to:
            msg["Reply-To"] = self.reply_to
        for name, value in self.headers.items():
            msg[name] = value
        if self.text is not None:
            msg.set_content(self.text)
            if self.html is not None:
                msg.add_alternative(self.html, subtype="html")
        else:
            msg.set_content(self.html, subtype="html")
        return to_crlf(msg.as_bytes())


@dataclass(frozen=True)
class Result:
    """What happened to one message.

    ``status`` is ``accepted`` (the provider took responsibility; its id is
    ``provider_id``), ``deferred`` (try again at ``retry_at``) or ``rejected``
    (do not retry; ``hard_bounce`` marks a permanent recipient failure that
    should suppress the address). ``ambiguous`` marks a deferred message
    whose outcome is unknown: it was handed over completely but the
    provider's answer was lost, so it may have been accepted. Re-sending it
    risks a duplicate; the ledger decides. ``withheld`` marks a deferred
    message that was never handed over because the caller could not record
    its point of no return (:attr:`Adapter.on_commit` raised) or asked the
    send to stop (:attr:`Adapter.stopping`): nothing of it reached the
    provider, so it is as if it had not been tried. ``feedback`` is what a
    provider's refusal says the recipient did before (``complained``,
    ``unsubscribed``: Mandrill's denylist): the send records it as that
    provider's feedback event, as a webhook would.
    """

    key: str
    status: str
    provider_id: str | None = None
    retry_at: datetime | None = None
    reason: str = ""
    hard_bounce: bool = False
    smtp_code: int | None = None
    http_status: int | None = None
    ambiguous: bool = False
    withheld: bool = False
    feedback: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Result.status must be one of {STATUSES}, got {self.status!r}")
        if self.status == DEFERRED and (self.retry_at is None or self.retry_at.tzinfo is None):
            raise ValueError("a deferred Result needs a timezone-aware retry_at")

    @property
    def accepted(self) -> bool:
        return self.status == ACCEPTED

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "status": self.status,
            "provider_id": self.provider_id,
            "retry_at": self.retry_at.isoformat() if self.retry_at else None,
            "reason": self.reason,
            "hard_bounce": self.hard_bounce,
            "smtp_code": self.smtp_code,
            "http_status": self.http_status,
            "ambiguous": self.ambiguous,
            "withheld": self.withheld,
            "feedback": self.feedback,
        }


def accepted(key: str, provider_id: str | None, **kw: Any) -> Result:
    return Result(key, ACCEPTED, provider_id=provider_id, **kw)


def deferred(key: str, retry_at: datetime, reason: str, **kw: Any) -> Result:
    return Result(key, DEFERRED, retry_at=retry_at, reason=reason, **kw)


def rejected(key: str, reason: str, **kw: Any) -> Result:
    return Result(key, REJECTED, reason=reason, **kw)


class DeliveryAborted(DeliveryError):
    """The provider refused the account mid-batch (bad or revoked key, suspended sending).

    ``results`` holds one result per message of the batch, in order: those
    handled before the stop as they were, every other one ``deferred``.
    """

    def __init__(self, message: str, results: list[Result]):
        super().__init__(message)
        self.results = results


class Abort(Exception):
    """Raised inside an adapter to stop the batch; :meth:`Adapter.send` converts it."""

    def __init__(self, reason: str, http_status: int | None = None, partial: list[Result | None] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status
        #: Results of the current chunk known at the stop (``None`` = not handled).
        self.partial = partial


class Adapter(ABC):
    """A delivery channel. Subclasses implement :meth:`_send` for one chunk.

    ``config`` is the adapter's table from ``relmail.toml`` (with the shared
    ``[delivery]`` keys merged in); ``secret(name, required=True)`` reads a
    secret (normally :meth:`relmail.project.Project.secret`). ``clock`` and
    ``sleep`` are injectable so tests never wait.
    """

    #: Registry name (``[delivery] adapter = "..."``).
    name: ClassVar[str] = ""
    #: Most messages one provider request may carry (documented limit).
    max_batch: ClassVar[int] = 1000
    #: Config keys this adapter reads, for error messages and ``adapters list``.
    config_keys: ClassVar[tuple[str, ...]] = ()
    #: True when the adapter itself reports each message's point of no return
    #: and answer (SMTP: just before the final dot; an ESP: before each request);
    #: otherwise :meth:`send` reports a whole chunk before handing it over.
    commits_per_message: ClassVar[bool] = False
    #: The setting that sets how many threads hand messages over at once (:meth:`mark_threads`).
    concurrency_key: ClassVar[str] = "concurrency"
    #: True when handing the same message over twice cannot duplicate it (the
    #: file adapter overwrites by key): no point of no return to report.
    idempotent: ClassVar[bool] = False

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        secret: Callable[..., str | None] | None = None,
        *,
        root: Any = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        limiter: Any = None,
    ):
        self.config = Config(self.name, dict(config or {}))
        self._secret = secret or (lambda name, required=True: None)
        self.root = root
        self.clock: Clock = clock or utcnow
        self.sleep: Sleep = sleep or self._pause
        self.limiter = limiter if limiter is not None else RateLimiter.from_config(self.config, clock=self.clock, sleep=self.sleep)
        #: Called with message keys just before they pass the point of no
        #: return; the send ledger records them there (see relmail.sending.ledger)
        #: and returns once the record is confirmed. If it raises, those
        #: messages are not handed over, nor is the rest of the batch: they
        #: come back ``withheld``.
        self.on_commit: Callable[[Sequence[str]], None] | None = None
        #: Called with the results of messages handed over, the moment the provider answers them,
        #: before the batch is done: the send ledger writes them at once (relmail.sending.marker), so
        #: that a sender killed mid-batch leaves the answers it got, not only ``committing``.
        self.on_answer: Callable[[Sequence[Result]], None] | None = None
        #: Whether each e-mail leaves with a signed VERP return path (the SMTP adapter with ``verp``): the
        #: ledger records it per delivery, so that only a tagged e-mail's bounces are asked for a tag.
        self.tags_return_path = False
        #: Why the current :meth:`send` withholds its remaining messages (a failed ``on_commit``).
        self.withholding: str | None = None
        #: Asked before each chunk, request and retry: once True, nothing further is handed over and
        #: no retry waits; the messages not handed over come back :meth:`stopped`. The sending loop sets it.
        self.stopping: Callable[[], bool] = lambda: False

    def secret(self, name: str, required: bool = True) -> str | None:
        value = self._secret(name, required)
        if required and not value:
            raise DeliveryError(f"{self.name}: secret '{name}' is not set")
        return value

    # -- the public interface -------------------------------------------------

    def send(self, messages: Sequence[OutgoingMessage]) -> list[Result]:
        """Send a batch; one :class:`Result` per message, in input order.

        The rate limiter admits messages in chunks; whatever the hourly or
        warm-up cap does not admit comes back ``deferred`` until capacity
        returns. Never raises for a per-message failure.
        """
        messages = list(messages)
        seen: set[str] = set()
        for m in messages:
            if m.key in seen:
                # Sending the same key twice in one batch would defeat exactly-once.
                raise DeliveryError(f"{self.name}: message key {m.key!r} appears twice in one batch")
            seen.add(m.key)
        self.validate(messages)
        self.withholding = None
        results: list[Result | None] = [None] * len(messages)
        pos = 0
        try:
            while pos < len(messages):
                want = min(self.chunk_size(), len(messages) - pos)
                granted, resume_at, why = self.limiter.acquire(want)
                if self.stopping():
                    results[pos:] = [self.stopped(m.key) for m in messages[pos:]]
                    break
                if granted:
                    chunk = messages[pos : pos + granted]
                    if not self.commits_per_message:
                        try:
                            self.committing([m.key for m in chunk])
                        except Exception as exc:
                            # Not recorded, so not handed over: no request is made for this chunk or the rest.
                            results[pos:] = [self.withhold(m.key, exc) for m in messages[pos:]]
                            break
                    out = self._send(chunk)
                    if len(out) != len(chunk):
                        raise AssertionError(f"{self.name} returned {len(out)} results for {len(chunk)} messages")
                    if not self.commits_per_message:
                        self.answered(out)
                    results[pos : pos + granted] = out
                    pos += granted
                if resume_at is not None and pos < len(messages) and granted < want:
                    # An hourly or daily cap: the rest waits, it is not slept through.
                    for i in range(pos, len(messages)):
                        results[i] = deferred(messages[i].key, resume_at, why)
                    break
        except Abort as exc:
            if exc.partial is not None:
                results[pos : pos + len(exc.partial)] = exc.partial
            # Due again at once: the send stops here, and the next 'relmail send' (once the account
            # is fixed) resumes them; waiting retry_delay would only delay the fixed send.
            retry = self.clock()
            reason = f"{self.name}: sending stopped: {exc.reason}"
            done = [
                r if r is not None else deferred(m.key, retry, reason, http_status=exc.http_status)
                for m, r in zip(messages, results)
            ]
            raise DeliveryAborted(reason, done) from None
        return [r for r in results]  # type: ignore[misc]

    def committing(self, keys: Sequence[str]) -> None:
        """Report that ``keys`` are about to pass the point of no return; raises if that was not recorded.

        A caller that gets an exception must not hand those messages over.
        """
        if self.on_commit is not None and not self.idempotent:
            self.on_commit(keys)

    def answered(self, results: Sequence[Result]) -> None:
        """Report the provider's answers to messages handed over, as soon as they arrive (:attr:`on_answer`).

        Never raises: the caller records every answer with the batch anyway,
        and a report that failed costs only precision after a crash.
        """
        if self.on_answer is not None and results and not self.idempotent:
            with contextlib.suppress(Exception):
                self.on_answer(results)

    def withhold(self, key: str, exc: BaseException | None = None) -> Result:
        """The result of a message not handed over because its point of no return was not recorded.

        The first failure (``exc``) sets :attr:`withholding`, so every later
        message of the same :meth:`send` is withheld too without contacting
        the provider: the caller's ledger is not answering.
        """
        if self.withholding is None:
            self.withholding = f"the ledger could not record the point of no return ({_first_line(exc)})"
        return deferred(key, self.clock(), f"not sent: {self.withholding}", withheld=True)

    def stopped(self, key: str) -> Result:
        """The result of a message not handed over because the send was asked to stop (:attr:`stopping`)."""
        return deferred(key, self.clock(), STOPPED, withheld=True)

    def _pause(self, seconds: float) -> None:
        """The default sleep (retries, pacing): cut short once :attr:`stopping`."""
        import time

        end = time.monotonic() + seconds
        while not self.stopping() and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.2))

    def mark_threads(self) -> int:
        """How many threads may call :attr:`on_commit` at once (the ledger opens a connection for each)."""
        return 0 if self.idempotent else 1

    def validate(self, messages: Sequence[OutgoingMessage]) -> None:
        """Raise :class:`UnsupportedFeature` before sending anything the provider cannot carry."""

    def check_topics(self, topics: Iterable[str]) -> None:
        """Raise :class:`UnsupportedFeature` when the provider cannot carry e-mails on one of a run's ``topics``.

        Called once before a send hands anything over, so the run stops whole
        rather than after its first batches (:meth:`validate` checks each batch).
        """

    def chunk_size(self) -> int:
        """How many messages to hand to :meth:`_send` at a time."""
        return max(self.max_batch, 1)

    @abstractmethod
    def _send(self, messages: Sequence[OutgoingMessage]) -> list[Result]:
        """Send admitted messages; one result each, in order."""

    def close(self) -> None:
        """Release connections; the adapter may not be used afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def describe(self) -> dict[str, Any]:
        """Settings safe to print (no secrets)."""
        return {"adapter": self.name, "max_batch": self.max_batch, **self.config.public()}

    def retry_at(self, seconds: float | None = None) -> datetime:
        """When a deferred message should be tried again."""
        delay = self.config.number("retry_delay", 600) if seconds is None else seconds
        return self.clock() + timedelta(seconds=delay)


# -- helpers shared by adapters ----------------------------------------------


_DELIVERY_KEY = re.compile(r"d([1-9][0-9]{0,18})")


def delivery_key(delivery_id: int) -> str:
    """The message key of the ledger's delivery ``delivery_id`` (proofs have keys of their own)."""
    return f"d{delivery_id}"


def delivery_id(key: str) -> int | None:
    """The ledger's delivery a message key names, or None (a proof's key)."""
    found = _DELIVERY_KEY.fullmatch(key)
    return int(found.group(1)) if found else None


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip() if exc is not None else ""
    return text.splitlines()[0] if text else (exc.__class__.__name__ if exc is not None else "unknown error")


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup."""
    low = name.lower()
    for k, v in headers.items():
        if k.lower() == low:
            return v
    return None


_EOL = re.compile(rb"\r\n|\r|\n")


def to_crlf(data: bytes) -> bytes:
    """Normalize line endings to CRLF, as SMTP and DKIM require."""
    if data.count(b"\r\n") == data.count(b"\n") == data.count(b"\r"):
        return data  # already CRLF throughout, as the render stage builds it: counting is much cheaper than the regex
    return _EOL.sub(b"\r\n", data)


def idna(domain: str) -> str:
    """A domain in its ASCII (IDNA) form, as DNS, SMTP without SMTPUTF8 and DKIM's ``d=`` take it; as given if it has none."""
    try:
        return to_ascii(domain)
    except UnicodeError:
        return domain


def chunks(items: Sequence[Any], max_count: int, max_bytes: int | None = None, size: Callable[[Any], int] | None = None) -> Iterable[list[Any]]:
    """Split ``items`` into lists of at most ``max_count`` items and ``max_bytes`` estimated size."""
    batch: list[Any] = []
    total = 0
    for item in items:
        n = size(item) if (size and max_bytes) else 0
        if batch and (len(batch) >= max_count or (max_bytes and total + n > max_bytes)):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += n
    if batch:
        yield batch
