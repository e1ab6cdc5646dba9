"""A fast RFC 5322 / MIME builder for multipart/alternative e-mails.

The standard library's :class:`email.message.EmailMessage` costs over a
millisecond per message (policy objects, header parsing and refolding).
Marketing e-mails all have one shape, so this module writes that shape
directly: constant headers are encoded once per message definition
(:class:`MimeTemplate`), per e-mail only the personal headers are encoded
(RFC 2047 for non-ASCII, quoted phrases for specials), each body is
quoted-printable (``binascii.b2a_qp``, C speed) with CRLF line ends, or
base64 where that is shorter (a text mostly in Hebrew, Arabic, Greek or
another non-Latin script triples in quoted-printable, four thirds in
base64), and the pieces are joined. Tests prove the output parses with
``email.message_from_bytes(policy=email.policy.default)`` to the same
headers and parts.

The multipart boundary starts with ``=_``, which can never occur in a
quoted-printable or base64 body, so it cannot collide with the content.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import time
from email.utils import formatdate

from ..delivery.idn import to_ascii
from ..errors import TemplateError
from ..windows import ENV_NOW, current_time

CRLF = "\r\n"
_SPECIALS = set('()<>[]:;@\\,."')
_MAX_LINE = 78
#: The longest unbroken word a plain header keeps (its line stays under RFC 5322's 998 octets).
_MAX_WORD = 900


def message_id(run_id: str, customer_id: str, message: str, domain: str) -> str:
    """Deterministic ``<...@domain>`` from (run, customer, message), so a retry reuses it."""
    digest = hashlib.sha256(f"{run_id}\x00{customer_id}\x00{message}".encode()).hexdigest()[:32]
    return f"<{digest}.relmail@{domain}>"


#: Breakable whitespace: every kind but the no-break spaces, which French writes before a colon and the money
#: filter between an amount's digit groups and before its currency ("1 234,50 €" stays on one line).
_BREAKABLE = re.compile(r"[^\S\u00a0\u202f\u2007]+")


def one_line(value: str) -> str:
    """Header values never carry line breaks (header injection); runs of breakable whitespace become one space."""
    return _BREAKABLE.sub(" ", value).strip()


def encoded_words(value: str) -> str:
    """RFC 2047 ``=?utf-8?b?...?=`` words of at most 75 characters, folded onto lines."""
    data = value.encode("utf-8")
    words = []
    start = 0
    # 45 bytes -> 60 base64 characters -> a 72-character word. Never split a character.
    while start < len(data):
        end = min(start + 45, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:
            end -= 1
        words.append("=?utf-8?b?" + base64.b64encode(data[start:end]).decode("ascii") + "?=")
        start = end
    return (CRLF + " ").join(words)


def _fold(name: str, value: str) -> str:
    """Fold an ASCII header at spaces to lines of at most 78 characters where possible."""
    line = f"{name}: {value}"
    if len(line) <= _MAX_LINE:
        return line
    out, current = [], f"{name}:"
    for word in value.split(" "):
        if len(current) + 1 + len(word) > _MAX_LINE and current.strip() and current != f"{name}:":
            out.append(current)
            current = " " + word
        else:
            current += " " + word
    out.append(current)
    return CRLF.join(out)


def header_text(name: str, value: str) -> str:
    """One unstructured header (Subject ...): plain when ASCII, RFC 2047 otherwise."""
    value = one_line(value)
    # A word too long to fold onto a line of RFC 5322's 998 octets is split into encoded words instead.
    if value.isascii() and value.isprintable() and "=?" not in value and max(map(len, value.split(" "))) <= _MAX_WORD:
        return _fold(name, value)
    return f"{name}: {encoded_words(value)}"


def ascii_domain(email: str) -> str:
    """``info@müller.example`` -> ``info@xn--mller-kva.example``: the form an SMTP envelope and an ESP take.

    Servers without SMTPUTF8 (most) and the ESPs' APIs need an internationalized domain
    in its ASCII (IDNA) form; an address that has none is returned as it is.
    """
    local, at, domain = email.rpartition("@")
    if not at or domain.isascii():
        return email
    try:
        return f"{local}@{to_ascii(domain)}"
    except UnicodeError:
        return email


def _ascii_address(email: str, shown: str | None = None) -> str:
    shown = shown or f"'{email}'"
    local, at, domain = email.strip().rpartition("@")
    if not at or not local:
        raise TemplateError(f"{shown} is not an e-mail address")
    if not local.isascii():
        raise TemplateError(f"{shown} has a non-ASCII local part, which needs SMTPUTF8")
    if not domain.isascii():
        try:
            domain = to_ascii(domain)
        except UnicodeError:
            raise TemplateError(f"{shown} has an invalid domain") from None
    if any(c in email for c in "<>\r\n\" ,"):
        raise TemplateError(f"{shown} is not a plain e-mail address")
    return f"{local}@{domain}"


def format_address(name: str | None, email: str, shown: str | None = None) -> str:
    """``Name <addr>`` with the name quoted or RFC 2047-encoded as it needs; an error names the address as ``shown``."""
    addr = _ascii_address(email, shown)
    name = " ".join((name or "").split())  # a display name: any whitespace run is one space
    if not name:
        return addr
    if not name.isascii() or not name.isprintable() or "=?" in name:
        return f"{encoded_words(name)} <{addr}>"
    if any(c in _SPECIALS for c in name):
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{addr}>'
    return f"{name} <{addr}>"


class _QPCache:
    """Quoted-printable line by line, remembering lines seen before.

    QP encodes each line on its own, so encoding line by line and joining
    with CRLF gives the same bytes as encoding the whole body. Most lines of
    a batch's e-mails are the template's own and repeat in every message;
    only the personal lines are encoded again.
    """

    __slots__ = ("lines", "limit")

    def __init__(self, limit: int = 200_000):
        self.lines: dict[str, bytes] = {}
        self.limit = limit

    def encode(self, text: str) -> bytes:
        """``text`` (line ends ``\\n`` only: :func:`_body` makes them so) quoted-printable with CRLF line ends."""
        lines = text.split("\n")
        if lines[-1] == "" and len(lines) > 1:
            lines.pop()
        cache = self.lines
        out = []
        for line in lines:
            enc = cache.get(line)
            if enc is None:
                enc = binascii.b2a_qp(line.encode("utf-8"), quotetabs=False, istext=True, header=False)
                if b"\n" in enc:  # soft line breaks of a long line
                    enc = enc.replace(b"=\n", b"=\r\n")
                # A lone trailing space or tab must be encoded at a line end.
                if enc.endswith((b" ", b"\t")):
                    enc = enc[:-1] + (b"=20" if enc.endswith(b" ") else b"=09")
                if b"From " in enc:
                    enc = _no_from(enc)
                if len(cache) >= self.limit:
                    cache.clear()
                cache[line] = enc
            out.append(enc)
        out.append(b"")
        return b"\r\n".join(out)


_QP = _QPCache()


def _no_from(enc: bytes) -> bytes:
    """Quoted-printable ``enc`` with no line starting ``From ``, and its lines still at most 76 characters.

    An mbox on the way (a relay's queue, a local delivery) writes ``>From `` for such
    a line, which changes the body and fails its DKIM body hash; ``=46rom`` reads the same.
    """
    out = []
    for line in enc.split(b"\r\n"):
        if line.startswith(b"From "):
            line = b"=46" + line[1:]
            if len(line) > 76:
                cut = 75  # before a soft line break of its own, never inside an =XX escape
                escape = line.rfind(b"=", 0, cut)
                if escape >= cut - 2:
                    cut = escape
                out.append(line[:cut] + b"=")
                line = line[cut:]
        out.append(line)
    return b"\r\n".join(out)


_QP_HEADER = b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
_BASE64_HEADER = b"Content-Transfer-Encoding: base64\r\n\r\n"
#: base64's size per character of text, at the least: 4/3 of at least one byte, and a CRLF per 76 characters.
_BASE64_PER_CHAR = 4 / 3 * 78 / 76


def _body(text: str) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding header and blank line, encoded body) of one part: the shorter encoding.

    Quoted-printable unless base64 is shorter, which only a text mostly outside ASCII makes it; a text
    whose quoted-printable is within base64's least possible size is never encoded twice.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    qp = _QP.encode(text)
    if len(qp) <= _BASE64_PER_CHAR * len(text):
        return _QP_HEADER, qp
    # Text in canonical form (RFC 2045): CRLF line ends, and a final one as the quoted-printable body has.
    data = text.replace("\n", "\r\n").encode("utf-8")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    b64 = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (_BASE64_HEADER, b64) if len(b64) < len(qp) else (_QP_HEADER, qp)


def transfer_size(text: str) -> int:
    """Bytes of ``text`` as one part of an e-mail carries it: after its transfer encoding, the header aside."""
    return len(_body(text)[1])


class _Clock:
    """``Date:`` formatted once per second, not once per e-mail: relmail's now (``$RELMAIL_NOW`` in a rehearsal)."""

    __slots__ = ("second", "value")

    def __init__(self):
        self.second: tuple = (-1, None)
        self.value = ""

    def now(self) -> str:
        # Keyed on the variable too: a process that sets $RELMAIL_NOW anew (a test, a rehearsal script) within a second.
        second = (int(time.time()), os.environ.get(ENV_NOW))
        if second != self.second:
            # A rehearsal's outbox is dated on the rehearsal's day, as its deliveries and events are.
            self.second, self.value = second, formatdate(current_time().timestamp(), usegmt=True)
        return self.value


_CLOCK = _Clock()


class MimeTemplate:
    """The constant part of one message definition's e-mails, encoded once.

    ``constant_headers`` are (name, value) pairs identical for every
    recipient (From, Reply-To, Feedback-ID, X-Relmail-Run ...).
    """

    def __init__(self, from_name: str, from_email: str, reply_to: str | None, constant_headers: list[tuple[str, str]]):
        self.domain = from_email.rpartition("@")[2]
        lines = [f"From: {format_address(from_name, from_email)}"]
        if reply_to:
            lines.append(f"Reply-To: {format_address(None, reply_to)}")
        lines += [header_text(n, v) for n, v in constant_headers]
        lines.append("MIME-Version: 1.0")
        self._head = (CRLF.join(lines) + CRLF).encode("ascii")

    def build(
        self,
        *,
        to_name: str | None,
        to_email: str,
        subject: str,
        html: str,
        text: str,
        rfc_message_id: str,
        headers: list[tuple[str, str]] = (),
        list_unsubscribe: str | None = None,
        list_unsubscribe_mailto: str | None = None,
        date: str | None = None,
    ) -> bytes:
        """The complete message as bytes with CRLF line ends."""
        boundary = "=_rm_" + hashlib.blake2s(rfc_message_id.encode(), digest_size=12).hexdigest()
        lines = [
            # A customer's address stays out of the error, which a send's summary and a CI log show.
            f"To: {format_address(to_name, to_email, shown='the recipient address')}",
            header_text("Subject", subject),
            f"Date: {date or _CLOCK.now()}",
            f"Message-ID: {rfc_message_id}",
        ]
        if list_unsubscribe:
            targets = [f"<{list_unsubscribe}>"]
            if list_unsubscribe_mailto:
                targets.append(f"<{list_unsubscribe_mailto}>")
            lines.append("List-Unsubscribe: " + ("," + CRLF + " ").join(targets))
            # RFC 8058: the HTTPS URL accepts a POST with this body, no confirmation page.
            lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
        lines += [header_text(n, v) for n, v in headers]
        personal = (CRLF.join(lines) + CRLF).encode("ascii")
        b = boundary.encode("ascii")
        return b"".join(
            (
                self._head,
                personal,
                b'Content-Type: multipart/alternative; boundary="',
                b,
                b'"\r\n\r\n--',
                b,
                b'\r\nContent-Type: text/plain; charset="utf-8"\r\n',
                *_body(text),
                b"\r\n--",
                b,
                b'\r\nContent-Type: text/html; charset="utf-8"\r\n',
                *_body(html),
                b"\r\n--",
                b,
                b"--\r\n",
            )
        )
