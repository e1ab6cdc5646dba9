"""A shop's account numbers and the customers their orders named by address, kept from one import to the next.

An order export carries the shop's number of the customer's account
(WooCommerce's ``customer_id``) and the billing address the order was placed
with; the customers export lists the account's latest address. An order
whose address no customer has any more is the customer that the account's
other orders name by address: in the same file, or in an earlier import
(a weekly import of last week's orders has the account's other orders in
earlier files). So the orders import stores each (source, account) ->
customer it finds in ``shop_accounts``; ``source`` is the mapping that read
the number, so the numbers of two shops never meet.

An account whose orders named two customers (an order placed with an address
another customer has) keeps both: a line that needs the account is then
ambiguous, and an error naming both, never a guess.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.engine import Connection

from ..store.models import ShopAccount
from .loader import one_of

SA = ShopAccount.__table__


class Accounts:
    """The customers each account number names: found by this file's lines, or stored by earlier imports."""

    def __init__(self, conn: Connection, source: str):
        self.conn = conn
        self.source = source
        #: Account -> the customers this file's lines named by address.
        self.found: dict[str, set[str]] = {}
        #: Account -> the customers the store holds for it, for the accounts asked so far.
        self.stored: dict[str, frozenset[str]] = {}

    def saw(self, account: str, customer: str) -> None:
        """A line of ``account`` named ``customer`` by its address."""
        self.found.setdefault(account, set()).add(customer)

    def load(self, accounts: Iterable[str]) -> None:
        """Read the stored customers of ``accounts`` not read yet: one statement (batches of ``IN`` on SQLite)."""
        wanted = set(accounts) - self.stored.keys()
        got: dict[str, set[str]] = {a: set() for a in wanted}
        for condition in one_of(self.conn, SA.c.account, wanted):
            for account, customer in self.conn.execute(select(SA.c.account, SA.c.customer_id)
                                                       .where(SA.c.source == self.source, condition)):
                got[account].add(customer)
        self.stored.update((a, frozenset(c)) for a, c in got.items())

    def customers(self, account: str) -> list[str]:
        """The customers ``account`` names (after :meth:`load` of it), sorted: one, none, or several (ambiguous)."""
        return sorted(self.found.get(account, set()) | self.stored.get(account, frozenset()))

    def save(self) -> int:
        """Store the links this file found that the store lacks; how many."""
        self.load(self.found)
        rows = [{"source": self.source, "account": a, "customer_id": c}
                for a, found in self.found.items() for c in sorted(found - self.stored[a])]
        if rows:
            self.conn.execute(SA.insert(), rows)
            for a, found in self.found.items():
                self.stored[a] = self.stored[a] | found
        return len(rows)
