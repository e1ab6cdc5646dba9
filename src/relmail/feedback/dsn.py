"""Reading one message of the bounce mailbox: a DSN, an ARF complaint, a non-standard bounce or neither.

What arrives at the envelope sender's mailbox, in the order it is tried:

- an RFC 5965 abuse report (``multipart/report; report-type=feedback-report``):
  a complaint about the recipient in ``Original-Rcpt-To`` (or the returned
  message's ``To``);
- an RFC 3464 delivery status notification (a ``message/delivery-status``
  part): one outcome per recipient block, from its ``Action``, ``Status`` and
  ``Diagnostic-Code``, read with the standard library's :mod:`email`;
- an automatic reply (RFC 3834 ``Auto-Submitted: auto-replied``,
  ``X-Autoreply``, an "Out of Office" subject) not sent by a mail system:
  nothing happened to the delivery;
- a bounce in one of the many older formats (qmail, Exim, Exchange, Yahoo
  ...): the bouncing addresses come from :mod:`flufl.bounce` (GNU Mailman's
  maintained detectors), permanent or temporary;
- an unsubscribe request: a message whose subject is ``unsubscribe TOKEN``,
  which a mail program writes from the ``mailto:`` of the List-Unsubscribe
  header (:mod:`.bounces` checks the token's signature and applies it);
- a hand-written unsubscribe request: a person's message (not a mail
  system's, not an automatic reply) whose subject or first own line of text
  asks to be removed ("unsubscribe", "remove me", "abmelden", "uitschrijven"
  ...), without a token: :mod:`.bounces` applies it only when the receiving
  server's ``Authentication-Results`` vouch for the sender;
- anything else: not a bounce.

:func:`parse` returns a :class:`Report` (plain data) or raises
:class:`~relmail.feedback.records.FieldError` naming the header or field that
makes the message unusable; it never raises anything else for any input.
"""

from __future__ import annotations

import email
import email.errors
import hashlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parseaddr, parsedate_to_datetime

from flufl.bounce import all_failures

from .. import timestamps
from ..delivery.metadata import MESSAGE_ID_HEADER
from .blocks import BLOCKED, sender_side, status_in
from .records import FieldError

# A detector that fails is logged by flufl.bounce with its traceback before it
# re-raises; relmail reports that message as unusable itself, so the traceback
# must not reach a terminal through logging's last-resort handler.
logging.getLogger("flufl.bounce").addHandler(logging.NullHandler())
#: How much of a Diagnostic-Code a reason keeps.
_MAX_DIAGNOSTIC = 300
_SMTP_CODE = re.compile(r"^\s*([245])\d\d\b")
_MESSAGE_ID_LINE = re.compile(r"^Message-ID:[ \t]*(<[^<>\s]+>)", re.I | re.M)
_RELMAIL_ID_LINE = re.compile(rf"^{MESSAGE_ID_HEADER}:[ \t]*(<[^<>\s]+>)", re.I | re.M)
_OUT_OF_OFFICE = re.compile(
    r"^\s*(automatic reply|auto(matic)?[ -]?(reply|response)|out of (the )?office|autoreply|abwesenheitsnotiz|"
    r"automatische antwort|afwezig|r[ée]ponse automatique|absence|risposta automatica|respuesta autom[aá]tica)",
    re.I,
)
_RETURN_PATH_LINE = re.compile(r"^Return-Path:[ \t]*<([^<>\s]+)>", re.I | re.M)
#: Headers in which a mail server records the envelope recipient it delivered a message to.
_ENVELOPE_HEADERS = ("X-Original-To", "Delivered-To", "Envelope-To", "X-Envelope-To", "X-Delivered-To", "X-Rcpt-To")
#: How many candidate return paths a report's tag is looked for in (a report is not a mailing list).
_MAX_RETURN_PATHS = 20
_MAIL_SYSTEMS = ("mailer-daemon", "mailerdaemon", "mail-daemon", "postmaster")
#: The subject of the ``mailto:`` in List-Unsubscribe (``unsubscribe TOKEN``), also as a reply or forward.
_UNSUBSCRIBE = re.compile(r"^\s*(?:(?:re|aw|sv|fwd?|wg|tr|r|rif|i)\s*:\s*)*unsubscribe\s+([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)\s*$", re.I)
#: :attr:`Report.kind` of an unsubscribe request.
UNSUBSCRIBE_REQUEST = "unsubscribe request"
#: A person's words for "take me off the list", at the start of a subject or of the first line they wrote.
#: Reply and forward prefixes as mail programs write them in English, German, Scandinavian languages, French
#: and Italian (Outlook's "R:", "RIF:" and "I:").
_REMOVE_ME = re.compile(
    r"^\s*(?:(?:re|aw|sv|fwd?|wg|tr|r|rif|i)\s*:\s*)*(?:(?:please|bitte|graag|por favor|per favore|per piacere)\s+)?"
    r"(unsubscribe|remove me|opt[ -]?out|stop (?:e-?mails?|sending)|"
    r"abmelden|austragen|uitschrijven|afmelden|d[ée]sabonner|d[ée]sinscri(?:re|ption|vez)|dar(?:se|me)? de baja|"
    r"avregistrera|avsluta (?:min )?prenumeration|"
    # Italian: "cancellami", "disiscrivetemi", "annulla l'iscrizione", "rimuovimi"; not "cancellazione
    # ordine", which is about an order.
    r"cancella(?:mi|temi)|disiscri(?:vimi|vetemi|vermi|zione)|annulla(?:re)? (?:l['’] ?)?iscrizione|rimuov(?:imi|etemi))\b",
    re.I)


@dataclass(frozen=True)
class Outcome:
    """What happened to one recipient of the original message."""

    #: The address the original was sent to (``Original-Recipient``, else ``Final-Recipient``);
    #: empty for a complaint whose report redacts it (its Message-ID finds the delivery).
    recipient: str
    #: ``bounced_hard``, ``bounced_soft``, ``bounced_blocked``, ``delivered`` or ``complained``.
    type: str
    #: The RFC 3463 status (``5.1.1``), when the report gave one.
    status: str | None
    #: Why, in the reporting system's words (``Diagnostic-Code``, the detector).
    reason: str


@dataclass(frozen=True)
class Report:
    """One message of the bounce mailbox, read."""

    #: ``dsn``, ``arf``, ``bounce`` (a non-standard format), or a kind nothing
    #: is recorded for: ``auto-reply``, ``not a bounce``, ``DSN relayed`` ...
    kind: str
    #: The report's identity: its Message-ID, else a hash of its bytes (the event ids derive from it).
    identity: str
    #: When the report was written (its ``Date``), aware UTC; None for kinds nothing is recorded for.
    date: datetime | None = None
    #: The Message-ID of the e-mail it answers, from the returned headers, when present.
    original_message_id: str | None = None
    outcomes: tuple[Outcome, ...] = ()
    subject: str = ""
    #: An unsubscribe request's token, as its subject carries it (not yet verified).
    token: str | None = None
    #: An unsubscribe request's sender (``From``).
    sender: str = ""
    #: A hand-written unsubscribe request's ``Authentication-Results`` headers, topmost first.
    authentication: tuple[str, ...] = ()
    #: Addresses that may be the return path the report was sent to, where a VERP tag is read
    #: (:func:`return_paths`); none for kinds nothing is recorded for.
    return_paths: tuple[str, ...] = ()
    #: The Message-ID relmail rendered, from the returned ``X-Relmail-Message-ID`` header: an ESP that
    #: writes its own Message-ID (Mailjet) sends relmail's there, and the returned Message-ID is the ESP's.
    relmail_message_id: str | None = None

    @property
    def message_ids(self) -> tuple[str, ...]:
        """The ids the answered e-mail may be recorded under in the ledger, the returned Message-ID first."""
        return tuple(dict.fromkeys(i for i in (self.original_message_id, self.relmail_message_id) if i))


def parse(data: bytes, now: Callable[[], datetime] | None = None) -> Report:
    """Read one message; :class:`FieldError` says why it cannot be used."""
    msg = email.message_from_bytes(data, policy=policy.compat32)
    identity = _message_id(msg.get("Message-ID")) or "sha256:" + hashlib.sha256(data).hexdigest()
    subject = _header(msg, "Subject")
    report_type = _clean(msg.get_param("report-type", "", header="content-type")).lower()
    if report_type == "feedback-report" or _part(msg, "message/feedback-report") is not None:
        kind, outcomes = _complaint(msg)
    elif _part(msg, "message/delivery-status") is not None:
        kind, outcomes = _delivery_status(msg)
    elif (request := _UNSUBSCRIBE.match(_decoded_header(subject))) and not _is_auto_reply(msg, subject):
        return Report(UNSUBSCRIBE_REQUEST, identity, _date(msg, now), subject=subject, token=request.group(1),
                      sender=_address(msg.get("From")) or "")
    elif _is_auto_reply(msg, subject) and not _from_mail_system(msg):
        return Report("auto-reply", identity, subject=subject)
    else:
        kind, outcomes = _non_standard(msg)
        if not outcomes:
            if _is_auto_reply(msg, subject):
                return Report("auto-reply", identity, subject=subject)
            if not _from_mail_system(msg) and _asks_removal(msg, subject):
                return Report(UNSUBSCRIBE_REQUEST, identity, _date(msg, now), subject=subject,
                              sender=_address(msg.get("From")) or "",
                              authentication=tuple(_clean(v) for v in msg.get_all("Authentication-Results") or ()))
            return Report("not a bounce", identity, subject=subject)
    if not outcomes:
        return Report(kind, identity, subject=subject)
    return Report(kind, identity, _date(msg, now), _original_message_id(msg), tuple(outcomes), subject,
                  return_paths=return_paths(msg), relmail_message_id=_relmail_message_id(msg))


# -- the three kinds of report -------------------------------------------------------


def _complaint(msg: Message) -> tuple[str, list[Outcome]]:
    """An RFC 5965 feedback report: ``abuse`` is a complaint; other feedback types change nothing."""
    part = _part(msg, "message/feedback-report")
    if part is None:
        raise FieldError("Content-Type", "a feedback report without a message/feedback-report part")
    blocks = _blocks(part)
    fields = blocks[0] if blocks else Message()
    feedback_type = _clean(fields.get("Feedback-Type")).lower()
    if not feedback_type:
        raise FieldError("Feedback-Type", "is missing from the message/feedback-report part")
    if feedback_type != "abuse":
        return f"ARF {feedback_type}"[:40], []
    original = _returned_headers(msg)
    # Many feedback loops redact the recipient; the returned Message-ID still finds the delivery.
    recipient = _address(fields.get("Original-Rcpt-To")) or (_address(original.get("To")) if original is not None else None)
    if not recipient and not _original_message_id(msg) and not _relmail_message_id(msg):
        raise FieldError("Original-Rcpt-To", "the complaint names neither a recipient (Original-Rcpt-To, the returned To) "
                                             "nor the Message-ID of the e-mail it is about")
    return "arf", [Outcome(recipient or "", "complained", None,
                           f"complaint (Feedback-Type: abuse, User-Agent: {_clean(fields.get('User-Agent'))})")]


def _delivery_status(msg: Message) -> tuple[str, list[Outcome]]:
    """An RFC 3464 DSN: one outcome per recipient block whose Action relmail records."""
    part = _part(msg, "message/delivery-status")
    recipients = [block for block in _blocks(part) if block.get("Final-Recipient") or block.get("Action")]
    if not recipients:
        raise FieldError("Final-Recipient", "the delivery-status part has no per-recipient fields")
    outcomes, skipped = [], ""
    for block in recipients:
        final = _address(_typed(block.get("Final-Recipient")))
        if not final:
            raise FieldError("Final-Recipient", f"expected 'rfc822; address', got {_clean(block.get('Final-Recipient'))!r}")
        recipient = _address(_typed(block.get("Original-Recipient"))) or final
        action = _clean(block.get("Action")).lower().split(" ")[0].split("(")[0]
        status_text = _clean(block.get("Status"))
        diagnostic = _clean(_typed(block.get("Diagnostic-Code")))
        status = status_in(status_text) or status_in(diagnostic)
        if action in ("failed", "error"):  # "error": OpenSMTPD's non-standard word for failed
            severity = status[0] if status else _smtp_class(diagnostic)
            if severity not in ("4", "5"):
                raise FieldError("Status", f"Action failed for {final} without a 4.x.x or 5.x.x status (Status: {status_text!r})")
            kind = "bounced_hard" if severity == "5" and _says_address(status) else _soft(status)
        elif action == "delayed":
            kind = _soft(status)
        elif action == "delivered":
            kind = "delivered"
        elif action in ("relayed", "expanded"):
            skipped = f"DSN {action}"
            continue
        else:
            raise FieldError("Action", f"expected failed, delayed, delivered, relayed or expanded; got {_clean(block.get('Action'))!r}")
        reason = " ".join(filter(None, [f"{action} {status or ''}".strip(), diagnostic[:_MAX_DIAGNOSTIC]]))
        if recipient != final:
            reason += f" (final recipient {final})"
        outcomes.append(Outcome(recipient, kind, status, reason))
    return ("dsn" if outcomes else skipped), outcomes


def _non_standard(msg: Message) -> tuple[str, list[Outcome]]:
    """A bounce in an older format: flufl.bounce's detectors find the addresses."""
    if not _clean(msg.get("From")):
        # RFC 5322 requires it; some of the detectors fail without it.
        raise FieldError("From", "is missing: neither a bounce nor a reply (RFC 5322 requires a From header)")
    try:
        temporary, permanent = all_failures(msg)
    except Exception as exc:  # noqa: BLE001 - heuristic detectors over arbitrary text: one message is invalid, not the import
        raise FieldError(None, f"the bounce detectors could not read this message ({type(exc).__name__}: {exc})") from None
    status = status_in(_body_text(msg), failures_only=True)
    outcomes = []
    for raw, permanent_failure in [(a, True) for a in sorted(permanent)] + [(a, False) for a in sorted(temporary - permanent)]:
        address = _address(raw.decode("ascii", "replace"))
        if not address:
            continue
        hard = permanent_failure and (status is None or (status[0] == "5" and _says_address(status)))
        how = "permanent" if permanent_failure else "temporary"
        reason = f"{how} failure in a non-standard bounce" + (f", status {status}" if status else "")
        outcomes.append(Outcome(address, "bounced_hard" if hard else _soft(status), status, reason))
    return "bounce", outcomes


# -- fields --------------------------------------------------------------------------


def _date(msg: Message, now: Callable[[], datetime] | None) -> datetime:
    value = msg.get("Date")
    if not value:
        raise FieldError("Date", "is missing (the report's time is the bounce's time)")
    try:
        when = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError, OverflowError) as exc:
        raise FieldError("Date", f"is not an RFC 5322 date: {_clean(value)!r} ({exc})") from None
    # "-0000" means UTC with the sender's zone unknown (RFC 5322 3.3).
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    why = timestamps.implausible(when, now() if now else None)
    if why:
        raise FieldError("Date", f"implausible time: {why}")
    return when


def _original_message_id(msg: Message) -> str | None:
    """The answered e-mail's Message-ID: returned headers, a copy quoted in the text, else In-Reply-To."""
    original = _returned_headers(msg)
    if original is not None and _message_id(original.get("Message-ID")):
        return _message_id(original.get("Message-ID"))
    quoted = _MESSAGE_ID_LINE.search(_body_text(msg))
    if quoted:
        return quoted.group(1)
    return _message_id(msg.get("In-Reply-To"))


def _relmail_message_id(msg: Message) -> str | None:
    """relmail's Message-ID of the answered e-mail, from its ``X-Relmail-Message-ID``: returned headers, else a quoted copy."""
    original = _returned_headers(msg)
    if original is not None and _message_id(original.get(MESSAGE_ID_HEADER)):
        return _message_id(original.get(MESSAGE_ID_HEADER))
    quoted = _RELMAIL_ID_LINE.search(_body_text(msg))
    return quoted.group(1) if quoted else None


def return_paths(msg: Message) -> tuple[str, ...]:
    """Every address the report names as the return path it was sent to, strongest first.

    The envelope recipient, as the mail server that delivered the report
    into the mailbox wrote it (Postfix ``X-Original-To`` and ``Delivered-To``,
    Exim ``Envelope-To``, Gmail and Google Workspace ``Delivered-To``, others'
    ``X-Envelope-To``, ``X-Delivered-To``, ``X-Rcpt-To``); the report's own
    ``To`` (the envelope sender it answers: Postfix, Exim, Gmail,
    Exchange); Postfix's ``X-Postfix-Sender`` and ARF's ``Original-Mail-From``
    report fields; the returned message's ``Return-Path`` (an ARF report
    returns the message as delivered), also when quoted in the text.
    """
    found: list[str] = []
    for name in _ENVELOPE_HEADERS:
        found += [a for value in msg.get_all(name) or () for _, a in getaddresses([_clean(value)])]
    found += [a for _, a in getaddresses([_clean(v) for v in msg.get_all("To") or ()])]
    for ctype, field in (("message/delivery-status", "X-Postfix-Sender"), ("message/feedback-report", "Original-Mail-From")):
        part = _part(msg, ctype)
        if part is not None:
            found += [_typed(block.get(field)) for block in _blocks(part)[:1]]
    original = _returned_headers(msg)
    if original is not None:
        found.append(_clean(original.get("Return-Path")))
    found += _RETURN_PATH_LINE.findall(_body_text(msg))
    addresses = dict.fromkeys(a for a in map(_address, found) if a)
    return tuple(addresses)[:_MAX_RETURN_PATHS]


def _returned_headers(msg: Message) -> Message | None:
    """The original message's headers (``message/rfc822`` or ``text/rfc822-headers`` part)."""
    for part in _parts(msg):
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/rfc822-headers") and part.is_multipart():
            inner = part.get_payload(0)
            if isinstance(inner, Message):
                return inner
        if ctype in ("text/rfc822-headers", "message/rfc822-headers", "message/rfc822"):
            return email.message_from_string(_decoded(part), policy=policy.compat32)
    return None


def _blocks(part: Message) -> list[Message]:
    """The field blocks of a delivery-status or feedback-report part, however it was encoded."""
    payload = part.get_payload()
    if isinstance(payload, list) and all(isinstance(p, Message) for p in payload):
        return payload
    text = _decoded(part).replace("\r\n", "\n")
    return [email.message_from_string(block.strip() + "\n", policy=policy.compat32)
            for block in re.split(r"\n[ \t]*\n", text) if block.strip()]


def _parts(msg: Message) -> Iterator[Message]:
    """Every part, not descending into the field blocks of a delivery-status or feedback-report part."""
    yield msg
    if msg.get_content_type() in ("message/delivery-status", "message/feedback-report"):
        return
    payload = msg.get_payload()
    if isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):
                yield from _parts(sub)


def _part(msg: Message, ctype: str) -> Message | None:
    return next((p for p in _parts(msg) if p.get_content_type() == ctype), None)


def _body_text(msg: Message) -> str:
    """The text parts of the message (a quoted copy of the original is searched here)."""
    return "\n".join(_decoded(p) for p in _parts(msg) if p.get_content_maintype() == "text")


def _decoded(part: Message) -> str:
    data = part.get_payload(decode=True)
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    payload = part.get_payload()
    return payload if isinstance(payload, str) else ""


def _asks_removal(msg: Message, subject: str) -> bool:
    """The subject, or the first line the sender wrote (not a quote), asks to be removed from the list."""
    if _REMOVE_ME.match(_decoded_header(subject)):
        return True
    for part in _parts(msg):
        if part.get_content_type() == "text/plain":
            lines = [line for line in _decoded(part).splitlines() if line.strip()]
            return bool(lines) and not lines[0].lstrip().startswith(">") and bool(_REMOVE_ME.match(lines[0]))
    return False


def _is_auto_reply(msg: Message, subject: str) -> bool:
    """RFC 3834 and the de-facto markers of vacation responders, or an "Out of Office" subject."""
    auto = _clean(msg.get("Auto-Submitted")).lower()
    precedence = _clean(msg.get("Precedence")).lower()
    return (auto.startswith("auto-replied") or bool(msg.get("X-Autoreply")) or bool(msg.get("X-Autorespond"))
            or precedence == "auto_reply" or bool(_OUT_OF_OFFICE.match(subject)))


def _from_mail_system(msg: Message) -> bool:
    """Sent by a mail server rather than a person: null return path, MAILER-DAEMON, X-Failed-Recipients."""
    if _clean(msg.get("Return-Path")) == "<>" or msg.get("X-Failed-Recipients"):
        return True
    sender = (_address(msg.get("From")) or "").split("@")[0]
    return sender in _MAIL_SYSTEMS


def _says_address(status: str | None) -> bool:
    """A permanent status about the address: not a full mailbox (X.2.2, soft), nor the message (too big, its content)
    or the sender (policy, reputation, DMARC) refused, a block (:func:`~relmail.feedback.blocks.sender_side`).
    Suppressing every customer at a provider because it blocked one send would be wrong."""
    if status is None:
        return True
    return not (status.split(".", 1)[1] == "2.2" or sender_side(status))


def _soft(status: str | None) -> str:
    """A failure that does not kill the address: a block when the status is about the sender or message."""
    return BLOCKED if sender_side(status) else "bounced_soft"


def _smtp_class(diagnostic: str) -> str | None:
    found = _SMTP_CODE.match(diagnostic)
    return found.group(1) if found else None


def _typed(value) -> str:
    """``rfc822; addr`` or ``smtp; 550 ...``: the part after the type."""
    text = _clean(value)
    return text.split(";", 1)[1].strip() if ";" in text else text


def _address(value) -> str | None:
    """A plain ``local@domain`` from a header value, or None."""
    text = _clean(value)
    if not text:
        return None
    address = parseaddr(text)[1] or text
    address = address.strip().strip("<>").strip()
    if address.count("@") != 1 or " " in address or address.startswith("@") or address.endswith("@"):
        return None
    return address


def _message_id(value) -> str | None:
    found = re.search(r"<[^<>\s]+>", _clean(value))
    return found.group(0) if found else None


def _header(msg: Message, name: str) -> str:
    return _clean(msg.get(name))[:200]


def _decoded_header(value: str) -> str:
    """RFC 2047 words decoded: a mail program encodes a long subject (the token makes it one) as it likes."""
    try:
        return str(make_header(decode_header(value)))
    except (UnicodeError, LookupError, ValueError, email.errors.HeaderParseError):
        return value


def _clean(value) -> str:
    """A header value as one line of text: folded lines joined; a header of undecodable bytes
    (a :class:`email.header.Header`) or a parameter in RFC 2231 parts made plain text."""
    if value is None:
        return ""
    if isinstance(value, tuple):  # RFC 2231 (charset, language, text)
        value = value[-1]
    return " ".join(str(value).split())
