"""A complete customers export: the stored customers it does not list are removed from the shop.

A shop deletes accounts (the customer closed it) and merges them (two
accounts of one person become one); its next customers export simply lacks
them. An import that only upserts never learns it, and the plan would go on
mailing a closed account, or a merged one under its old id. With
``relmail import customers --complete`` the file is every customer the shop
has: a stored customer it does not name gets ``removed_at`` (kept, with its
history, never mailed: REMOVED_FROM_SHOP), and any import that names it
again by its id lifts that. A mailing list that finds it by address does
not: the shop's export decides whether the account exists. Once a complete
export has listed customers (``listed_at``), only those can be removed:
the people a newsletter form or a mailing list brought in were never in
the shop's customers export.

A partial file read as complete (a filtered export, a wrong file) would
remove most of the shop, so the share removed at once is limited
(``--max-removed``, 10% by default): above it nothing is imported.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Column, MetaData, String, Table, and_, exists, func, select, update
from sqlalchemy.engine import Connection

from ..errors import Problem, ValidationError
from ..store.db import dialect_insert
from ..store.models import Customer
from .loader import LOOKUP_BATCH, batched, one_of

C = Customer.__table__

#: The ids the file named, in a temporary table of the import's own connection (dropped at its commit on PostgreSQL).
LISTED = Table("relmail_listed_customers", MetaData(), Column("id", String(64), primary_key=True),
               prefixes=["TEMPORARY"], postgresql_on_commit="DROP")

#: Removed at once without --max-removed: a customer in ten.
DEFAULT_MAX_REMOVED = "10%"

_LIMIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


def removal_limit(text: str, listed_before: int) -> int:
    """The most customers a complete import may remove: ``text`` is a count (``250``) or a share of the customers the
    shop listed before the import (``10%``)."""
    m = _LIMIT.match(str(text))
    if m is None or (not m.group(2) and "." in m.group(1)):
        raise ValidationError(f"--max-removed {text!r}: give a number of customers (250) or a share of them (10%)",
                              [Problem("--max-removed", None, None, "expected a whole number or a percentage")])
    value = float(m.group(1))
    return int(listed_before * value / 100) if m.group(2) else int(value)


class Listing:
    """The customer ids a complete export names, gathered chunk by chunk, then the customers it does not name removed."""

    def __init__(self, conn: Connection, source: str, max_removed: str):
        self.conn, self.source, self.max_removed = conn, source, max_removed
        LISTED.create(conn, checkfirst=True)
        conn.execute(LISTED.delete())  # SQLite keeps a temporary table for the connection's life
        #: The customers the shop listed before this import: what the limit's share is of.
        self.before = conn.execute(select(func.count()).where(C.c.removed_at.is_(None))).scalar_one()

    def add(self, ids: Collection[str]) -> None:
        for batch in batched(sorted(set(ids)), LOOKUP_BATCH * 20):
            self.conn.execute(dialect_insert(self.conn, LISTED).on_conflict_do_nothing(), [{"id": i} for i in batch])

    def apply(self, now: datetime) -> int:
        """Remove (as of ``now``) the customers the file does not name; how many. Refuses above the limit."""
        listed = exists().where(LISTED.c.id == C.c.id)
        unnamed = and_(C.c.removed_at.is_(None), ~listed)
        # After the first complete export, only a customer one listed can be gone from the shop: a newsletter
        # form's subscriber or a mailing list's member was never in the shop's customers export.
        if self.conn.execute(select(C.c.id).where(C.c.listed_at.is_not(None)).limit(1)).first() is not None:
            unnamed = and_(unnamed, C.c.listed_at.is_not(None))
        before, removed = self.before, self.conn.execute(select(func.count()).where(unnamed)).scalar_one()
        limit = removal_limit(self.max_removed, before)
        if removed > limit:
            share = f" ({100 * removed / before:.0f}%)" if before else ""
            raise ValidationError(
                f"{self.source}: as a complete export it would remove {removed:,} of the {before:,} customers the shop "
                f"listed{share}, more than --max-removed {self.max_removed}; nothing imported. Is it the whole customers "
                f"export, unfiltered? If the shop really lost them, import it again with --max-removed {removed}",
                [Problem(self.source, None, None, f"{removed:,} stored customers not in the file")])
        if removed:
            self.conn.execute(update(C).where(unnamed).values(removed_at=now))
        self.conn.execute(update(C).where(C.c.listed_at.is_(None), listed).values(listed_at=now))
        self.conn.execute(LISTED.delete())
        return removed


def relist(conn: Connection, ids: Collection[str]) -> int:
    """Lift the removal of the customers ``ids`` names (an import lists them again); how many were removed.

    Through the partial index of the removed customers: a look-up of the few, whatever the shop's size.
    """
    n = 0
    for condition in one_of(conn, C.c.id, set(ids)):
        n += conn.execute(update(C).where(C.c.removed_at.isnot(None), condition).values(removed_at=None)).rowcount
    return n


def still_removed(conn: Connection, ids: Collection[str]) -> int:
    """How many of the customers ``ids`` names the shop removed: a mailing list found them by address, which
    does not bring an account back. Through the partial index of the removed customers, as :func:`relist`."""
    return sum(conn.execute(select(func.count()).where(C.c.removed_at.isnot(None), condition)).scalar_one()
               for condition in one_of(conn, C.c.id, set(ids)))
