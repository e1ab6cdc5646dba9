"""Per-customer aggregates of the events, kept exact by the writers of events.

The features a plan reads over a customer's whole history (purchases ever,
money ever, first and last purchase, last open and click, the products she
owns, the messages she was sent) are kept per customer in
``customer_totals``, ``customer_products`` and ``customer_messages``, so
that a plan's cost does not grow with years of history: it reads one row
per customer for them, and raw events only inside the feature windows.

Every relmail writer of events calls :func:`refresh` in the transaction
that wrote them, with the customers whose events it inserted, changed or
deleted. :func:`refresh` recomputes those customers' rows from their raw
events (exact whatever the change: an upsert that moved an event, an
erasure), and also those of customers with events appended since the last
refresh by anything else, and of customers whose events were changed or
deleted since (the change log of migration 0008, whose triggers see every
writer), and deletes the log's rows those customers' new rows make
redundant (:func:`relmail.store.changes.compact`). The meta row
``feature_store`` records the highest event id and the last change-log row
the aggregates cover; :func:`current` tells a plan whether it may use
them: both are still the last (nothing wrote, changed or deleted events
behind relmail's back) and no event lies after the plan's ``as_of``
(aggregates over all history are then the same as aggregates as of
``as_of``). Otherwise the features fall back to reading raw events.

:func:`rebuild` recomputes everything from raw events and reports what it
had to correct (``relmail db rebuild-features``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Column, MetaData, Table, and_, bindparam, delete, func, insert, literal_column, or_, select, true, union_all
from sqlalchemy.engine import Connection

from . import changes
from .models import EVENT_TYPES, CustomerMessage, CustomerProduct, CustomerTotals, Event, Meta

E, M = Event.__table__, Meta.__table__
TOTALS, PRODUCTS, MESSAGES = CustomerTotals.__table__, CustomerProduct.__table__, CustomerMessage.__table__
TABLES = (TOTALS, PRODUCTS, MESSAGES)

#: The meta key holding ``{"max_event_id": n}``: the aggregates cover every event up to id n.
STATE_KEY = "feature_store"

#: Customers recomputed per statement (an ``IN`` list well below every driver's parameter limit).
BATCH = 500


#: The event types the aggregates summarise.
SUMMARISED = ("purchase", "email_opened", "email_clicked", "email_sent")


def _event_type(conn: Connection):
    """``events.type``, on SQLite unusable for an index: a type filter would tempt the planner into the (type,
    time) index, where these statements must walk the customer index."""
    return literal_column("+events.type") if conn.dialect.name == "sqlite" else E.c.type


def _sources(source: Table, where, typ=None) -> dict[Table, object]:
    """Per aggregate table, the SELECT computing its rows from the events of ``source`` that ``where`` keeps."""
    t, at = source.c.type if typ is None else typ, source.c.occurred_at
    purchase = t == "purchase"
    totals = (
        select(source.c.customer_id, func.count().filter(purchase), func.sum(source.c.value).filter(purchase),
               func.min(at).filter(purchase), func.max(at).filter(purchase),
               func.max(at).filter(t == "email_opened"), func.max(at).filter(t == "email_clicked"))
        .where(where, t.in_(("purchase", "email_opened", "email_clicked")))
        .group_by(source.c.customer_id)
    )
    products = (select(source.c.customer_id, source.c.product_id, func.count())
                .where(where, purchase, source.c.product_id.is_not(None)).group_by(source.c.customer_id, source.c.product_id))
    messages = (select(source.c.customer_id, source.c.message_id, func.max(at))
                .where(where, t == "email_sent", source.c.message_id.is_not(None))
                .group_by(source.c.customer_id, source.c.message_id))
    return {TOTALS: totals, PRODUCTS: products, MESSAGES: messages}


def _fill(conn: Connection, target: dict[Table, Table], source: Table, where, typ=None) -> None:
    for table, select_rows in _sources(source, where, typ).items():
        dest = target[table]
        conn.execute(insert(dest).from_select([c.name for c in dest.columns], select_rows))


def max_event_id(conn: Connection) -> int:
    """The highest event id (0 for none): what the aggregates and the columnar copy record as covered."""
    return conn.execute(select(func.coalesce(func.max(E.c.id), 0))).scalar_one()


def _state(conn: Connection, lock: bool = False) -> tuple[int, int] | None:
    """(highest event id, last change-log row) the aggregates cover; None if never built."""
    stmt = select(M.c.value).where(M.c.key == STATE_KEY)
    if lock and conn.dialect.name == "postgresql":
        # Writers refresh one after the other: a refresh that started before another writer's
        # commit would otherwise miss that writer's rows of a customer both touched.
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    if row is None:
        return None
    value = json.loads(row[0])
    return int(value["max_event_id"]), int(value.get("change_id", 0))


def _set_state(conn: Connection) -> None:
    value = json.dumps({"max_event_id": max_event_id(conn), "change_id": changes.latest(conn)})
    if conn.execute(M.update().where(M.c.key == STATE_KEY).values(value=value)).rowcount == 0:
        conn.execute(M.insert().values(key=STATE_KEY, value=value))


def refresh(conn: Connection, customer_ids: Iterable[str] = ()) -> int:
    """Recompute the aggregates of ``customer_ids``, and of customers with events appended since the last refresh.

    Call it in the transaction that wrote the events, after writing them.
    Returns the number of customers recomputed. A store whose aggregates
    were never built (no ``feature_store`` meta row) is left alone: its
    plans read raw events until :func:`rebuild`.
    """
    state = _state(conn, lock=True)
    if state is None:
        return 0
    covered, seen = state
    changed = changes.since(conn, seen)
    if any(c is None for c in changed):  # a TRUNCATE of events: any customer may have changed
        return rebuild(conn).customers
    # Their older rows in the change log say nothing the new ones do not: the log stays one row per customer.
    changes.compact(conn, changed)
    # The customers named, and those whose events were changed or deleted since (by relmail or behind its back).
    ids = {str(c) for c in customer_ids} | set(changed)
    # Not DISTINCT: SQLite would answer that by walking the customer index instead of the id range.
    ids.update(conn.execute(select(E.c.customer_id).where(E.c.id > covered)).scalars())
    ordered = sorted(ids)
    if ordered:
        # The customers' summarised events, read once into a scratch table, then aggregated three ways.
        scratch = _scratch(conn, "refresh_events", [E.c[name] for name in ("customer_id", "type", "occurred_at", "product_id",
                                                                           "value", "message_id")])
        typ = _event_type(conn)
        for start in range(0, len(ordered), BATCH):
            batch = ordered[start:start + BATCH]
            conn.execute(delete(scratch))
            conn.execute(insert(scratch).from_select([c.name for c in scratch.columns],
                                                     select(*[E.c[c.name] for c in scratch.columns])
                                                     .where(E.c.customer_id.in_(batch), typ.in_(SUMMARISED))))
            for table in TABLES:
                conn.execute(delete(table).where(table.c.customer_id.in_(batch)))
            _fill(conn, {t: t for t in TABLES}, scratch, true())
        scratch.drop(conn)
    _set_state(conn)
    return len(ordered)


def owners(conn: Connection, event_ids: Iterable[str]) -> set[str]:
    """The customers the stored events with these ``event_id`` belong to (before an upsert or delete changes them)."""
    ids = [e for e in event_ids if e is not None]
    found: set[str] = set()
    for start in range(0, len(ids), BATCH):
        found.update(conn.execute(select(E.c.customer_id).where(E.c.event_id.in_(ids[start:start + BATCH]))).scalars())
    return found


def built(conn: Connection) -> bool:
    """Whether the aggregates were ever built in this store (:func:`rebuild`)."""
    return _state(conn) is not None


def current(conn: Connection, as_of: datetime) -> bool:
    """Whether the aggregates give a plan as of ``as_of`` the same features as the raw events.

    True when they cover every event and every change to one (nothing
    wrote, changed or deleted events without refreshing them) and no event
    occurred after ``as_of``.
    """
    state = _state(conn)
    if state is None or state != (max_event_id(conn), changes.latest(conn)):
        return False
    # The latest event per type, each one seek into the (type, time) index.
    latest = union_all(*[select(func.max(E.c.occurred_at).label("at")).where(E.c.type == t) for t in EVENT_TYPES]).subquery()
    last = conn.execute(select(func.max(latest.c.at))).scalar()
    return last is None or _aware(last) <= as_of


def _aware(value):
    """A time from ``max()`` over a union: SQLite returns the stored text, PostgreSQL an aware datetime."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value


@dataclass
class Rebuilt:
    """What :func:`rebuild` found: per aggregate table, rows missing, extra and different."""

    corrected: dict[str, dict[str, int]] = field(default_factory=dict)
    customers: int = 0

    @property
    def total(self) -> int:
        return sum(sum(v.values()) for v in self.corrected.values())


def rebuild(conn: Connection) -> Rebuilt:
    """Recompute every aggregate from the raw events; report the rows that differed and correct them.

    Also compacts the whole change log (it has just been consumed).

    Sums of money compare with a relative tolerance of 1e-9: adding the
    same values in another order may change their last bits, which is not
    a difference worth reporting.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE meta IN SHARE ROW EXCLUSIVE MODE")
    fresh = {t: _scratch(conn, f"rebuild_{t.name}", t.columns) for t in TABLES}
    _fill(conn, fresh, E, true(), _event_type(conn))
    out = Rebuilt()
    for table, new in fresh.items():
        out.corrected[table.name] = _compare(conn, table, new)
        conn.execute(delete(table))
        conn.execute(insert(table).from_select([c.name for c in table.columns], select(*new.columns)))
        new.drop(conn)
    out.customers = conn.execute(select(func.count()).select_from(TOTALS)).scalar_one()
    changes.compact(conn)
    _set_state(conn)
    return out


def _scratch(conn: Connection, name: str, columns) -> Table:
    """An empty temporary table ``name`` with columns shaped like ``columns``."""
    scratch = Table(name, MetaData(), *[Column(c.name, c.type, primary_key=c.primary_key) for c in columns],
                    prefixes=["TEMPORARY"])
    scratch.create(conn)
    return scratch


def _compare(conn: Connection, stored: Table, fresh: Table) -> dict[str, int]:
    keys = [c.name for c in stored.primary_key.columns]
    on = and_(*[stored.c[k] == fresh.c[k] for k in keys])
    values = [c.name for c in stored.columns if c.name not in keys]
    differs = []
    for name in values:
        a, b = stored.c[name], fresh.c[name]
        if name == "spend":
            differs.append(or_(a.is_(None) != b.is_(None), func.abs(a - b) > bindparam("tol", 1e-9) * (1 + func.abs(b))))
        else:
            differs.append(or_(a != b, a.is_(None) != b.is_(None)))
    count = func.count()
    missing = conn.execute(select(count).select_from(fresh.outerjoin(stored, on)).where(stored.c[keys[0]].is_(None))).scalar_one()
    extra = conn.execute(select(count).select_from(stored.outerjoin(fresh, on)).where(fresh.c[keys[0]].is_(None))).scalar_one()
    different = conn.execute(select(count).select_from(stored.join(fresh, on)).where(or_(*differs))).scalar_one()
    return {"missing": missing, "extra": extra, "different": different}
