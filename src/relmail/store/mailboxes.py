"""Which customer ids share a mailbox: one address (trimmed, in any case) under several ids.

A guest checkout and a registered account, or the same address in another
case, are one person's mailbox. The plan reads what the mailbox said and
received across its ids (:mod:`relmail.planning.shared_mailbox`), and what
relmail learns and reports counts the mailbox once
(:mod:`relmail.learn.outcomes`, :mod:`relmail.report.trend`); they find
the mailboxes here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import func, select, union

from ..errors import NotFound
from .models import MAILBOX, Customer, Event, mailbox_key

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

C, E = Customer.__table__, Event.__table__

#: What a shop's customers export says of a guest checkout (an id without an account), as the
#: importers' mappings record it: attribute -> the values that mean "guest". ``guest`` (true or false)
#: is the one any mapping can set (WooCommerce's do, a project's own may); the others are the shop's own
#: columns as the Shopware, Magento and PrestaShop mappings keep them (segments may name them).
GUEST_MARKS: dict[str, tuple] = {
    "guest": (True,),                           # any mapping: WooCommerce's empty "Date registered" / "Sign Up"
    "shopware_guest": (True,),                  # Shopware: the ``guest`` column
    "magento_subscriber_type": ("guest",),      # Magento's newsletter subscribers: Type Guest
    "prestashop_group": ("Guest", "Invité"),    # PrestaShop's default group, in the back office's language
}
#: Mailboxes per ``IN (...)`` (well under SQLite's 32,766 and PostgreSQL's 65,535 parameters).
CHUNK = 5_000


@dataclass(frozen=True)
class Mailboxes:
    """The customers whose address another customer has too: sorted ids, and each one's mailbox number."""

    ids: np.ndarray
    box: np.ndarray

    @classmethod
    def none(cls) -> Mailboxes:
        return cls(np.array([], dtype="<U1"), np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    def mailbox_of(self, customer_ids: np.ndarray) -> np.ndarray:
        """The mailbox number of each of ``customer_ids``, -1 for a customer who shares no address."""
        out = np.full(len(customer_ids), -1, dtype=np.int64)
        if not len(self) or not len(customer_ids):
            return out
        at = np.minimum(np.searchsorted(self.ids, customer_ids), len(self) - 1)
        hit = self.ids[at] == customer_ids
        out[hit] = self.box[at[hit]]
        return out

    def lowest(self) -> np.ndarray:
        """Per customer of :attr:`ids`, the lowest customer id of its mailbox (the id that names the mailbox)."""
        if not len(self):
            return self.ids
        # ``ids`` is sorted, so each mailbox's first occurrence is its lowest id.
        boxes, first = np.unique(self.box, return_index=True)
        lowest = np.empty(int(boxes.max()) + 1, dtype=self.ids.dtype)
        lowest[boxes] = self.ids[first]
        return lowest[self.box]


def find(conn: Connection) -> Mailboxes:
    """Every customer whose address (trimmed, in any case) another customer has.

    The mailbox index read in its order, repeats found in NumPy, then the
    customers of the repeated mailboxes: a GROUP BY over the expression
    costs SQLite eight times as much (it evaluates it per table row), and
    SQLAlchemy's rows as much again (the driver's tuples are read instead).
    """
    result = conn.execute(select(MAILBOX).where(MAILBOX != "").order_by(MAILBOX))
    try:
        keys = [row[0] for row in result.cursor.fetchall()]
    finally:
        result.close()
    repeated = sorted({b for a, b in zip(keys, keys[1:]) if a == b})
    if not repeated:
        return Mailboxes.none()
    rows = []
    for a in range(0, len(repeated), CHUNK):
        rows += conn.execute(select(C.c.id, MAILBOX).where(MAILBOX.in_(repeated[a:a + CHUNK]))).all()
    ids = np.array([r[0] for r in rows], dtype=str)
    _, box = np.unique(np.array([r[1] for r in rows], dtype=object).astype(str), return_inverse=True)
    order = np.argsort(ids, kind="stable")
    return Mailboxes(ids[order], box[order].astype(np.int64))


def mates(conn: Connection, customer_ids: Iterable[str]) -> dict[str, list[str]]:
    """Customer id -> the other customer ids with its address (trimmed, in any case), for the ids that have any.

    Two look-ups per chunk of ids through the primary key and the mailbox index, not a pass over the customers.
    """
    ids = sorted(set(customer_ids))
    out: dict[str, list[str]] = {}
    for a in range(0, len(ids), CHUNK):
        keys = dict(conn.execute(select(C.c.id, MAILBOX).where(C.c.id.in_(ids[a:a + CHUNK]), C.c.email != "")).all())
        holders: dict[str, list[str]] = {}
        for cid, key in conn.execute(select(C.c.id, MAILBOX).where(MAILBOX.in_(sorted(set(keys.values()))))):
            holders.setdefault(key, []).append(cid)
        for cid, key in keys.items():
            others = sorted(c for c in holders.get(key, ()) if c != cid)
            if others:
                out[cid] = others
    return out


def with_mates(customer_ids):
    """A SELECT of the ids of ``customer_ids`` (a SELECT of one column) and of every other customer with one of
    their addresses: the customers of their mailboxes. Each mate is found through the mailbox index."""
    own, mate = C.alias("own"), C.alias("mate")
    mates = (select(mate.c.id).select_from(own.join(mate, mailbox_key(mate) == mailbox_key(own)))
             .where(own.c.id.in_(customer_ids), mailbox_key(own) != ""))
    return union(customer_ids, mates)


def customer_named(conn: Connection, name: str) -> str:
    """The customer id ``name`` stands for: a customer id as it is, or the e-mail address (in any case) of one customer.

    A marketer knows the address a customer writes from, not the id an import
    made (``woocommerce-ba4735606d078b95``): the commands that look at one
    customer take either. A name that is neither comes back as it is, for the
    command to say it knows no such customer. An address several customers
    have (a guest checkout and an account) is ``NotFound`` naming their ids.
    """
    if "@" not in name or conn.execute(select(C.c.id).where(C.c.id == name)).first() is not None:
        return name
    ids = sorted(row[0] for row in conn.execute(select(C.c.id).where(MAILBOX == name.strip().lower())))  # noqa: SIM300
    if len(ids) > 1:
        raise NotFound(f"{len(ids)} customers have the address '{name}' ({', '.join(ids)}): name one by its id")
    return ids[0] if ids else name


def recipient_order(conn: Connection, customer_ids: Iterable[str]) -> dict[str, tuple[int, float]]:
    """Customer id -> its rank among the ids of one mailbox that tie for an e-mail (smaller first).

    A registered account before a guest checkout (:data:`GUEST_MARKS`: the
    person logs in with the account, and its preference page is the one they
    know), then the most recently active id (its latest event of any kind),
    then (left to the caller) the lowest id. Two look-ups per chunk of ids,
    through the primary key and the events' (customer, time) index: only the
    few ids of shared addresses are asked.
    """
    ids = sorted(set(customer_ids))
    guest: dict[str, int] = {}
    latest: dict[str, float] = {}
    for a in range(0, len(ids), CHUNK):
        chunk = ids[a:a + CHUNK]
        for cid, attributes in conn.execute(select(C.c.id, C.c.attributes).where(C.c.id.in_(chunk))):
            marks = attributes if isinstance(attributes, dict) else {}
            guest[cid] = int(any(marks.get(name) in values for name, values in GUEST_MARKS.items()))
        for cid, at in conn.execute(select(E.c.customer_id, func.max(E.c.occurred_at)).where(E.c.customer_id.in_(chunk))
                                    .group_by(E.c.customer_id)):
            if at is not None:
                latest[cid] = at.timestamp()
    return {cid: (guest.get(cid, 0), -latest.get(cid, float("-inf"))) for cid in ids}
