"""What the HTTP-based adapters (SendGrid, Mailgun, Postmark, SES, Mailjet) share.

:meth:`HttpAdapter.request` sends one API request over a reused
``requests`` session and retries 429 and 5xx answers, waiting what the
provider's ``Retry-After`` says (seconds or an HTTP date; SendGrid's
``X-RateLimit-Reset`` epoch and Brevo's ``x-sib-ratelimit-reset`` seconds
too) or an exponential back-off, up to ``max_retries`` retries. A wait
longer than ``max_retry_wait`` is not slept through: the messages come back
``deferred`` until then. A request that could not even connect is retried
(nothing was sent); a request whose answer was lost (read timeout,
connection reset) is *not*, unless the adapter's requests carry an
idempotency key the provider honours (:attr:`HttpAdapter.repeatable`), and
then only while the provider still remembers the key
(:attr:`HttpAdapter.repeat_window`): its messages come back ``deferred`` and
``ambiguous``. A 5xx answer to such a request counts as a lost answer when the
provider keeps its keys for a limited time: nothing says the provider did
not send the e-mail before failing, so it is asked again within the window,
and a 5xx still standing at the end (the e-mail would be sent again by a
later run, past the window) leaves its messages ``ambiguous`` too.
401 and 403 stop the batch (a bad or revoked key is not a per-message fault).
An answer that holds one result per message (:meth:`HttpAdapter.answers_each_message`)
is neither retried nor refused whole: the adapter reads each result.
A send asked to stop (:attr:`~relmail.delivery.base.Adapter.stopping`) makes
no further request and waits for no retry.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from .base import STOPPED, Abort, Adapter, OutgoingMessage, Result, deferred


@dataclass
class RequestOutcome:
    """The final answer to one API call: a response, or why its messages wait."""

    response: requests.Response | None = None
    retry_at: datetime | None = None
    reason: str = ""
    http_status: int | None = None
    ambiguous: bool = False
    #: Not made: the send was asked to stop.
    withheld: bool = False

    def defer(self, key: str) -> Result:
        return deferred(key, self.retry_at, self.reason, http_status=self.http_status, ambiguous=self.ambiguous,
                        withheld=self.withheld)


def retry_after_seconds(response: requests.Response, now: datetime) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta or HTTP date) or ``X-RateLimit-Reset`` (epoch)."""
    value = response.headers.get("Retry-After")
    if value:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None and when.tzinfo is not None:
            return max((when - now).total_seconds(), 0.0)
    reset = response.headers.get("X-RateLimit-Reset")
    if reset and reset.strip().isdigit() and int(reset) > 1_000_000_000:
        return max(int(reset) - now.timestamp(), 0.0)
    # Brevo's reset is the time left in the window, in seconds (not an epoch).
    left = response.headers.get("x-sib-ratelimit-reset")
    if left and left.strip().isdigit():
        return float(left)
    return None


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request failed before any byte reached the provider."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


class HttpAdapter(Adapter):
    """Base of the ESP adapters: session, retries, per-message concurrency.

    Each request's messages pass their point of no return just before it is
    made (:meth:`hand_over`), not a whole chunk before the first request: a
    sender killed between requests leaves only the request in flight
    uncertain, and the messages of requests never made are sent again.
    """

    default_base_url = ""
    commits_per_message = True
    #: Most bytes one request may carry (documented payload limit), with headroom.
    max_request_bytes: int | None = None
    #: True when every request carries an idempotency key the provider honours (Brevo): a request
    #: whose answer was lost is made again, and the provider refuses the repeat if it took the first.
    repeatable = False
    #: How long the provider remembers a key: no repeat is made once this has passed since the attempt whose
    #: answer was lost, since the provider could take the repeat for a new e-mail (None: no limit).
    repeat_window: timedelta | None = None

    def __init__(self, config=None, secret=None, *, session_factory: Callable[[], requests.Session] | None = None, **kw):
        super().__init__(config, secret, **kw)
        c = self.config
        self.base_url = c.string("base_url", self.default_base_url).rstrip("/")
        self.timeout = c.number("timeout", 30)
        self.max_retries = c.integer("max_retries", 3, minimum=0)
        self.max_retry_wait = c.number("max_retry_wait", 60)
        self.concurrency = c.integer("concurrency", 4, minimum=1)
        self._session_factory = session_factory or requests.Session
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._executor: ThreadPoolExecutor | None = None

    # -- sessions ---------------------------------------------------------------

    def configure(self, session: requests.Session) -> None:
        """Set the provider's auth and default headers on a new session."""

    @property
    def session(self) -> requests.Session:
        """This thread's session (connections are reused across requests)."""
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._session_factory()
            s.headers["User-Agent"] = "relmail"
            self.configure(s)
            self._local.session = s
            self._sessions.append(s)
        return s

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        for s in self._sessions:
            s.close()
        self._sessions.clear()

    # -- requests ---------------------------------------------------------------

    def request(self, method: str, path: str, **kw: Any) -> RequestOutcome:
        """One API call with the retry policy of the module docstring."""
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        last = RequestOutcome()
        #: A repeated request's earlier attempt lost its answer: any outcome without an answer stays ambiguous.
        maybe_sent = False
        #: When the first attempt whose answer was lost was made: the provider's key is counted from no earlier.
        lost_at: datetime | None = None
        for attempt in range(self.max_retries + 1):
            if self.stopping():
                # The send is stopping: a request not yet made is withheld; after an answer, it stands.
                return last if attempt else RequestOutcome(retry_at=self.clock(), reason=STOPPED, withheld=True)
            if lost_at is not None and self.repeat_window is not None and self.clock() - lost_at >= self.repeat_window:
                return RequestOutcome(
                    retry_at=last.retry_at, http_status=last.http_status, ambiguous=True,
                    reason=(f"{method} {url}: no certain answer, and not asked again: {self.name} keeps an idempotency key for "
                            f"{self.repeat_window.total_seconds() / 60:g} minutes; {last.reason}"),
                )
            started = self.clock()
            try:
                response = self.send_request(method, url, **kw)
            except requests.RequestException as exc:
                lost = not _never_sent(exc)
                maybe_sent = maybe_sent or lost
                if lost and lost_at is None:
                    lost_at = started
                if lost and not self.repeatable:
                    return RequestOutcome(
                        retry_at=self.retry_at(),
                        reason=f"{method} {url}: no answer ({exc.__class__.__name__}); the provider may have accepted it",
                        ambiguous=True,
                    )
                wait = min(2.0**attempt, self.max_retry_wait)
                what = "no answer" if lost else "cannot connect"
                last = RequestOutcome(retry_at=self.clock() + timedelta(seconds=wait), reason=f"{what}: {exc.__class__.__name__}",
                                      ambiguous=maybe_sent)
            else:
                status = response.status_code
                if self.answers_each_message(response):
                    # Some of its messages may be accepted: never retried whole, never refused whole.
                    return RequestOutcome(response=response, http_status=status)
                if status in (401, 403):
                    raise Abort(f"{self.name} refused the credentials (HTTP {status}): {_snippet(response)}", status)
                if status != 429 and status < 500:
                    return RequestOutcome(response=response, http_status=status)
                unsure = ""
                if status >= 500 and self.repeatable and self.repeat_window is not None:
                    # The provider does not say whether a 5xx sent the e-mail: as for a lost answer, its key guards
                    # a repeat only while it remembers the key, and a later run's repeat could come after that.
                    maybe_sent = True
                    lost_at = lost_at or started
                    unsure = f" ({self.name} does not say whether it sent the e-mail before failing)"
                after = retry_after_seconds(response, self.clock())
                wait = after if after is not None else min(2.0**attempt, self.max_retry_wait)
                last = RequestOutcome(
                    retry_at=self.clock() + timedelta(seconds=wait if after is not None else self.config.number("retry_delay", 600)),
                    reason=f"HTTP {status} from {self.name}: {_snippet(response)}{unsure}",
                    http_status=status,
                    ambiguous=maybe_sent,
                )
                if wait > self.max_retry_wait:
                    return last  # a long Retry-After: come back then instead of sleeping
            if attempt < self.max_retries and not self.stopping():
                self.sleep(wait)
        return last

    def answers_each_message(self, response: requests.Response) -> bool:
        """Whether ``response`` holds one answer per message, which the adapter reads whatever its status.

        Mailjet answers each message of a batch on its own, and a request
        whose message was refused carries that error's status (403 for a From
        address it has not validated). Such an answer is handed to the
        adapter as it is: retrying the request on a 5xx would send the
        messages accepted alongside again, and a 401 or 403 must keep them
        accepted; the adapter decides per message, and stops the batch itself.
        """
        return False

    def send_request(self, method: str, url: str, **kw: Any) -> requests.Response:
        """Hook for signing (SES); the default just sends."""
        return self.session.request(method, url, timeout=self.timeout, **kw)

    # -- helpers for subclasses ---------------------------------------------------

    def hand_over(self, batch: Sequence[OutgoingMessage], post: Callable[[Sequence[OutgoingMessage]], list[Result]]) -> list[Result]:
        """``post(batch)``, one request: its messages marked at their point of no return first, its answers reported after.

        Nothing is posted once the send withholds (a mark failed) or stops.
        """
        if self.withholding:
            return [self.withhold(m.key) for m in batch]
        if self.stopping():
            return [self.stopped(m.key) for m in batch]
        try:
            self.committing([m.key for m in batch])
        except Exception as exc:
            return [self.withhold(m.key, exc) for m in batch]
        results = post(batch)
        self.answered(results)
        return results

    def mark_threads(self) -> int:
        return 0 if self.idempotent else self.concurrency

    def map_messages(self, fn: Callable[[OutgoingMessage], Result], messages: Sequence[OutgoingMessage]) -> list[Result]:
        """Apply ``fn`` to each message, one request each (:meth:`hand_over`), ``concurrency`` at a time.

        Keeps order and survives an abort.
        """
        def marked(m: OutgoingMessage) -> Result:
            return self.hand_over([m], lambda batch: [fn(batch[0])])[0]

        if self.concurrency > 1 and len(messages) > 1:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"relmail-{self.name}")
            stopped = threading.Event()

            def guarded(m: OutgoingMessage) -> Result | None:
                # Once one request refused the account, the queued messages are
                # not posted (they would all be refused alike): None = deferred.
                if stopped.is_set():
                    return None
                try:
                    return marked(m)
                except Abort:
                    stopped.set()
                    raise

            futures = [self._executor.submit(guarded, m) for m in messages]
        else:
            futures = None
        results: list[Result | None] = []
        abort: Abort | None = None
        for i, m in enumerate(messages):
            try:
                if futures is not None:
                    results.append(futures[i].result())
                elif abort is None:
                    results.append(marked(m))
                else:
                    results.append(None)
            except Abort as exc:
                abort = abort or exc
                results.append(None)
        if abort is not None:
            abort.partial = results
            raise abort
        return results  # type: ignore[return-value]


def _snippet(response: requests.Response, limit: int = 300) -> str:
    text = (response.text or "").strip().replace("\n", " ")
    return text[:limit] + ("..." if len(text) > limit else "")


def json_body(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
