"""The rights of the person behind a customer id: erasure and access (GDPR art. 17 and 15).

:func:`forget` deletes what relmail holds about a person and keeps only a
salted hash of the address in ``suppressions``, so the same address coming
back in a later import is recognised and not mailed without fresh consent.
That includes what relmail wrote outside the database: the file adapter's
outbox (``.eml`` files and ``outbox.mbox`` entries, found through the
ledger) and provider events recorded as invalid that name the address.
:func:`export` returns everything relmail holds about one customer.
"""

from __future__ import annotations

import mailbox
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from ..delivery.base import delivery_key
from ..delivery.file import KEY_HEADER, safe_name
from ..errors import NotFound, RelmailError
from ..sending.ledger import FINAL
from . import aggregates, columnar, consent_log
from .addresses import address_hash, salt
from .customer_rows import of_customer
from .faults import first_line
from .models import ConsentChange, Customer, Decision, Delivery, Event, FeedbackReject, Preference, ShopAccount, Suppression, utcnow

C, P, E, CC = Customer.__table__, Preference.__table__, Event.__table__, ConsentChange.__table__
DEC, DEL, S = Decision.__table__, Delivery.__table__, Suppression.__table__
#: The ledger's tables: a customer's rows in them are found run by run (:mod:`.customer_rows`).
LEDGER = ("decisions", "deliveries")
FR = FeedbackReject.__table__
SA = ShopAccount.__table__

ERASED = "erased"


def forget(engine: Engine, customer_id: str, columns: str | Path | None = None) -> dict:
    """Erase one customer in a single transaction; ``NotFound`` if the id is not in the store.

    Deleted: the customer row, their preferences and their history, all their events and the shop's
    account numbers linked to them; the
    file adapter's rendered e-mails to them (``.eml`` files, ``outbox.mbox``
    entries) and the ledger's pointers to those; recorded invalid provider
    events that name their address. Added: a ``suppressions`` row (reason
    ``erased``, dated now) with the salted hash of the address; a row the
    address already had (``cleaned``, ``unsubscribed``, an earlier erasure)
    becomes that, its earlier reason returned as ``previous_reason``.  Kept, stripped: their
    ledger rows (see below).  Returns what was done, with counts and the
    removed files.  Files are removed before the transaction commits: if
    one cannot be removed nothing is erased and the error says which.

    The columnar copy of the events (:mod:`relmail.store.columnar`; at
    ``columns``, by default beside a SQLite file) is brought in step after
    the commit, which rewrites the parts that held the customer's events
    and deletes the old ones; a copy that cannot be rewritten is deleted
    (``columnar_copy`` is then ``removed``, with the reason in
    ``columnar_copy_error``).
    """
    with engine.begin() as conn:
        email = conn.execute(select(C.c.email).where(C.c.id == customer_id)).scalar_one_or_none()
        if email is None:
            raise NotFound(f"no customer {customer_id!r} in the store (never imported, or already erased)")
        digest = address_hash(email, salt(conn))
        # The address may already be suppressed: cleaned or unsubscribed in a
        # mailing tool's export, or erased with a duplicate record. Its row
        # becomes this erasure, whatever it said: only an ``erased`` row gives
        # a re-imported address its global opt-out (a ``cleaned`` one is
        # about the address, not the person), and consent counts as fresh
        # only when it is dated after the latest erasure.
        previous = conn.execute(select(S.c.reason).where(S.c.email_hash == digest)).first()
        if previous is None:
            conn.execute(S.insert().values(email_hash=digest, reason=ERASED, created_at=utcnow()))
        else:
            conn.execute(update(S).where(S.c.email_hash == digest).values(reason=ERASED, created_at=utcnow()))

        events = conn.execute(delete(E).where(E.c.customer_id == customer_id)).rowcount
        aggregates.refresh(conn, [customer_id])
        prefs = conn.execute(delete(P).where(P.c.customer_id == customer_id)).rowcount
        history = conn.execute(delete(CC).where(CC.c.customer_id == customer_id)).rowcount
        accounts = conn.execute(delete(SA).where(SA.c.customer_id == customer_id)).rowcount
        conn.execute(delete(C).where(C.c.id == customer_id))
        # Invalid provider events are kept as the provider sent them, which
        # is by address: the customer id was never resolved for them.
        address = email.strip().lower()
        rejects = conn.execute(delete(FR).where(func.lower(FR.c.raw_event).contains(address, autoescape=True))).rowcount

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
        decisions = conn.execute(update(DEC).where(of_customer(conn, DEC, customer_id)).values(features={})).rowcount
        outbox = _remove_outbox(conn, customer_id)
        cancelled = conn.execute(
            update(DEL)
            .where(of_customer(conn, DEL, customer_id), DEL.c.status.not_in(FINAL))
            .values(status="failed", last_error="customer erased", next_attempt_at=None, updated_at=utcnow())
        ).rowcount
        deliveries = conn.execute(
            update(DEL).where(of_customer(conn, DEL, customer_id)).values(last_error="customer erased")
        ).rowcount
    copy, copy_error = _purge_copy(engine, columns if columns is not None else columnar.location(engine), customer_id)
    return {
        "customer_id": customer_id,
        "deleted": {"customers": 1, "preferences": prefs, "consent_changes": history, "events": events,
                    "shop_accounts": accounts, "feedback_rejects": rejects},
        "columnar_copy": copy,
        "columnar_copy_error": copy_error,
        "outbox": outbox,
        "ledger_kept": {"decisions": decisions, "deliveries": deliveries},
        "deliveries_cancelled": cancelled,
        "suppression": {"email_hash": digest, "reason": ERASED, "added": previous is None,
                        "previous_reason": None if previous is None else previous.reason},
    }


def _purge_copy(engine: Engine, root: str | Path | None, customer_id: str) -> tuple[str, str | None]:
    """Rewrite the columnar copy without the erased customer's events: (what was done, why it was deleted instead).

    The erasure is committed when this runs. A copy that cannot be rewritten
    (a full or read-only disk, the database gone right after the commit)
    would keep the customer's events in the project folder until the next
    plan; deleting it is always safe (the next plan builds it anew), so that
    is the fallback. When not even that works, the error names the folder.
    """
    try:
        return columnar.update(engine, root, build=False).action, None
    except (OSError, SQLAlchemyError) as exc:
        reason = first_line(exc)
    try:
        columnar.remove(root)
    except OSError as exc:
        raise RelmailError(
            f"customer {customer_id!r} is erased from the store, but the columnar copy of the events at {root} still "
            f"holds their events: it could not be rewritten ({reason}) nor deleted ({exc.strerror or exc}); "
            "delete that folder (the next plan builds it anew)") from None
    return "removed", reason


def _remove_outbox(conn: Connection, customer_id: str) -> dict[str, Any]:
    """Delete the file adapter's rendered e-mails to this customer and the ledger's pointers to them.

    The ledger's ``provider_id`` names the file (``.../d42-1a2b3c4d5e.eml``
    or ``.../outbox.mbox#d42``). Only a name the file adapter itself gives
    delivery 42 is touched, so a tampered ledger cannot point erasure at any
    other file.
    """
    files: list[str] = []
    boxes: dict[str, set[str]] = {}
    cleared: list[int] = []
    for delivery_id, provider_id in conn.execute(
        select(DEL.c.id, DEL.c.provider_id).where(of_customer(conn, DEL, customer_id), DEL.c.provider_id.is_not(None))
    ):
        key = delivery_key(delivery_id)
        path, _, entry = provider_id.rpartition("#")
        if entry == key and Path(path).name == "outbox.mbox":
            boxes.setdefault(path, set()).add(key)
            cleared.append(delivery_id)
        elif Path(provider_id).name == f"{safe_name(key)}.eml":
            if Path(provider_id).exists():
                Path(provider_id).unlink()
                files.append(provider_id)
            cleared.append(delivery_id)
    entries = sum(_remove_mbox_entries(Path(path), keys) for path, keys in boxes.items())
    if cleared:
        conn.execute(update(DEL).where(DEL.c.id.in_(cleared)).values(provider_id=None))
    return {"files_removed": files, "mbox_entries_removed": entries, "ledger_pointers_cleared": len(cleared)}


def _remove_mbox_entries(path: Path, keys: set[str]) -> int:
    """Remove the entries of ``keys`` (``X-Relmail-Key``) from the file adapter's mbox."""
    if not path.exists():
        return 0
    box = mailbox.mbox(path)
    box.lock()
    try:
        doomed = [k for k, message in box.iteritems() if message.get(KEY_HEADER) in keys]
        for k in doomed:
            box.remove(k)
        box.flush()
    finally:
        box.unlock()
        box.close()
    return len(doomed)


def export(engine: Engine, customer_id: str) -> dict:
    """Everything stored about one customer, JSON-serializable; ``NotFound`` for an unknown id.

    Keys: ``customer``, ``preferences``, ``consent_changes`` (the consent history, oldest first), ``shop_accounts`` (the
    shop's account numbers whose orders name the customer), ``events`` (oldest first),
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
            # A consent record without a date (a shop's flag, a profile's blank consent time) says so: null, never 1970.
            "preferences": [_plain({**p, "updated_at": consent_log.shown(p["updated_at"])}) for p in
                            conn.execute(select(P).where(P.c.customer_id == customer_id).order_by(P.c.topic)).mappings()],
            "consent_changes": [_plain({**c, "changed_at": consent_log.shown(c["changed_at"])}) for c in
                                conn.execute(select(CC).where(CC.c.customer_id == customer_id).order_by(CC.c.id)).mappings()],
            "shop_accounts": _rows(conn, select(SA.c.source, SA.c.account).where(SA.c.customer_id == customer_id)
                                   .order_by(SA.c.source, SA.c.account)),
            "events": _rows(conn, select(E).where(E.c.customer_id == customer_id).order_by(E.c.occurred_at, E.c.id)),
            "decisions": _rows(conn, select(DEC).where(of_customer(conn, DEC, customer_id)).order_by(DEC.c.id)),
            "deliveries": _rows(conn, select(DEL).where(of_customer(conn, DEL, customer_id)).order_by(DEL.c.id)),
            "suppressed": {"reason": suppressed} if suppressed else None,
        }


def counts(engine: Engine, customer_id: str) -> dict[str, Any]:
    """Per table, how many rows name ``customer_id`` (for ``relmail customers show``)."""
    with engine.connect() as conn:
        out = {}
        for name, table in (("preferences", P), ("events", E), ("decisions", DEC), ("deliveries", DEL)):
            where = of_customer(conn, table, customer_id) if name in LEDGER else table.c.customer_id == customer_id
            out[name] = int(conn.execute(select(func.count()).where(where)).scalar_one())
        return out


def _rows(conn: Connection, stmt) -> list[dict]:
    return [_plain(row) for row in conn.execute(stmt).mappings()]


def _plain(row) -> dict:
    return {key: (value.isoformat() if isinstance(value, datetime) else value) for key, value in row.items()}
