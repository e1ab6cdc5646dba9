"""The change log of events (``event_changes``): read by id, and compacted so it stays one row per customer.

Migration 0008's triggers on ``events`` add a row naming the customer of
every event updated or deleted (both customers when an update moves it),
and on PostgreSQL a row without a customer for a ``TRUNCATE`` (everything
changed). Its readers, the per-customer aggregates and every columnar copy,
each remember the last row id they have seen and re-read the customers
named in the rows after it.

What a reader takes from the rows after its position is a *set of
customers*, so a row is redundant once a later row names the same customer,
or once a later ``TRUNCATE`` row names everyone: a reader whose position
lies before the older row has not read the later one either, and re-reads
that customer (or everything) when it does; it counts as current only once
its position is the latest row. :func:`compact` deletes exactly those rows; the latest
row overall is never one of them, so :func:`latest`, which every reader
compares with its position, does not move, and ids are never reused
(``AUTOINCREMENT`` on SQLite, a sequence on PostgreSQL). A reader of any
age stays exact and incremental, and the log holds at most one row per
customer whose events ever changed (since the last ``TRUNCATE``), plus
that ``TRUNCATE``'s row.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

#: Customers per ``IN`` list (well below every driver's parameter limit).
BATCH = 500


def _superseded(where: str) -> str:
    """Delete the rows of the customers ``where`` keeps that have a later row of their customer.

    A join with each customer's latest id, not a correlated subquery: PostgreSQL runs that once per row.
    """
    return ("DELETE FROM event_changes WHERE id IN (SELECT e.id FROM event_changes AS e JOIN "
            f"(SELECT customer_id, max(id) AS m FROM event_changes WHERE {where} GROUP BY customer_id) AS l "
            "ON e.customer_id = l.customer_id AND e.id < l.m)")


_COMPACT_CUSTOMERS = text(_superseded("customer_id IN :ids")).bindparams(bindparam("ids", expanding=True))

#: Every row before the latest ``TRUNCATE`` row, then every row with a later one of its customer.
_COMPACT_ALL = (
    text("DELETE FROM event_changes WHERE id < (SELECT coalesce(max(id), 0) FROM event_changes WHERE customer_id IS NULL)"),
    text(_superseded("customer_id IS NOT NULL")),
)


def latest(conn: Connection) -> int:
    """The id of the latest row (0 for none): a reader that has seen it has seen every change."""
    return conn.execute(text("SELECT coalesce(max(id), 0) FROM event_changes")).scalar_one()


def since(conn: Connection, seen: int, last: int | None = None) -> list[str | None]:
    """The customers named by rows after ``seen`` (up to ``last``); None stands for a ``TRUNCATE`` (everyone)."""
    if last is None:
        return conn.execute(text("SELECT customer_id FROM event_changes WHERE id > :seen"), {"seen": seen}).scalars().all()
    return conn.execute(text("SELECT customer_id FROM event_changes WHERE id > :seen AND id <= :last"),
                        {"seen": seen, "last": last}).scalars().all()


def compact(conn: Connection, customers: Iterable[str] | None = None) -> int:
    """Delete the rows a later row makes redundant: of ``customers`` only, or all (None). Returns the rows deleted.

    The writer that has just read the log calls it in its transaction with
    the customers it found there; the cost is then that of the changes it
    consumed (an index on (customer_id, id) finds each customer's latest row).
    """
    if customers is None:
        return sum(conn.execute(stmt).rowcount for stmt in _COMPACT_ALL)
    ids = sorted({c for c in customers if c is not None})
    return sum(conn.execute(_COMPACT_CUSTOMERS, {"ids": ids[start:start + BATCH]}).rowcount
               for start in range(0, len(ids), BATCH))
