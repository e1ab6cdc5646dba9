"""Customers by e-mail address: the one look-up behind every import that names people by address.

A mailing tool's activity export (events), an order export (orders) and a
customers file read with ``match: email`` all find stored customers by
address, with one rule:

* upper and lower case are the same address (``Kim@mail.example`` is
  ``kim@mail.example``), compared as the database's ``lower()`` folds
  them: letters A-Z on every backend, other letters as far as the database
  folds them (SQLite: not at all);
* an address several customers share (a couple's mailbox, duplicate
  accounts) names the one with the address spelled exactly as asked, else
  the one with the lowest id (ids compared by code point, whatever the
  database's collation), the same one every time.

The look-up runs in bulk, one statement per :data:`BATCH` addresses (on
PostgreSQL one for all of them), through the customers' ``email`` index
and their ``lower(email)`` index.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from sqlalchemy import any_, bindparam, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from ..store.models import EMAIL_LOWER, Customer
from .fields import FieldError, email
from .loader import LOOKUP_BATCH, batched

C = Customer.__table__
#: Addresses per statement on SQLite: each is bound twice (as written and lower-cased), within the variable limit.
BATCH = LOOKUP_BATCH // 2


def customers_by_address(conn: Connection, addresses: Collection[str]) -> dict[str, str]:
    """Address as asked -> the customer it names (see the module's rule); an address no customer has is left out."""
    found: dict[str, str] = {}
    for batch, condition in _conditions(conn, sorted(set(addresses))):
        # Per spelling and per folded address, the lowest id (min by code point, not ORDER BY: a
        # database's collation may sort ids otherwise).
        exact: dict[str, str] = {}
        folded: dict[str, str] = {}
        for cid, stored, lowered in conn.execute(select(C.c.id, C.c.email, EMAIL_LOWER).where(condition)):
            if stored not in exact or cid < exact[stored]:
                exact[stored] = cid
            if lowered not in folded or cid < folded[lowered]:
                folded[lowered] = cid
        for address in batch:
            owner = exact.get(address) or folded.get(address.lower())
            if owner is not None:
                found[address] = owner
    return found


def _conditions(conn: Connection, addresses: list[str]) -> Iterator[tuple[list[str], ColumnElement[bool]]]:
    """(addresses, the condition finding their customers as written or in another case), per statement."""
    if not addresses:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        as_array = ARRAY(C.c.email.type)
        spelled = bindparam("spelled", addresses, type_=as_array)
        folded = bindparam("folded", sorted({a.lower() for a in addresses}), type_=as_array)
        # PostgreSQL takes "column = ANY(array)" only in this order; EMAIL_LOWER is a column expression, no constant.
        yield addresses, or_(C.c.email == any_(spelled), EMAIL_LOWER == any_(folded))  # noqa: SIM300
        return
    for batch in batched(addresses, BATCH):
        yield batch, or_(C.c.email.in_(batch), EMAIL_LOWER.in_(sorted({a.lower() for a in batch})))


def normal_address(address: str) -> str:
    """An address as customers are stored (``email-validator``'s normal form), or as written if it is not one.

    Only a key to look customers up by, never stored: an ASCII address is
    normalized as email-validator does it (the domain lower-cased) without
    its syntax checks, which cost 20 times more; the lookup compares
    case-insensitively where this misses.
    """
    address = address.strip()
    if address.isascii():
        local, at, domain = address.rpartition("@")
        return f"{local}@{domain.lower()}" if at else address
    try:
        return email(address)
    except FieldError:
        return address
