"""SMTP delivery over a pool of reused connections.

``pool_size`` connections send concurrently (one thread each); each carries
up to ``messages_per_connection`` messages before a clean QUIT and a fresh
connection. ``security`` is ``starttls`` (port 587, never falls back to
plain text), ``tls`` (implicit TLS, port 465) or ``none``; AUTH runs when
``username`` is set, with the ``smtp_password`` secret.

Per message (one recipient each):

* 250 after the final dot: ``accepted``; the queue id in the reply
  (``queued as X``, ``id=X``) becomes ``provider_id``.
* 421 and other 4xx: ``deferred`` until ``retry_delay`` seconds later (421
  also drops the connection, as the server closes it).
* 550/551/553 to RCPT, or any 5.1.x enhanced status: ``rejected`` with
  ``hard_bounce``; other 5xx (e.g. 554 content, 5.7.x policy): ``rejected``.
* After a refused transaction the connection is reset with RSET and reused.

When the server offers ESMTP PIPELINING (RFC 2920), MAIL FROM, RCPT TO and
DATA go out in one write and their three replies are read in order: two
round trips per message instead of four. The replies are classified as in
lock-step (the first refusal decides; a DATA refused after a refused RCPT is
just read); a 421 ends the reading, as the server closes the channel; a
DATA accepted despite a refused envelope is abandoned by closing the
connection, never by a final dot. Without PIPELINING every command waits for
its reply.

A dropped connection never loses or duplicates a message. If it drops
*before* the whole message (with its final dot) was written, the server
cannot have accepted it, so it is sent again on a fresh connection (up to
``max_attempts``). If it drops *after* the final dot was written but before
the 250 arrived, the outcome is unknown: the server may have queued it. The
message comes back ``deferred`` with ``ambiguous=True`` and is not re-sent,
so the ledger decides (never reported accepted without a 250).

Before the final dot, :attr:`~relmail.delivery.base.Adapter.on_commit`
records the point of no return; if that fails, the connection is closed
instead of the dot (the server discards the transaction) and the message and
the rest of the batch come back ``withheld``. The server's reply to the dot
goes to :attr:`~relmail.delivery.base.Adapter.on_answer` as it arrives.

Connection failures (refused, 421 greeting, timeout) defer the rest of the
batch until ``retry_delay`` without hammering the server; configuration
failures (AUTH refused, STARTTLS not offered, certificate not trusted) stop
the batch with :class:`~relmail.delivery.base.DeliveryAborted`.
"""

from __future__ import annotations

import queue
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from ..errors import ConfigError
from . import verp
from .base import Abort, Adapter, OutgoingMessage, Result, accepted, deferred, delivery_id, idna, rejected
from .dkim import DkimSigner

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
HARD_BOUNCE_CODES = (550, 551, 553)
_QUEUE_ID = (
    re.compile(r"queued as ([\w.\-]+)", re.I),  # Postfix, aiosmtpd handlers
    re.compile(r"\bid=([\w.\-]+)", re.I),  # Exim
    re.compile(r"<([^<>\s]+)>\s+(?:Queued|accepted)", re.I),  # Exchange / MS
)
_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\b")
# An address that quotes as itself: dot-atom local part, plain domain (RFC 5321 4.1.2).
_PLAIN_ADDRESS = re.compile(r"[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*", re.A)
_LINE_BREAK = re.compile(r"[\r\n]")
# Replies that let a pipelined transaction go on, per command.
_PIPELINED_STAGES = (("MAIL FROM", (250,)), ("RCPT TO", (250, 251)), ("DATA", (354,)))


class _Retry(Exception):
    """The connection broke before the message was handed over: safe to send again."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Down(Exception):
    """Could not open a usable connection (server unreachable or refusing)."""


class _Fatal(Exception):
    """A configuration problem: sending cannot succeed until someone fixes it."""


class _Conn:
    __slots__ = ("smtp", "sent", "broken", "pipelining")

    def __init__(self, smtp: smtplib.SMTP):
        self.smtp = smtp
        self.sent = 0
        self.broken = False
        self.pipelining = smtp.has_extn("pipelining")


class SmtpAdapter(Adapter):
    """Pooled, concurrent SMTP delivery with per-recipient results."""

    name = "smtp"
    max_batch = 1000
    commits_per_message = True
    concurrency_key = "pool_size"
    config_keys = (
        "host", "port", "security", "username", "pool_size", "messages_per_connection", "timeout",
        "helo", "verify_tls", "ca_file", "envelope_from", "max_attempts", "retry_delay",
        "verp", "verp_separator", "verp_required",
    )

    def __init__(self, config=None, secret=None, **kw):
        super().__init__(config, secret, **kw)
        c = self.config
        self.host = c.string("host")
        self.security = c.choice("security", tuple(DEFAULT_PORTS), "starttls")
        self.port = c.integer("port", DEFAULT_PORTS[self.security], minimum=1)
        self.username = c.string("username", None)
        self.password = self.secret("smtp_password") if self.username else None
        self.pool_size = c.integer("pool_size", 4, minimum=1)
        self.per_connection = c.integer("messages_per_connection", 100, minimum=1)
        self.timeout = c.number("timeout", 30)
        self.helo = c.string("helo", None) or socket.getfqdn()
        envelope_from = c.string("envelope_from", None)
        # MAIL FROM of an internationalized domain in its ASCII form: SMTPUTF8 is not needed for it.
        local, at, domain = (envelope_from or "").rpartition("@")
        self.envelope_from = f"{local}@{idna(domain)}" if at else envelope_from
        self.return_path = verp.from_config(
            {**c.data, "envelope_from": self.envelope_from}, self.secret("signing_key", False) if c.get("verp") else None,
            c.where)
        self.tags_return_path = self.return_path is not None
        self.max_attempts = c.integer("max_attempts", 3, minimum=1)
        self.tls_context = self._tls_context()
        dkim_table = c.get("dkim")
        self.signer = (
            DkimSigner.from_config(dkim_table, self._secret, self.root, c.get("sender_domain"))
            if isinstance(dkim_table, dict)
            else None
        )
        self._idle: queue.LifoQueue[_Conn] = queue.LifoQueue()
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._down_until: datetime | None = None
        self._down_reason = ""
        self._fatal: str | None = None

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.security == "none":
            return None
        ca_file = self.config.string("ca_file", None)
        if ca_file and not Path(ca_file).expanduser().is_file():
            raise ConfigError(f"{self.config.where}: ca_file {ca_file} does not exist")
        ctx = ssl.create_default_context(cafile=str(Path(ca_file).expanduser()) if ca_file else None)
        if not self.config.boolean("verify_tls", True):
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def chunk_size(self) -> int:
        return self.max_batch

    def mark_threads(self) -> int:
        return self.pool_size

    # -- sending ----------------------------------------------------------------

    def _send(self, messages: Sequence[OutgoingMessage]) -> list[Result]:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.pool_size, thread_name_prefix="relmail-smtp")
        # One task per connection, each taking the next message until none is
        # left, rather than one future per message: the same concurrency at a
        # fraction of the executor's per-item cost.
        todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(len(messages)):
            todo.put(i)
        results: list[Result | None] = [None] * len(messages)
        workers = [
            self._executor.submit(self._work, messages, todo, results) for _ in range(min(self.pool_size, len(messages)))
        ]
        for w in workers:
            w.result()
        if self._fatal:
            raise Abort(self._fatal, partial=results)
        return results  # type: ignore[return-value]

    def _work(self, messages: Sequence[OutgoingMessage], todo: queue.SimpleQueue, results: list) -> None:
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            results[i] = self._deliver(messages[i])

    def _deliver(self, msg: OutgoingMessage) -> Result:
        if self.withholding:
            return self.withhold(msg.key)
        if self.stopping():
            return self.stopped(msg.key)
        if self._fatal:
            return deferred(msg.key, self.retry_at(), f"not sent: {self._fatal}")
        payload = msg.as_bytes()
        if self.signer is not None:
            payload = self.signer.sign(payload)
        reason = ""
        for _attempt in range(self.max_attempts):
            with self._lock:
                down_until, down_reason = self._down_until, self._down_reason
            if down_until is not None and self.clock() < down_until:
                return deferred(msg.key, down_until, down_reason)
            try:
                conn = self._checkout()
            except _Down as exc:
                until = self.retry_at()
                with self._lock:
                    self._down_until, self._down_reason = until, f"server unavailable: {exc}"
                return deferred(msg.key, until, f"server unavailable: {exc}")
            except _Fatal as exc:
                with self._lock:
                    self._fatal = self._fatal or str(exc)
                return deferred(msg.key, self.retry_at(), f"not sent: {exc}")
            try:
                return self._transact(conn, msg, payload)
            except _Retry as exc:
                reason = exc.reason
            finally:
                self._checkin(conn)
        return deferred(msg.key, self.retry_at(), f"connection kept dropping before the message was sent: {reason}")

    def _transact(self, conn: _Conn, msg: OutgoingMessage, payload: bytes) -> Result:
        s = conn.smtp
        sender = self.sender(msg)
        if _LINE_BREAK.search(sender) or _LINE_BREAK.search(msg.to):
            # It would end the command early and smuggle in another one.
            return rejected(msg.key, "an envelope address contains a line break")
        mail_opts: list[str] = []
        if not payload.isascii():
            if not s.has_extn("8bitmime"):
                return rejected(msg.key, "message has 8-bit content and the server does not offer 8BITMIME")
            mail_opts.append("BODY=8BITMIME")
        if not (sender.isascii() and msg.to.isascii()):
            if not s.has_extn("smtputf8"):
                return rejected(msg.key, "internationalized address and the server does not offer SMTPUTF8")
            mail_opts.append("SMTPUTF8")
        if s.has_extn("size"):
            mail_opts.append(f"SIZE={len(payload)}")
        handed_over = False
        try:
            if conn.pipelining:
                refusal = self._envelope_pipelined(conn, msg, sender, mail_opts)
            else:
                refusal = self._envelope(conn, msg, sender, mail_opts)
            if refusal is not None:
                return refusal
            data = dot_stuffed(payload)
            s.send(data)
            try:
                self.committing([msg.key])
            except Exception as exc:
                # Not recorded, so not handed over: the transaction is abandoned
                # before the dot by closing the connection (RSET is no command
                # inside DATA), and the server discards it.
                conn.broken = True
                return self.withhold(msg.key, exc)
            s.send(b".\r\n")
            handed_over = True
            code, resp = s.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            conn.broken = True
            if handed_over:
                return self._answer(deferred(
                    msg.key,
                    self.retry_at(),
                    f"connection lost after the message was sent, before the server confirmed it ({exc}); "
                    "it may have been delivered",
                    ambiguous=True,
                ))
            raise _Retry(str(exc) or exc.__class__.__name__) from None
        if code != 250:
            return self._answer(self._refused(conn, msg, code, resp, "end of DATA"))
        conn.sent += 1
        return self._answer(accepted(msg.key, queue_id(_text(resp)), smtp_code=250))

    def _answer(self, result: Result) -> Result:
        """``result`` of a message past its final dot, reported at once (:meth:`~relmail.delivery.base.Adapter.answered`)."""
        self.answered([result])
        return result

    def sender(self, msg: OutgoingMessage) -> str:
        """MAIL FROM of ``msg``: its delivery's tagged return path with ``verp``, else ``envelope_from`` or From.

        A proof is no delivery: it goes out with the plain ``envelope_from``,
        and a bounce of it is never applied (it names no delivery).
        """
        if self.return_path is not None and (delivery := delivery_id(msg.key)) is not None:
            return self.return_path.address(delivery)
        return self.envelope_from or msg.from_addr

    def _envelope(self, conn: _Conn, msg: OutgoingMessage, sender: str, mail_opts: list[str]) -> Result | None:
        """MAIL FROM, RCPT TO and DATA in lock-step; a refusal's result, or None after 354."""
        s = conn.smtp
        code, resp = s.mail(sender, mail_opts)
        if code != 250:
            return self._refused(conn, msg, code, resp, "MAIL FROM")
        code, resp = s.rcpt(msg.to)
        if code not in (250, 251):
            return self._refused(conn, msg, code, resp, "RCPT TO")
        s.putcmd("data")
        code, resp = s.getreply()
        if code != 354:
            return self._refused(conn, msg, code, resp, "DATA")
        return None

    def _envelope_pipelined(self, conn: _Conn, msg: OutgoingMessage, sender: str, mail_opts: list[str]) -> Result | None:
        """MAIL FROM, RCPT TO and DATA in one write (RFC 2920), then their three replies."""
        s = conn.smtp
        options = "".join(" " + o for o in mail_opts)
        commands = f"MAIL FROM:{quoted(sender)}{options}\r\nRCPT TO:{quoted(msg.to)}\r\nDATA\r\n"
        s.send(commands.encode("utf-8" if "SMTPUTF8" in mail_opts else "ascii"))
        refusal: tuple[int, bytes, str] | None = None
        for stage, ok in _PIPELINED_STAGES:
            code, resp = s.getreply()
            if code == 421 or code < 0:
                # The server closes the channel: no further reply is coming. An
                # earlier refusal (a 550 to RCPT) still says more about the message.
                conn.broken = True
                refusal = refusal or (code, resp, stage)
                break
            if refusal is None and code not in ok:
                refusal = (code, resp, stage)
        if refusal is None:
            return None
        if code == 354:
            # DATA accepted although the envelope was refused (RFC 2920 servers
            # refuse it): a final dot could deliver an empty message, so the
            # transaction is abandoned with the connection instead.
            conn.broken = True
        return self._refused(conn, msg, *refusal)

    def _refused(self, conn: _Conn, msg: OutgoingMessage, code: int, resp: bytes, stage: str) -> Result:
        text = _text(resp)
        reason = f"{stage}: {code} {text}".strip()
        if code == 421 or code < 0:
            conn.broken = True  # 421: the server closes the channel
        elif not conn.broken:
            try:
                conn.smtp.rset()
            except (smtplib.SMTPException, OSError):
                conn.broken = True
        if stage == "MAIL FROM" and code in (530, 535):
            with self._lock:
                self._fatal = self._fatal or f"the server requires authentication: {reason}"
            return deferred(msg.key, self.retry_at(), reason, smtp_code=code)
        if 400 <= code < 500 or code < 0:
            return deferred(msg.key, self.retry_at(), reason, smtp_code=code if code > 0 else None)
        if code >= 500:
            status = _ENHANCED.match(text)
            enhanced = status.group(1) if status else ""
            hard = enhanced.startswith("5.1.") or (
                stage == "RCPT TO" and code in HARD_BOUNCE_CODES and not enhanced.startswith("5.7.")
            )
            return rejected(msg.key, reason, hard_bounce=hard, smtp_code=code)
        return deferred(msg.key, self.retry_at(), f"unexpected reply {reason}", smtp_code=code)

    # -- the connection pool ----------------------------------------------------

    def _checkout(self) -> _Conn:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return self._connect()
            if conn.sent >= self.per_connection:
                _quit(conn)
                continue
            return conn

    def _checkin(self, conn: _Conn) -> None:
        if conn.broken:
            _quit(conn, polite=False)
        else:
            self._idle.put(conn)

    def _connect(self) -> _Conn:
        try:
            if self.security == "tls":
                s: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, local_hostname=self.helo, timeout=self.timeout, context=self.tls_context
                )
            else:
                s = smtplib.SMTP(self.host, self.port, local_hostname=self.helo, timeout=self.timeout)
            # The final dot goes out as its own small write after the ledger's
            # mark; with Nagle's algorithm it would wait for the server's
            # delayed ACK on every message.
            s.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.ehlo()
            if self.security == "starttls":
                if not s.has_extn("starttls"):
                    s.close()
                    raise _Fatal(f"{self.host}:{self.port} does not offer STARTTLS (security = \"starttls\")")
                s.starttls(context=self.tls_context)
                s.ehlo()
            if self.username:
                try:
                    s.login(self.username, self.password or "")
                except smtplib.SMTPAuthenticationError as exc:
                    s.close()
                    raise _Fatal(f"AUTH refused for user {self.username!r}: {exc.smtp_code} {_text(exc.smtp_error)}") from None
                except smtplib.SMTPNotSupportedError:
                    s.close()
                    raise _Fatal(f"{self.host}:{self.port} does not offer AUTH on this connection") from None
            return _Conn(s)
        except ssl.SSLCertVerificationError as exc:
            # A relay with a certificate of its own CA (an internal or self-signed one) is a configuration
            # matter: say which setting trusts it, never suggest switching verification off.
            raise _Fatal(f"TLS certificate of {self.host} not trusted: {exc.verify_message}; if the server's "
                         f"certificate is signed by a CA of your own, name its PEM file: {self.config.where} "
                         f"ca_file = \"/path/to/ca.pem\"") from None
        except smtplib.SMTPConnectError as exc:
            raise _Down(f"{exc.smtp_code} {_text(exc.smtp_error)}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise _Down(f"{self.host}:{self.port}: {exc}") from None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        while True:
            try:
                _quit(self._idle.get_nowait())
            except queue.Empty:
                break

    def describe(self) -> dict:
        out = super().describe()
        out.update(port=self.port, security=self.security, dkim=bool(self.signer))
        return out


def queue_id(reply: str) -> str | None:
    """The server's queue id from a 250 reply to the final dot, if it names one."""
    for pattern in _QUEUE_ID:
        m = pattern.search(reply)
        if m:
            return m.group(1)
    return None


def dot_stuffed(payload: bytes) -> bytes:
    """CRLF ``payload`` as DATA carries it: a dot doubled at the start of every line, ending in CRLF."""
    # Lines start after LF only, so bytes.replace does what a ^\. regex
    # would, at a fraction of the cost on every message.
    data = payload.replace(b"\n.", b"\n..")
    if data.startswith(b"."):
        data = b"." + data
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def quoted(address: str) -> str:
    """``address`` in angle brackets for MAIL FROM / RCPT TO, as ``smtplib.quoteaddr`` makes it."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"  # what quoteaddr's address parser returns for these, without running it
    return smtplib.quoteaddr(address)


def _text(resp: bytes | str) -> str:
    if isinstance(resp, bytes):
        return resp.decode("utf-8", "replace").replace("\n", " ").strip()
    return str(resp).strip()


def _quit(conn: _Conn, polite: bool = True) -> None:
    try:
        if polite:
            conn.smtp.quit()
        else:
            conn.smtp.close()
    except (smtplib.SMTPException, OSError):
        conn.smtp.close()
