"""Writing feedback events to the store: in bulk, idempotently.

Every event becomes one ``events`` row (``email_bounced_hard`` ...) whose
``event_id`` is the provider plus the provider's event id, so a webhook the
provider delivers again, or an export imported twice, writes nothing new.
Complaints and unsubscribes also withdraw consent in ``preferences``: the
topic the recipient left, or ``*`` (everything). Hard bounces, complaints
and unsubscribes are what the plan's suppression rules read.

All lookups and writes are set-based (one query per chunk, Core
executemany), never per-row ORM, so an export of 100k events applies in
seconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from ..delivery.idn import to_unicode
from ..store import aggregates, consent_log
from ..store.addresses import normalize
from ..store.db import dialect_insert, refresh_statistics
from ..store.models import EMAIL_LOWER, Customer, Delivery, Event, Preference
from ..tokens import TRIAL_RUNS
from .events import LINK_PROVIDER, OPT_OUT_TYPES, PREFERENCES_PROVIDER, RESUBSCRIBED, FeedbackEvent
from .records import InvalidEvent

#: IN-list size: well under SQLite's bound-parameter limit.
_CHUNK = 500

#: The global consent switch in ``preferences``.
ALL_TOPICS = "*"


@dataclass
class ApplyResult:
    """What applying a batch of events did."""

    #: Newly written events per normalized type.
    applied: Counter = field(default_factory=Counter)
    #: Events already in the store (a redelivered webhook, a re-import).
    duplicates: int = 0
    #: Events whose recipient is no customer of ours (skipped, not an error).
    unknown_recipients: int = 0
    #: Events about a proof or a preview (sent to someone testing, with a customer's data): skipped.
    proofs: int = 0
    #: Preference rows switched to opted out.
    opt_outs: int = 0
    #: Preference rows switched (back) to opted in by a provider's re-subscription.
    opt_ins: int = 0
    #: Provider events the POST or file held (set by :func:`~relmail.feedback.ingest.ingest`).
    received: int = 0
    #: Provider events that could not be used: recorded in ``feedback_rejects``, not applied.
    invalid: list[InvalidEvent] = field(default_factory=list)
    #: Provider events of kinds relmail does not track, by the provider's name for the kind.
    ignored: Counter = field(default_factory=Counter)
    #: The provider delivered this exact signed POST before (its events were applied then).
    redelivered: bool = False

    @property
    def total_applied(self) -> int:
        return sum(self.applied.values())

    def as_dict(self) -> dict:
        return {
            "received": self.received,
            "applied": dict(sorted(self.applied.items())),
            "total_applied": self.total_applied,
            "duplicates": self.duplicates,
            "unknown_recipients": self.unknown_recipients,
            "proofs": self.proofs,
            "opt_outs": self.opt_outs,
            "opt_ins": self.opt_ins,
            "ignored": dict(sorted(self.ignored.items())),
            "invalid": [bad.as_dict() for bad in self.invalid],
            "redelivered": self.redelivered,
        }


def chunks(items: Sequence, size: int = _CHUNK) -> Iterable[Sequence]:
    """``items`` in slices of ``size``: the IN lists of the feedback lookups."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _existing_customers(conn: Connection, ids: set[str]) -> set[str]:
    table = Customer.__table__
    found: set[str] = set()
    for chunk in chunks(sorted(ids)):
        found.update(conn.execute(select(table.c.id).where(table.c.id.in_(chunk))).scalars())
    return found


def owners_by_address(conn: Connection, addresses: set[str]) -> dict[str, list[str]]:
    """Normalized address -> every customer with it (a bounce or an opt-out is the mailbox's, whoever shares it).

    Compared lower-cased, as imports store addresses in the case they came
    in, through the customers' ``lower(email)`` index.
    """
    table = Customer.__table__
    key = EMAIL_LOWER
    # A provider reports an umlaut domain in the IDNA form it was sent to (xn--mller-kva.example);
    # the store keeps it as imported (müller.example).
    asked = {address: address for address in addresses}
    for address in addresses:
        unicode = _unicode_domain(address)
        if unicode != address:
            asked.setdefault(unicode, address)
    found: dict[str, list[str]] = {}
    for chunk in chunks(sorted(asked)):
        for cid, email in conn.execute(select(table.c.id, key).where(key.in_(chunk)).order_by(table.c.id)):
            ids = found.setdefault(asked.get(email, email), [])
            if cid not in ids:
                ids.append(cid)
    return found


def _unicode_domain(address: str) -> str:
    """``info@xn--mller-kva.example`` -> ``info@müller.example``; other addresses as they are."""
    local, at, domain = address.rpartition("@")
    if not at or "xn--" not in domain.lower():
        return address
    try:
        return f"{local}@{to_unicode(domain).lower()}"
    except UnicodeError:
        return address


def _sent_topics(conn: Connection, keys: set[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
    """(customer, run, message) -> topic, from the ``email_sent`` events of these (customer, run, message).

    Looked up by customer (the events' customer index), not by run: a run
    of a million e-mails would otherwise be read whole for a few events.
    """
    table = Event.__table__
    runs = sorted({run for _, run, _ in keys})
    topics: dict[tuple[str, str, str], str] = {}
    for chunk in chunks(sorted({cid for cid, _, _ in keys})):
        stmt = select(table.c.customer_id, table.c.run_id, table.c.message_id, table.c.topic).where(
            table.c.type == "email_sent", table.c.customer_id.in_(chunk), table.c.topic.is_not(None))
        if len(runs) <= _CHUNK:
            stmt = stmt.where(table.c.run_id.in_(runs))
        for cid, run, message, topic in conn.execute(stmt):
            if (cid, run, message) in keys:
                topics[(cid, run, message)] = topic
    return topics


def tie_to_deliveries(conn: Connection, events: Sequence[FeedbackEvent]) -> list[FeedbackEvent]:
    """``events``, those without relmail's metadata tied to their delivery by the provider's id of the e-mail.

    An SES identity notification carries no tags, only ``mail.messageId``:
    the id SES answered the send with, which the ledger keeps as
    ``deliveries.provider_id`` (indexed). Where exactly one delivery of the
    event's provider has it, the event takes that delivery's customer, run
    and message. A delivery's ``adapter`` names its provider (the adapters'
    and the feedback providers' names are the same): another provider's id
    that happens to be equal never matches. A delivery claimed before the
    ledger wrote the adapter (None) matches any provider. An id the ledger
    does not hold (mail sent by something else, an erased customer's
    cleared row) leaves the event to its recipient address.
    """
    wanted = sorted({e.sent_id for e in events if e.sent_id and not (e.run_id and e.message_id)})
    if not wanted:
        return list(events)
    table = Delivery.__table__
    found: dict[str, list[tuple[str | None, str, str, str]]] = {}
    for chunk in chunks(wanted):
        stmt = select(table.c.provider_id, table.c.adapter, table.c.customer_id, table.c.run_id, table.c.message_id).where(
            table.c.provider_id.in_(chunk))
        for provider_id, adapter, cid, run, message in conn.execute(stmt):
            found.setdefault(provider_id, []).append((adapter, cid, run, message))
    out = []
    for event in events:
        candidates = found.get(event.sent_id or "", []) if not (event.run_id and event.message_id) else []
        match = [(cid, run, message) for adapter, cid, run, message in candidates if adapter in (None, event.provider)]
        if len(match) == 1:
            cid, run, message = match[0]
            event = replace(event, customer_id=cid, run_id=run, message_id=message)
        out.append(event)
    return out


def _stored(conn: Connection, unique: dict[str, tuple[str, FeedbackEvent]]) -> set[str]:
    """The keys of ``unique`` whose event the store holds already.

    By its key; by a key an earlier relmail gave the same event
    (:attr:`~.events.FeedbackEvent.former_ids`); and, for an event that
    happens once per e-mail, by any event of its provider and type stored
    for the same customer, run and message (or met earlier in this batch).
    """
    former = {event_id: [_shared(key, event_id, cid, event) for key in event.former_event_ids]
              for event_id, (cid, event) in unique.items() if event.former_ids}
    found = _existing_event_ids(conn, [*unique, *(key for keys in former.values() for key in keys)])
    stored = {event_id for event_id in unique if event_id in found or any(k in found for k in former.get(event_id, ()))}
    once = {event_id: (cid, event.run_id, event.message_id, event.store_type, event.provider)
            for event_id, (cid, event) in unique.items()
            if event.one_per_email and event.run_id and event.message_id and event_id not in stored}
    if once:
        seen = _stored_per_email(conn, set(once.values()))
        for event_id, key in once.items():
            if key in seen:
                stored.add(event_id)
            seen.add(key)
    return stored


def _shared(key: str, event_id: str, cid: str, event: FeedbackEvent) -> str:
    """``key`` as :func:`resolve` makes it for one of the customers sharing the event's address."""
    return f"{key}#{cid}"[:128] if event_id != event.event_id else key


def _stored_per_email(conn: Connection, keys: set[tuple[str, str, str, str, str]]) -> set[tuple[str, str, str, str, str]]:
    """Of ``keys`` (customer, run, message, type, provider), those the store holds an event for."""
    table = Event.__table__
    types, runs = sorted({k[3] for k in keys}), sorted({k[1] for k in keys})
    found: set[tuple[str, str, str, str, str]] = set()
    for chunk in chunks(sorted({k[0] for k in keys})):
        rows = conn.execute(select(table.c.customer_id, table.c.run_id, table.c.message_id, table.c.type, table.c.event_id)
                            .where(table.c.customer_id.in_(chunk), table.c.type.in_(types), table.c.run_id.in_(runs)))
        for cid, run, message, kind, event_id in rows:
            provider = event_id.partition(":")[0]
            if (cid, run, message, kind, provider) in keys:
                found.add((cid, run, message, kind, provider))
    return found


def _existing_event_ids(conn: Connection, ids: list[str]) -> set[str]:
    table = Event.__table__
    found: set[str] = set()
    for chunk in chunks(ids):
        found.update(conn.execute(select(table.c.event_id).where(table.c.event_id.in_(chunk))).scalars())
    return found


def resolve(conn: Connection, events: Sequence[FeedbackEvent]) -> tuple[list[tuple[str, str, FeedbackEvent]], int]:
    """Pair each event with the customers it concerns.

    Returns ``[(event_id, customer_id, event), ...]`` and the number of
    events whose recipient is unknown. The metadata's customer id wins when
    that customer exists; otherwise the recipient address decides, and an
    address shared by several customers applies to each of them (a bounce
    or an unsubscribe is about the mailbox, not one record).
    """
    known = _existing_customers(conn, {e.customer_id for e in events if e.customer_id})
    need_address = {normalize(e.recipient) for e in events if e.customer_id not in known and e.recipient}
    by_address = owners_by_address(conn, need_address) if need_address else {}
    pairs: list[tuple[str, str, FeedbackEvent]] = []
    unknown = 0
    for event in events:
        if event.customer_id in known:
            pairs.append((event.event_id, event.customer_id, event))
            continue
        ids = by_address.get(normalize(event.recipient), []) if event.recipient else []
        if not ids:
            unknown += 1
        elif len(ids) == 1:
            pairs.append((event.event_id, ids[0], event))
        else:
            pairs.extend((f"{event.event_id}#{cid}"[:128], cid, event) for cid in ids)
    return pairs, unknown


def apply_events(
    target: Engine | Connection,
    events: Sequence[FeedbackEvent],
    source: str = "esp-webhook",
    opt_out_duplicates: bool = False,
    origin: str | None = None,
) -> ApplyResult:
    """Write ``events`` to the store; a second call with the same events writes nothing.

    ``target`` is an engine (one transaction is opened) or a connection
    inside the caller's transaction (so an import is all-or-nothing).
    ``source`` is recorded on the preference rows an opt-out writes.
    ``opt_out_duplicates`` re-applies the opt-out of an event already
    stored: an unsubscribe link clicked again after the customer had
    re-subscribed must unsubscribe again. ``origin`` says where the events
    came from (the imported file, the mailbox, how a link was used) in the
    consent history (:mod:`relmail.store.consent_log`).
    """
    if isinstance(target, Engine):
        with target.begin() as conn:
            return apply_events(conn, events, source, opt_out_duplicates, origin)
    conn = target
    result = ApplyResult()
    events = tie_to_deliveries(conn, events)
    # A proof names the customer whose data it shows, but went to someone testing: a bounce,
    # complaint or unsubscribe of that mailbox says nothing about the customer.
    trial = [e for e in events if e.run_id in TRIAL_RUNS]
    if trial:
        result.proofs = len(trial)
        events = [e for e in events if e.run_id not in TRIAL_RUNS]
    if not events:
        return result
    pairs, result.unknown_recipients = resolve(conn, events)

    # De-duplicate inside the batch first (an export can repeat an event),
    # then against the store.
    unique: dict[str, tuple[str, FeedbackEvent]] = {}
    for event_id, cid, event in pairs:
        if event_id in unique:
            result.duplicates += 1
        else:
            unique[event_id] = (cid, event)
    stored = _stored(conn, unique)
    result.duplicates += len(stored)

    sent = {(cid, e.run_id, e.message_id) for cid, e in unique.values() if e.run_id and e.message_id}
    topics = _sent_topics(conn, sent) if sent else {}

    rows, opt_outs, opt_ins = [], [], []
    for event_id, (cid, event) in unique.items():
        sent_topic = topics.get((cid, event.run_id, event.message_id))
        if event.lists:
            event = _list_of(event, sent_topic)
        topic = event.topic or sent_topic
        if event.topics:
            # A list of several topics: the event is the message's topic's, if the list covers it.
            topic = sent_topic if sent_topic in event.topics else event.topics[0]
        is_new = event_id not in stored
        if event.type == RESUBSCRIBED:
            # Not an ``events`` row: the consent history keeps it, and its dates make it idempotent.
            result.applied[event.type] += 1
            scope = event.topics if event.scope == "topic" else (ALL_TOPICS,)
            opt_ins.extend(OptOut(cid, t, event.occurred_at, event.detail, event_id) for t in scope)
            continue
        if is_new:
            result.applied[event.type] += 1
            rows.append(
                {
                    "event_id": event_id,
                    "customer_id": cid,
                    "type": event.store_type,
                    "occurred_at": event.occurred_at,
                    "message_id": event.message_id,
                    "run_id": event.run_id,
                    "topic": topic,
                }
            )
        if event.type in OPT_OUT_TYPES and (is_new or opt_out_duplicates):
            # A complaint means "stop everything"; an unsubscribe is global
            # unless the provider says the recipient left one list.
            scope_topics = (event.topics or (topic,)) if event.type == "unsubscribed" and event.scope == "topic" else ()
            # The provider's event, unless relmail's own page is the provider (the source says so).
            what = event.detail or (None if event.provider in (LINK_PROVIDER, PREFERENCES_PROVIDER) else (
                f"{event.provider} {'complaint' if event.type == 'complained' else 'unsubscribe'}"))
            detail = "; ".join(filter(None, [what, origin])) or None
            opt_outs.extend(OptOut(cid, t or ALL_TOPICS, event.occurred_at, detail, event_id)
                            for t in scope_topics or (None,))

    if rows:
        table = Event.__table__
        conn.execute(dialect_insert(conn, table).on_conflict_do_nothing(index_elements=[table.c.event_id]), rows)
        refresh_statistics(conn, table.name, len(rows))
        aggregates.refresh(conn, {row["customer_id"] for row in rows})
    if opt_outs:
        result.opt_outs = opt_out(conn, opt_outs, source)
    if opt_ins:
        result.opt_ins = opt_in(conn, [replace(i, detail="; ".join(filter(None, [i.detail, origin])) or None)
                                       for i in opt_ins], source)
    return result


def _list_of(event: FeedbackEvent, sent_topic: str | None) -> FeedbackEvent:
    """``event`` scoped to the one of its provider's lists the e-mail on ``sent_topic`` went with."""
    held = [topics for topics in event.lists if sent_topic in topics] or [t for t in event.lists if t == ("*",)]
    if sent_topic is None or not held or held[0] == ("*",):
        # Which list the e-mail went with is unknown (or it is the global one): every list may be the one.
        return replace(event, scope="all", topics=(), lists=())
    return replace(event, scope="topic", topics=held[0], lists=())


@dataclass(frozen=True)
class OptOut:
    """One opt-out (or opt-in) to write: (customer, topic) as of ``when``, and what the consent history says of it."""

    customer_id: str
    topic: str
    when: datetime
    detail: str | None = None
    event_id: str | None = None


def opt_out(conn: Connection, items: Iterable[OptOut], source: str) -> int:
    """Set (customer, topic) to opted out as of each time; returns rows changed.

    A row already opted out is left as it is (a replay changes nothing), and
    so is a row whose consent was updated *after* the event: an old
    unsubscribe imported late must not undo a newer opt-in. Each row changed
    is added to the consent history with its ``detail``.
    """
    return _set(conn, _latest(items), False, source)


def opt_in(conn: Connection, items: Iterable[OptOut], source: str) -> int:
    """Set (customer, topic) to opted in as of each time (a provider's re-subscription); returns rows changed.

    Only a row opted out *before* that time changes (or a missing one is
    written): an opt-out made after the re-subscription stands, also one
    that found the row already opted out (only its unsubscribe event says so).
    """
    latest = _latest(items)
    for key in _unsubscribed_after(conn, latest):
        del latest[key]
    return _set(conn, latest, True, source)


def _latest(items: Iterable[OptOut]) -> dict[tuple[str, str], OptOut]:
    """The newest item per (customer, topic)."""
    latest: dict[tuple[str, str], OptOut] = {}
    for item in items:
        key = (item.customer_id, item.topic)
        if key not in latest or item.when > latest[key].when:
            latest[key] = item
    return latest


def _set(conn: Connection, latest: dict[tuple[str, str], OptOut], opted_in: bool, source: str) -> int:
    """Write each (customer, topic) as ``opted_in`` as of its item's time, where the row is the other way and not newer."""
    if not latest:
        return 0
    table = Preference.__table__
    rows = [{"customer_id": cid, "topic": topic, "opted_in": opted_in, "updated_at": item.when, "source": source}
            for (cid, topic), item in latest.items()]
    before = _in_state(conn, list(latest), opted_in)
    stmt = dialect_insert(conn, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.customer_id, table.c.topic],
        set_={"opted_in": opted_in, "updated_at": stmt.excluded.updated_at, "source": stmt.excluded.source},
        where=(table.c.opted_in.is_(not opted_in)) & (table.c.updated_at <= stmt.excluded.updated_at),
    )
    conn.execute(stmt, rows)
    return _log_changes(conn, latest, before, opted_in, source)


def _unsubscribed_after(conn: Connection, items: dict[tuple[str, str], OptOut]) -> set[tuple[str, str]]:
    """The (customer, topic) of ``items`` with an unsubscribe after the item's time: of that topic, or any for ``*``."""
    table = Event.__table__
    since = min(item.when for item in items.values())
    found: set[tuple[str, str]] = set()
    for chunk in chunks(sorted({cid for cid, _ in items})):
        rows = conn.execute(select(table.c.customer_id, table.c.topic, table.c.occurred_at).where(
            table.c.type == "email_unsubscribed", table.c.customer_id.in_(chunk), table.c.occurred_at > since))
        for cid, topic, at in rows:
            for key in ((cid, topic), (cid, ALL_TOPICS)):
                if key in items and at > items[key].when:
                    found.add(key)
    return found


def _log_changes(conn: Connection, latest: dict[tuple[str, str], OptOut], before: set[tuple[str, str]], opted_in: bool,
                 source: str) -> int:
    """Add the rows that came to ``opted_in`` to the consent history; how many."""
    changed = sorted(_in_state(conn, list(latest), opted_in) - before)
    consent_log.record(conn, [
        {"customer_id": cid, "topic": topic, "opted_in": opted_in, "changed_at": latest[(cid, topic)].when,
         "source": source, "detail": latest[(cid, topic)].detail, "event_id": latest[(cid, topic)].event_id}
        for cid, topic in changed])
    return len(changed)


def _in_state(conn: Connection, keys: list[tuple[str, str]], opted_in: bool) -> set[tuple[str, str]]:
    """Which of these (customer, topic) rows are opted in (or out) (rowcount is unreliable with executemany)."""
    table = Preference.__table__
    found: set[tuple[str, str]] = set()
    for chunk in chunks(keys):
        by_customer: dict[str, list[str]] = {}
        for cid, topic in chunk:
            by_customer.setdefault(cid, []).append(topic)
        rows = conn.execute(
            select(table.c.customer_id, table.c.topic).where(
                table.c.customer_id.in_(list(by_customer)), table.c.opted_in.is_(opted_in)
            )
        )
        found.update((cid, topic) for cid, topic in rows if topic in by_customer.get(cid, ()))
    return found
