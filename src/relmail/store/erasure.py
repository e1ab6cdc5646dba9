"""The rights of the person behind a customer id: erasure and access (GDPR art. 17 and 15).

:func:`forget` deletes what relmail holds about a person and keeps only a
salted hash of the address in ``suppressions``, so the same address coming
back in a later import is recognised and not mailed without fresh consent.
:func:`export` returns everything relmail holds about one customer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection, Engine

from ..errors import NotFound
from ..sending.ledger import FINAL
from .addresses import address_hash, salt
from .models import Customer, Decision, Delivery, Event, Preference, Suppression, utcnow

C, P, E = Customer.__table__, Preference.__table__, Event.__table__
DEC, DEL, S = Decision.__table__, Delivery.__table__, Suppression.__table__

ERASED = "erased"


def forget(engine: Engine, customer_id: str) -> dict:
    """Erase one customer in a single transaction; ``NotFound`` if the id is not in the store.

    Deleted: the customer row, their preferences and all their events.
    Added: a ``suppressions`` row (reason ``erased``) with the salted hash of
    the address.  Kept, stripped: their ledger rows (see below).  Returns
    what was done, with counts.
    """
    with engine.begin() as conn:
        email = conn.execute(select(C.c.email).where(C.c.id == customer_id)).scalar_one_or_none()
        if email is None:
            raise NotFound(f"no customer {customer_id!r} in the store (never imported, or already erased)")
        digest = address_hash(email, salt(conn))
        # The address may already be suppressed (an earlier erasure of a
        # duplicate record): the existing row already does the job.
        new_hash = conn.execute(select(S.c.email_hash).where(S.c.email_hash == digest)).first() is None
        if new_hash:
            conn.execute(S.insert().values(email_hash=digest, reason=ERASED, created_at=utcnow()))

        events = conn.execute(delete(E).where(E.c.customer_id == customer_id)).rowcount
        prefs = conn.execute(delete(P).where(P.c.customer_id == customer_id)).rowcount
        conn.execute(delete(C).where(C.c.id == customer_id))

        # Ledger rows stay, stripped of personal data.  They are the record
        # that a (run, customer, message) was decided and delivered at most
        # once: a resumed or re-run window must still see it, and the run's
        # counts and reports must not change after the fact.  The customer id
        # is an opaque key that, with the customer row, events and
        # preferences gone, points at nothing personal in relmail.  What was
        # personal goes: the features logged at decision time (behaviour:
        # purchases, usage, engagement) and provider error texts, which
        # often quote the address.  Deliveries not yet final are failed, so
        # nothing is ever sent to an erased person, even from a run planned
        # before the erasure.
        decisions = conn.execute(update(DEC).where(DEC.c.customer_id == customer_id).values(features={})).rowcount
        cancelled = conn.execute(
            update(DEL)
            .where(DEL.c.customer_id == customer_id, DEL.c.status.not_in(FINAL))
            .values(status="failed", last_error="customer erased", next_attempt_at=None, updated_at=utcnow())
        ).rowcount
        deliveries = conn.execute(
            update(DEL).where(DEL.c.customer_id == customer_id).values(last_error="customer erased")
        ).rowcount
    return {
        "customer_id": customer_id,
        "deleted": {"customers": 1, "preferences": prefs, "events": events},
        "ledger_kept": {"decisions": decisions, "deliveries": deliveries},
        "deliveries_cancelled": cancelled,
        "suppression": {"email_hash": digest, "reason": ERASED, "added": new_hash},
    }


def export(engine: Engine, customer_id: str) -> dict:
    """Everything stored about one customer, JSON-serializable; ``NotFound`` for an unknown id.

    Keys: ``customer``, ``preferences``, ``events`` (oldest first),
    ``decisions``, ``deliveries``, ``suppressed`` (whether the address is on
    the suppression list, and why).
    """
    with engine.connect() as conn:
        customer = conn.execute(select(C).where(C.c.id == customer_id)).mappings().first()
        if customer is None:
            raise NotFound(f"no customer {customer_id!r} in the store (never imported, or erased)")
        digest = address_hash(customer["email"], salt(conn))
        suppressed = conn.execute(select(S.c.reason).where(S.c.email_hash == digest)).scalar_one_or_none()
        return {
            "customer": _plain(customer),
            "preferences": _rows(conn, select(P).where(P.c.customer_id == customer_id).order_by(P.c.topic)),
            "events": _rows(conn, select(E).where(E.c.customer_id == customer_id).order_by(E.c.occurred_at, E.c.id)),
            "decisions": _rows(conn, select(DEC).where(DEC.c.customer_id == customer_id).order_by(DEC.c.id)),
            "deliveries": _rows(conn, select(DEL).where(DEL.c.customer_id == customer_id).order_by(DEL.c.id)),
            "suppressed": {"reason": suppressed} if suppressed else None,
        }


def counts(engine: Engine, customer_id: str) -> dict[str, Any]:
    """Per table, how many rows name ``customer_id`` (for ``relmail customers show``)."""
    with engine.connect() as conn:
        out = {}
        for name, table in (("preferences", P), ("events", E), ("decisions", DEC), ("deliveries", DEL)):
            out[name] = int(conn.execute(select(func.count()).where(table.c.customer_id == customer_id)).scalar_one())
        return out


def _rows(conn: Connection, stmt) -> list[dict]:
    return [_plain(row) for row in conn.execute(stmt).mappings()]


def _plain(row) -> dict:
    return {key: (value.isoformat() if isinstance(value, datetime) else value) for key, value in row.items()}
