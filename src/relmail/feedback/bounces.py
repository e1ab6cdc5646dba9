"""Bounces from the shop's own SMTP server: the bounce mailbox into the store.

Three stages, plain data between them:

1. :func:`read_bounces` reads a mailbox (:mod:`.mailboxes`) and each message
   (:mod:`.dsn`): what it reports, or why it cannot be used;
2. :func:`match` ties every reported outcome to the delivery it answers: by
   the returned Message-ID in the ledger (``deliveries.rfc_message_id``), or
   the returned ``X-Relmail-Message-ID`` (where the ESP wrote its own
   Message-ID: Mailjet), else by the recipient address (the customer's most recent e-mail sent
   before the bounce). What matches becomes a
   :class:`~relmail.feedback.events.FeedbackEvent` of provider ``smtp``; what
   does not is listed with the reason;
3. :func:`~relmail.feedback.ingest.ingest` applies the events and records the
   unusable messages, in the same transaction as the matching.

An event's id derives from the report's Message-ID (or its bytes), the
recipient and the type, so importing the same mailbox again writes nothing
new, and a bounce kept in both an mbox and a Maildir counts once.

The same mailbox may receive the unsubscribe requests a mail program sends
to the ``mailto:`` of List-Unsubscribe (subject ``unsubscribe TOKEN``): the
token's signature names the customer and the list, as the one-click POST's
does, and the opt-out is applied as the link's (:func:`~relmail.feedback.consent.unsubscribe_in`).

A person may also write there by hand ("unsubscribe", "please remove me"),
with no token. Such a request opts the sender out of everything, when the
receiving server vouches for the From domain (:mod:`.authresults`: DMARC or
aligned DKIM passed, in the ``Authentication-Results`` of the project's
``[unsubscribe] authserv_id``) and the From address is a customer's. A
forged From would otherwise let anyone unsubscribe anyone, silently; a
request that cannot be vouched for is listed for review
(:attr:`BounceResult.review`), never dropped: whoever reads the list removes
the person by hand.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from .. import tokens
from ..delivery.verp import ReturnPath
from ..errors import Problem, SignatureError, ValidationError
from ..store import link_projects
from ..store.addresses import normalize
from ..store.models import Customer, Delivery, Event
from .apply import ApplyResult, apply_events, chunks, owners_by_address
from .authresults import vouched
from .consent import unsubscribe_in
from .dsn import UNSUBSCRIBE_REQUEST, Outcome, Report, parse
from .events import FeedbackEvent, derived_id
from .ingest import ingest
from .mailboxes import read_mail
from .provider import Batch
from .records import FieldError, InvalidEvent

#: The provider name of bounce events and of their rejects.
PROVIDER = "smtp"
#: How much of an unusable message ``feedback_rejects`` keeps (the column's JSON is cut at 64 KiB).
_MAX_KEPT = 32 * 1024


@dataclass(frozen=True)
class Read:
    """One message that reported outcomes, with where it was found (not its bytes: a mailbox can be large)."""

    where: str
    report: Report


@dataclass
class Mailbox:
    """A mailbox read: the messages that report something, the unusable ones, the rest by kind."""

    source: str
    messages: int = 0
    reports: list[Read] = field(default_factory=list)
    #: Unsubscribe requests sent to the List-Unsubscribe ``mailto:``.
    requests: list[Read] = field(default_factory=list)
    invalid: list[InvalidEvent] = field(default_factory=list)
    #: Messages that record nothing, by kind (``auto-reply``, ``not a bounce`` ...).
    ignored: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class Unmatched:
    """A reported outcome that no delivery of relmail's answers: listed, not applied."""

    where: str
    recipient: str
    type: str
    why: str
    #: With ``[delivery.smtp] verp``: the report carries no valid return-path tag.
    unverified: bool = False

    def as_dict(self) -> dict:
        return {"message": self.where, "recipient": self.recipient, "type": self.type, "why": self.why,
                "unverified": self.unverified}


@dataclass
class BounceResult:
    """What importing bounce mailboxes did (:func:`import_bounces`)."""

    sources: list[str]
    messages: int = 0
    #: Events written, duplicates, opt-outs ... (as for provider imports); on a dry run, the events found.
    applied: ApplyResult = field(default_factory=ApplyResult)
    unmatched: list[Unmatched] = field(default_factory=list)
    #: Unusable messages by mailbox, with their place and reason.
    invalid: list[tuple[Mailbox, InvalidEvent]] = field(default_factory=list)
    #: Messages that record nothing, by kind.
    ignored: Counter = field(default_factory=Counter)
    matched_by: Counter = field(default_factory=Counter)
    #: Hand-written unsubscribe requests not applied (the sender is not vouched for, or no customer's):
    #: a person must read them.
    review: list[Unmatched] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict:
        a = self.applied
        return {
            "sources": self.sources,
            "messages": self.messages,
            "dry_run": self.dry_run,
            "applied": dict(sorted(a.applied.items())),
            "total_applied": a.total_applied,
            "duplicates": a.duplicates,
            "opt_outs": a.opt_outs,
            "matched_by": dict(sorted(self.matched_by.items())),
            "unmatched": [u.as_dict() for u in self.unmatched],
            "unverified": self.unverified,
            "review": [u.as_dict() for u in self.review],
            "ignored": dict(sorted(self.ignored.items())),
            "invalid": [_invalid_dict(box, bad) for box, bad in self.invalid],
        }

    @property
    def unverified(self) -> int:
        """Outcomes not applied for want of a valid return-path tag (``[delivery.smtp] verp``)."""
        return sum(u.unverified for u in self.unmatched)

    def error(self) -> ValidationError | None:
        """The :class:`ValidationError` reporting the unusable messages (exit 4), or None."""
        if not self.invalid:
            return None
        done = "nothing was written (--dry-run)" if self.dry_run else (
            "the others were applied, the unusable ones recorded (relmail feedback rejects)")
        problems = [Problem(bad.raw["file"], bad.line, bad.field, bad.reason) for _, bad in self.invalid]
        return ValidationError(f"{len(self.invalid)} unusable message(s) of {self.messages}; {done}", problems)


def _invalid_dict(box: Mailbox, bad: InvalidEvent) -> dict:
    return {"source": box.source, "index": bad.index, "file": bad.raw["file"], "line": bad.line,
            "field": bad.field, "reason": bad.reason}


def read_bounces(path: str | Path, now: Callable[[], datetime] | None = None) -> Mailbox:
    """Read every message at ``path`` (mbox, Maildir, .eml); nothing is written.

    ``now`` is the clock report dates are judged plausible against (tests).
    """
    box = Mailbox(str(path))
    for mail in read_mail(path):
        box.messages += 1
        try:
            report = parse(mail.data, now)
        except FieldError as exc:
            text = mail.data[:_MAX_KEPT].decode("utf-8", "replace")
            box.invalid.append(InvalidEvent(mail.index, exc.field, exc.message, {"file": mail.file, "message": text}, mail.line))
            continue
        if report.kind == UNSUBSCRIBE_REQUEST:
            box.requests.append(Read(mail.where, report))
        elif report.outcomes:
            box.reports.append(Read(mail.where, report))
        else:
            box.ignored[report.kind] += 1
    return box


def match(conn: Connection, box: Mailbox, return_path: ReturnPath | None = None) -> tuple[Batch, list[Unmatched], Counter]:
    """The events of ``box``'s reports tied to their deliveries, the unmatched ones, and how each matched.

    With ``return_path`` (``[delivery.smtp] verp``), a report whose return
    path carries a valid tag answers that tag's delivery; one without is
    unverified: listed, unless ``return_path.required`` is false and it
    returns a Message-ID the ledger holds. An address alone never matches then.
    """
    tags = {id(r): _tag(r.report, return_path) for r in box.reports} if return_path is not None else {}
    by_tag = _deliveries_by_id(conn, {t for t, _ in tags.values() if t is not None})
    untagged = [r for r in box.reports if tags.get(id(r), (None, ""))[0] is None]
    # With verp_required, only an e-mail that left without a tag (the ledger says so) may be found by its
    # Message-ID: a tagged one's report must carry the tag, an untagged one's cannot.
    by_id = _deliveries(conn, {i for r in untagged for i in r.report.message_ids},
                        untagged_only=return_path is not None and return_path.required)
    need = {normalize(o.recipient) for r in untagged for o in r.report.outcomes
            if o.recipient and _known(r.report, by_id) is None} if return_path is None else set()
    sent = _sent_to(conn, need)
    batch = Batch(PROVIDER, box.source, invalid=list(box.invalid), ignored=box.ignored.copy(), records=box.messages)
    unmatched: list[Unmatched] = []
    how: Counter = Counter()
    for read in box.reports:
        report = read.report
        tag, unverified = tags.get(id(read), (None, ""))
        known = _known(report, by_id)
        for outcome in report.outcomes:
            if tag is not None:
                delivery = by_tag.get(tag)
                if delivery is None:
                    gone = ("its customer was erased since" if tag in by_tag
                            else "the ledger does not hold it (another database?)")
                    unmatched.append(Unmatched(read.where, outcome.recipient, outcome.type,
                                               f"its return-path tag names delivery {tag}, but {gone}"))
                    continue
                how["tag"] += 1
            elif known is not None:
                delivery = by_id[known]
                if delivery is None:
                    unmatched.append(Unmatched(read.where, outcome.recipient, outcome.type,
                                               f"the customer of {known} was erased since"))
                    continue
                how["message-id"] += 1
            elif return_path is not None:
                rest = ("only a tagged report is applied (verp_required)" if return_path.required
                        else "and it returns no Message-ID the ledger holds")
                unmatched.append(Unmatched(read.where, outcome.recipient, outcome.type,
                                           f"unverified: {unverified}; {rest}", unverified=True))
                continue
            else:
                delivery, why = _latest_before(sent.get(normalize(outcome.recipient), []), report, bool(outcome.recipient))
                if delivery is None:
                    unmatched.append(Unmatched(read.where, outcome.recipient, outcome.type, why))
                    continue
                how["address"] += 1
            batch.events.append(_event(read, outcome, delivery))
    return batch, unmatched, how


def _known(report: Report, by_id: dict) -> str | None:
    """The first of the report's Message-IDs the ledger holds (the returned one, else ``X-Relmail-Message-ID``)."""
    return next((i for i in report.message_ids if i in by_id), None)


def _tag(report: Report, return_path: ReturnPath) -> tuple[int | None, str]:
    """The delivery the report's return path names, or None and why it names none."""
    deliveries = {d for d in map(return_path.delivery_in, report.return_paths) if d is not None}
    if len(deliveries) == 1:
        return deliveries.pop(), ""
    if deliveries:
        return None, f"its return paths carry the tags of {len(deliveries)} different e-mails"
    if any(return_path.looks_tagged(a) for a in report.return_paths):
        return None, "its return-path tag is invalid or altered"
    return None, "not sent to a tagged return path"


def import_bounces(
    engine: Engine, paths: Sequence[str | Path], dry_run: bool = False, now: Callable[[], datetime] | None = None,
    signing_key: str | None = None, return_path: ReturnPath | None = None, project_name: str = "",
    authserv_id: str | None = None,
) -> BounceResult:
    """Read, match and apply the bounce mailboxes at ``paths`` in one transaction.

    Every message that reports a bounce, a delay, a delivery or a complaint
    is applied once; unusable messages are recorded (``relmail feedback
    rejects``) and listed in :attr:`BounceResult.invalid`; outcomes no
    delivery answers are listed in :attr:`BounceResult.unmatched`. With
    ``dry_run`` nothing is written. A mailbox that cannot be read at all
    raises :class:`~relmail.errors.ValidationError` before anything is written.
    Unsubscribe requests are checked with ``signing_key`` (the project's
    ``RELMAIL_SIGNING_KEY``) for ``project_name`` (its ``[project] name``);
    without the key they are listed, not applied. A hand-written request (no
    token) is applied when ``authserv_id``'s ``Authentication-Results`` vouch
    for its sender, a customer; otherwise it is listed in :attr:`BounceResult.review`.
    With ``return_path`` (``[delivery.smtp] verp``), reports are matched by
    their return-path tag (:func:`match`).
    """
    boxes = [read_bounces(p, now) for p in paths]
    result = BounceResult([b.source for b in boxes], sum(b.messages for b in boxes), dry_run=dry_run)
    with (engine.connect() if dry_run else engine.begin()) as conn:
        for box in boxes:
            batch, unmatched, how = match(conn, box, return_path)
            result.unmatched += unmatched
            result.matched_by += how
            result.invalid += [(box, bad) for bad in box.invalid]
            result.ignored += box.ignored
            if dry_run:
                result.applied.applied.update(e.type for e in batch.events)
            else:
                _add(result.applied, ingest(conn, batch, source="bounce-mailbox"))
            for read in box.requests:
                if read.report.token is None:
                    _hand_written(conn, read, authserv_id, result)
                else:
                    _request(conn, read, signing_key, project_name, result)
    return result


def _request(conn: Connection, read: Read, key: str | None, project: str, result: BounceResult) -> None:
    """Apply one unsubscribe request whose token verifies; list it as unmatched otherwise."""
    report = read.report
    if not key:
        why = "the signing key is not set (RELMAIL_SIGNING_KEY): its token cannot be checked"
    else:
        try:
            claims = tokens.verify(key, report.token or "", link_projects.accepted(conn, project))
        except SignatureError:
            why = "the token in its subject is invalid or altered (or made for another project)"
        else:
            if result.dry_run:
                result.applied.applied["unsubscribed"] += 1
            else:
                _add(result.applied, unsubscribe_in(conn, claims, now=report.date, origin=f"List-Unsubscribe mailto ({read.where})"))
            result.matched_by["token"] += 1
            return
    result.unmatched.append(Unmatched(read.where, report.sender, "unsubscribed", why))


def _hand_written(conn: Connection, read: Read, authserv_id: str | None, result: BounceResult) -> None:
    """Apply a hand-written unsubscribe request whose sender is vouched for and a customer; list it for review otherwise."""
    report = read.report
    sender = normalize(report.sender) if report.sender else ""
    how = vouched(report.authentication, authserv_id, sender) if authserv_id and sender else None
    owners = owners_by_address(conn, {sender}).get(sender, []) if sender else []
    if not authserv_id:
        why = "no token, and [unsubscribe] authserv_id is not set: its sender cannot be verified"
    elif how is None:
        why = f"no token, and the Authentication-Results of {authserv_id} show no DMARC or DKIM pass for its From domain"
    elif not owners:
        why = "no token, and its From address is no customer's"
    else:
        # The request names no list: a person asking to be removed wants no more e-mail.
        # One event for the mailbox: every customer with the address is opted out (as for a bounce).
        events = [FeedbackEvent(type="unsubscribed", occurred_at=report.date, recipient=sender, provider=PROVIDER,
                                provider_event_id=derived_id(report.identity, "unsubscribe request"),
                                scope="all", detail=f"hand-written unsubscribe request ({how} for its From domain)")]
        if result.dry_run:
            result.applied.applied["unsubscribed"] += 1
        else:
            _add(result.applied, apply_events(conn, events, source="bounce-mailbox", origin=read.where))
        result.matched_by["sender"] += 1
        return
    result.review.append(Unmatched(read.where, report.sender, "unsubscribed", why))


def _add(total: ApplyResult, part: ApplyResult) -> None:
    total.applied += part.applied
    total.duplicates += part.duplicates
    total.opt_outs += part.opt_outs


def _event(read: Read, outcome: Outcome, delivery: tuple[str, str, str]) -> FeedbackEvent:
    run_id, customer_id, message_id = delivery
    report = read.report
    return FeedbackEvent(
        outcome.type, report.date, outcome.recipient, PROVIDER,
        derived_id(report.identity, normalize(outcome.recipient), outcome.type),
        customer_id=customer_id, run_id=run_id, message_id=message_id, reason=outcome.reason[:500],
        esp_event={"message": read.where, "kind": report.kind, "status": outcome.status, "subject": report.subject},
    )


def _deliveries_by_id(conn: Connection, ids: set[int]) -> dict[int, tuple[str, str, str] | None]:
    """Delivery id -> (run, customer, message); None when its customer was erased; absent when not in the ledger."""
    return _deliveries_by(conn, Delivery.__table__.c.id, ids)


def _deliveries(conn: Connection, message_ids: set[str], untagged_only: bool = False) -> dict[str, tuple[str, str, str] | None]:
    """Message-ID -> (run, customer, message) of the delivery that carried it; None when its customer was erased.

    An erased customer's deliveries stay in the ledger; a late bounce of one
    of them is about nobody relmail may record anything for. ``untagged_only``:
    only deliveries the ledger records as sent without a VERP tag.
    """
    D = Delivery.__table__
    return _deliveries_by(conn, D.c.rfc_message_id, message_ids, D.c.return_path_tagged.is_(False) if untagged_only else None)


def _deliveries_by(conn: Connection, column, keys: set, condition=None) -> dict:
    """``column``'s value -> (run, customer, message) of the delivery that has it; None when its customer was erased."""
    D, C = Delivery.__table__, Customer.__table__
    found: dict = {}
    for chunk in chunks(sorted(keys)):
        stmt = select(column, D.c.run_id, D.c.customer_id, D.c.message_id, C.c.id).outerjoin(C, C.c.id == D.c.customer_id)
        for key, run, customer, message, present in conn.execute(
            stmt.where(column.in_(chunk), *(() if condition is None else (condition,)))
        ):
            found[key] = (run, customer, message) if present is not None else None
    return found


def _sent_to(conn: Connection, addresses: set[str]) -> dict[str, list[tuple[datetime, str, str, str]]]:
    """Normalized address -> its e-mails sent by relmail, newest first: (time, run, customer, message).

    Two steps, the customers and then their sends through the events'
    customer index: one joined statement lets SQLite read every event.
    """
    E = Event.__table__
    owner = {customer: address for address, customers in owners_by_address(conn, addresses).items()
             for customer in customers}
    out: dict[str, list[tuple[datetime, str, str, str]]] = {address: [] for address in addresses}
    for chunk in chunks(sorted(owner)):
        rows = conn.execute(select(E.c.customer_id, E.c.occurred_at, E.c.run_id, E.c.message_id)
                            .where(E.c.customer_id.in_(chunk), E.c.type == "email_sent"))
        for customer, at, run, message in rows:
            out[owner[customer]].append((at, run, customer, message))
    for sends in out.values():
        sends.sort(key=lambda s: (s[0], s[2]), reverse=True)
    return out


def _latest_before(
    sends: list[tuple[datetime, str, str, str]], report: Report, has_address: bool
) -> tuple[tuple[str, str, str] | None, str]:
    """The most recent send before the report, or None and why there is none."""
    for at, run, customer, message in sends:
        if at <= report.date:
            return (run, customer, message), ""
    known = (f"Message-ID {report.original_message_id} is not in the ledger"
             if report.original_message_id else "the bounce returns no Message-ID")
    if not has_address:
        return None, f"{known}, and the report names no recipient"
    if sends:
        return None, f"{known}, and relmail sent nothing to this address before the bounce ({report.date:%Y-%m-%d %H:%M} UTC)"
    return None, f"{known}, and relmail never sent an e-mail to this address"
