"""The send ledger: the durable state of every delivery, so nothing is sent twice or skipped.

A delivery (one ``send`` decision) moves through these states, each change
committed before the next step:

``planned``
    created from the decision; nothing has left.
``sending``
    claimed by a sender; the message may be on the wire, but the point of no
    return (SMTP's final ``.``, an ESP's request) has not been passed.
``committing``
    recorded immediately *before* the point of no return. A crash here is the
    only case whose outcome we cannot know; relmail assumes it was delivered,
    because the brief ranks "never send twice" above "never skip".
``accepted`` / ``rejected``
    the provider's answer; final.
``deferred``
    a temporary failure; retried from ``next_attempt_at`` until the deadline,
    then ``failed``.
``failed``
    given up (deadline passed, or the template failed for this customer).
``withdrawn``
    not sent on purpose: the customer opted out, complained or hard-bounced
    after the plan (its reason starts :data:`OPTED_OUT` or :data:`SUPPRESSED`);
    final, never retried, not a fault.

Each answer is also written the moment it arrives, on the delivery while it is
still ``committing`` (its ``answer``, :func:`answer_text`): the batch's answers
are recorded together afterwards, and a crash in between must not lose them.

After a crash, :func:`recover` puts ``sending`` back to ``planned`` (the point
of no return was never passed, so the provider dropped the transaction) and
settles ``committing`` by its written answer: accepted with the provider's id,
deferred (due again), refused (a hard bounce suppresses the address). A
``committing`` delivery with no answer is the one case whose outcome is
unknown: settled as accepted with the uncertainty noted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, case, func, insert, literal, or_, select, update
from sqlalchemy.engine import Connection, Engine

from ..store import aggregates
from ..store.db import dialect_insert
from ..store.models import Decision, Delivery, Event
from .redact import without_addresses

D = Delivery.__table__
DEC = Decision.__table__
EV = Event.__table__

#: What the send records for an e-mail it did not send because the customer opted out, complained,
#: hard-bounced or was removed from the shop after the plan (:func:`relmail.sending.loop.deliver`): final,
#: and not a failure.
WITHDRAWN = "withdrawn"
#: States a delivery never leaves.
FINAL = ("accepted", "rejected", "failed", WITHDRAWN)
#: States an answer from the provider may settle.
IN_FLIGHT = ("planned", "sending", "committing")
UNCERTAIN = "outcome unknown after an interruption at the point of no return; assumed delivered"
#: What the send summary and the run report call an ``accepted`` delivery noted :data:`UNCERTAIN`:
#: handed over completely, no reply from the provider, never sent again.
UNCERTAIN_OUTCOME = "uncertain"
#: How a :data:`WITHDRAWN` delivery's reason starts: the customer opted out (``OPTED_OUT``), or
#: complained, hard-bounced or was removed from the shop (``SUPPRESSED``), after the plan.
OPTED_OUT, SUPPRESSED = "OPTED_OUT", "SUPPRESSED"


@dataclass(frozen=True)
class Claim:
    """A delivery handed to a sender."""

    delivery_id: int
    customer_id: str
    message_id: str
    attempts: int


@dataclass(frozen=True)
class Settlement:
    """How one delivery is settled in the ledger: the provider's answer, or relmail's own verdict."""

    delivery_id: int
    status: str  # accepted | deferred | rejected | failed | withdrawn
    provider_id: str | None = None
    retry_at: datetime | None = None
    reason: str | None = None
    #: A permanent recipient failure: recorded as ``email_bounced_hard`` so
    #: every later plan suppresses the address.
    hard_bounce: bool = False


def settlement(answer, now: datetime, adapter_now: datetime) -> Settlement | None:
    """How the provider's answer (a :class:`~relmail.delivery.base.Result`) settles its delivery; None if withheld.

    A withheld e-mail was never handed over: it is released, not settled. An
    ambiguous one (handed over completely, answer lost) was marked
    ``committing`` and is settled as delivered: never sending twice wins over
    certainty. The adapter dates a retry by its own clock (the system's), the
    ledger by this send's (``$RELMAIL_NOW`` in a rehearsal): the delay the
    adapter asked for counts from ``now``, and never within this second, or a
    rehearsal ahead of the system clock would claim it again at once, forever,
    while the server stayed down.
    """
    delivery_id = int(answer.key[1:])
    if answer.withheld:
        return None
    if answer.status == "deferred" and answer.ambiguous:
        return Settlement(delivery_id, "accepted", reason=f"{UNCERTAIN}: {answer.reason}")
    retry_at = answer.retry_at
    if answer.status == "deferred":
        not_before = now + timedelta(seconds=1)
        retry_at = max(now + (retry_at - adapter_now), not_before) if retry_at is not None else not_before
    return Settlement(delivery_id, answer.status, answer.provider_id, retry_at, answer.reason or None, answer.hard_bounce)


def answer_text(s: Settlement) -> str:
    """``s`` as the ledger's ``answer`` column holds it until the batch is recorded (:func:`from_answer` reads it)."""
    return json.dumps([s.status, s.provider_id, s.retry_at.isoformat() if s.retry_at else None, s.reason, s.hard_bounce])


def from_answer(delivery_id: int, text: str) -> Settlement:
    status, provider_id, retry_at, reason, hard_bounce = json.loads(text)
    return Settlement(delivery_id, status, provider_id, datetime.fromisoformat(retry_at) if retry_at else None, reason,
                      hard_bounce)


def prepare(engine: Engine, run_id: str, now: datetime) -> int:
    """Create a ``planned`` delivery for every ``send`` decision of the run that has none.

    Idempotent: a decision gets at most one delivery (unique ``decision_id``).
    A decision that has one is skipped by that index (``ON CONFLICT DO
    NOTHING``), not by ``NOT EXISTS``: PostgreSQL, whose statistics call the
    new run's deliveries table empty, plans that as a scan of the very table
    being filled for every row.
    """
    sends = (
        select(
            DEC.c.id,
            DEC.c.run_id,
            DEC.c.customer_id,
            DEC.c.message_id,
            literal("planned"),
            literal(0),
            literal(now, type_=D.c.updated_at.type),
        )
        .where(DEC.c.run_id == run_id, DEC.c.action == "send")
    )
    cols = ["decision_id", "run_id", "customer_id", "message_id", "status", "attempts", "updated_at"]
    with engine.begin() as conn:
        stmt = dialect_insert(conn, D).from_select(cols, sends).on_conflict_do_nothing(index_elements=[D.c.decision_id])
        return len(conn.execute(stmt.returning(D.c.id)).all())


def recover(engine: Engine, run_id: str, now: datetime, topics: dict[str, str | None]) -> dict[str, int]:
    """Settle what a crashed sender left behind; see the module docstring.

    Returns how many deliveries went back to ``planned`` (``requeued``), were
    settled by the answer written when it arrived (``answered``), and were
    settled as delivered without one (``assumed_delivered``: no answer, or an
    ambiguous one, the connection lost after the hand-over).
    """
    with engine.begin() as conn:
        back = conn.execute(
            update(D).where(D.c.run_id == run_id, D.c.status == "sending").values(status="planned", updated_at=now)
        ).rowcount
        stuck = conn.execute(
            select(D.c.id, D.c.answer).where(D.c.run_id == run_id, D.c.status == "committing")
        ).all()
        settled = [from_answer(i, text) if text else Settlement(i, "accepted", reason=UNCERTAIN) for i, text in stuck]
        if settled:
            _record(conn, settled, now, topics)
    unknown = sum(1 for o in settled if _is_uncertain(o))
    return {"requeued": back, "answered": len(settled) - unknown, "assumed_delivered": unknown}


def claim(
    engine: Engine, run_id: str, now: datetime, limit: int, customers: Sequence[str] | None = None,
    message_id: Callable[[str, str], str] | None = None, adapter: str | None = None, tagged: bool | None = None,
) -> list[Claim]:
    """Atomically move up to ``limit`` due deliveries to ``sending`` and return them.

    ``message_id(customer, message)`` gives each claimed delivery its RFC 5322
    Message-ID in the same transaction (kept if it has one), so the ledger
    knows it before the e-mail can leave. ``adapter``, the registry name of
    the adapter that will carry them (``smtp``, ``ses`` ...), is written on
    each: a retry through another adapter carries the e-mail, so the last
    claim's is the one its ``provider_id`` belongs to. ``tagged``, whether that
    adapter sends with a signed VERP return path, is written with it.

    Due = ``deferred`` whose retry time has come (first), then ``planned``,
    each in id order. One UPDATE with RETURNING per state, so two senders can
    never claim the same delivery. Each state is its own statement so that
    both read the ``(run_id, status, id)`` index in order and stop after
    ``limit`` rows: with ``status IN (...)`` or an OR the database reads every
    delivery of the run and sorts them, once per batch, and a send of n
    e-mails costs O(n²) (24 ms per claim at 140,000 e-mails).
    """
    states = (
        (D.c.status == "deferred", D.c.next_attempt_at <= now),
        (D.c.status == "planned",),
    )
    rows: list = []
    with engine.begin() as conn:
        for conditions in states:
            want = limit - len(rows)
            if want <= 0:
                break
            due = select(D.c.id).where(D.c.run_id == run_id, *conditions)
            if customers is not None:
                due = due.where(D.c.customer_id.in_(list(customers)))
            due = due.order_by(D.c.id).limit(want)
            if conn.dialect.name == "postgresql":
                due = due.with_for_update(skip_locked=True)
            rows += conn.execute(
                update(D)
                .where(D.c.id.in_(due.scalar_subquery()))
                .values(status="sending", attempts=D.c.attempts + 1, updated_at=now,
                        **({"adapter": adapter} if adapter is not None else {}),
                        **({"return_path_tagged": tagged} if tagged is not None else {}))
                .returning(D.c.id, D.c.customer_id, D.c.message_id, D.c.attempts)
            ).all()
        if message_id is not None and rows:
            conn.execute(
                update(D).where(D.c.id == bindparam("b_id"), D.c.rfc_message_id.is_(None))
                .values(rfc_message_id=bindparam("b_mid")),
                [{"b_id": r[0], "b_mid": message_id(r[1], r[2])} for r in rows],
            )
    return sorted((Claim(*r) for r in rows), key=lambda c: c.delivery_id)


def mark_committing(conn: Connection, delivery_ids: Iterable[int], now: datetime) -> int:
    """Record that these deliveries are about to pass the point of no return; returns how many were marked.

    The caller commits this before the provider is told to go ahead, and
    hands over nothing unless every delivery was marked. A delivery already
    ``committing`` (a message sent again after its connection dropped before
    the final dot) counts as marked.
    """
    ids = list(delivery_ids)
    if not ids:
        return 0
    return conn.execute(
        update(D).where(D.c.id.in_(ids), D.c.status.in_(("sending", "committing")))
        .values(status="committing", updated_at=now)
    ).rowcount


def release(engine: Engine, delivery_ids: Sequence[int], now: datetime, reason: str) -> int:
    """Put claimed deliveries that were never handed over back to ``planned``, their attempt not counted.

    For e-mails an adapter withheld because their point-of-no-return mark
    failed, or because the send was asked to stop: the provider never got
    them, so they are due again at once and the claim's attempt is taken
    back. A mark that reached the database although its confirmation was
    lost left ``committing``, as did a chunk marked before a stop left its
    requests unmade; that is taken back too, since the adapter provably did
    not hand the e-mail over.
    """
    if not delivery_ids:
        return 0
    with engine.begin() as conn:
        return conn.execute(
            update(D).where(D.c.id.in_(list(delivery_ids)), D.c.status.in_(("sending", "committing")))
            .values(status="planned", attempts=D.c.attempts - 1,
                    last_error=reason, updated_at=now)
        ).rowcount


def record(
    engine: Engine,
    outcomes: Sequence[Settlement],
    now: datetime,
    topics: dict[str, str | None],
    deadline: datetime | None = None,
) -> dict[str, int]:
    """Write the providers' answers; accepted deliveries also become ``email_sent`` events.

    A deferral whose retry would fall after ``deadline`` is ``failed`` instead.
    """
    if deadline is not None:
        outcomes = [
            Settlement(o.delivery_id, "failed", o.provider_id, None, f"deferred past the deadline: {o.reason}")
            if o.status == "deferred" and (o.retry_at or now) > deadline
            else o
            for o in outcomes
        ]
    with engine.begin() as conn:
        return _record(conn, outcomes, now, topics)


def _record(conn: Connection, outcomes: Sequence[Settlement], now: datetime, topics: dict[str, str | None]) -> dict[str, int]:
    counts: dict[str, int] = {}
    if not outcomes:
        return counts
    # Only a delivery still in flight can be settled: a duplicate answer for
    # an accepted delivery must not move it again.
    conn.execute(
        update(D)
        .where(D.c.id == bindparam("b_id"), or_(*(D.c.status == s for s in IN_FLIGHT)))
        .values(
            status=bindparam("b_status"),
            provider_id=bindparam("b_provider"),
            next_attempt_at=bindparam("b_retry"),
            last_error=bindparam("b_reason"),
            answer=None,
            updated_at=now,
        ),
        [
            {"b_id": o.delivery_id, "b_status": o.status, "b_provider": o.provider_id, "b_retry": o.retry_at, "b_reason": o.reason}
            for o in outcomes
        ],
    )
    for o in outcomes:
        key = UNCERTAIN_OUTCOME if _is_uncertain(o) else o.status
        counts[key] = counts.get(key, 0) + 1
    bounced = [o.delivery_id for o in outcomes if o.status == "rejected" and o.hard_bounce]
    if bounced:
        conn.execute(
            insert(EV).from_select(
                ["event_id", "customer_id", "type", "occurred_at", "message_id", "run_id"],
                select(
                    literal("bounce:") + D.c.run_id + literal(":") + D.c.customer_id + literal(":") + D.c.message_id,
                    D.c.customer_id,
                    literal("email_bounced_hard"),
                    literal(now, type_=EV.c.occurred_at.type),
                    D.c.message_id,
                    D.c.run_id,
                ).where(D.c.id.in_(bounced)),
            )
        )
    accepted = [o.delivery_id for o in outcomes if o.status == "accepted"]
    if accepted:
        rows = conn.execute(
            select(D.c.run_id, D.c.customer_id, D.c.message_id).where(D.c.id.in_(accepted))
        ).all()
        existing = set(
            conn.execute(
                select(EV.c.event_id).where(EV.c.event_id.in_([_sent_event_id(*r) for r in rows]))
            ).scalars()
        )
        events = [
            {
                "event_id": _sent_event_id(run, customer, message),
                "customer_id": customer,
                "type": "email_sent",
                "occurred_at": now,
                "message_id": message,
                "run_id": run,
                "topic": topics.get(message),
            }
            for run, customer, message in rows
            if _sent_event_id(run, customer, message) not in existing
        ]
        if events:
            conn.execute(insert(EV), events)
    if bounced or accepted:
        # The customers sent to; bounces are appended events the refresh finds by their ids.
        aggregates.refresh(conn, {e["customer_id"] for e in events} if accepted else ())
    return counts


def _is_uncertain(o: Settlement) -> bool:
    return o.status == "accepted" and (o.reason or "").startswith(UNCERTAIN)


def _sent_event_id(run_id: str, customer_id: str, message_id: str) -> str:
    return f"sent:{run_id}:{customer_id}:{message_id}"


def is_uncertain():
    """SQL: the delivery was settled as delivered without the provider's reply (see :data:`UNCERTAIN`)."""
    return (D.c.status == "accepted") & D.c.last_error.startswith(UNCERTAIN, autoescape=True)


def outcome():
    """SQL: a delivery's state, with :data:`UNCERTAIN_OUTCOME` for an ``accepted`` one that is uncertain."""
    return case((is_uncertain(), literal(UNCERTAIN_OUTCOME)), else_=D.c.status)


def uncertain_count(engine: Engine, run_id: str) -> int:
    """How many deliveries of the run were settled as delivered without the provider's reply."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).where(D.c.run_id == run_id, is_uncertain())).scalar_one()


def deferred_reasons(engine: Engine, run_id: str, top: int = 3) -> dict[str, int]:
    """The most common reasons of the run's deferred deliveries, with how many each.

    The reasons are fit for a log: a recipient's address quoted by the provider
    is replaced (:func:`~relmail.sending.redact.without_addresses`).
    """
    with engine.connect() as conn:
        rows = conn.execute(
            select(D.c.last_error, func.count().label("n")).where(D.c.run_id == run_id, D.c.status == "deferred")
            .group_by(D.c.last_error)
        ).all()
    counts: Counter[str] = Counter()
    for reason, n in rows:
        counts[without_addresses(reason) if reason else "no reason given"] += n
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top])


def status_counts(engine: Engine, run_id: str) -> dict[str, int]:
    """How many deliveries of the run are in each state."""
    with engine.connect() as conn:
        rows = conn.execute(select(D.c.status, func.count()).where(D.c.run_id == run_id).group_by(D.c.status)).all()
    return {status: n for status, n in rows}
