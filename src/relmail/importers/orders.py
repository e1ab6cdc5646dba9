"""The ``orders`` kind: each line item of an order becomes a ``purchase`` event.

An order export has one row per line item. Each line that counts as a
purchase becomes one ``purchase`` event with the deterministic id
``order:<order_id>:<line>`` (``line``: the item's position in its order
unless the file numbers them), so importing the same export again, or a
later export that repeats older orders, changes nothing.

The customer is the ``customer_id`` when the file has one, otherwise the
customer whose address is the line's ``email``, in any case (an address
several customers share names one of them, always the same: see
:mod:`relmail.importers.addresses`). A line with neither (a walk-in sale) has no customer to credit:
it is counted and left out. A line whose address no customer has but whose
``account`` (the shop's number of the customer's account) another line of
the file, or of an earlier import, names a customer by address is that
customer: a shop's customers report lists an account's latest address, and
an old order keeps the one it was placed with. Such lines wait for the end
of the file, since the account's newer orders come later; the links found
are stored (:mod:`relmail.importers.accounts`) for later files. An account
whose orders named two customers is an error on each line that needs it. An
address no customer has is an error, as an
unknown customer id is: import the customers first (a mapping with
``unknown_customers: skip`` counts and leaves out such lines instead: a
shop's guest checkouts). It is one problem per
order, naming the order's lines.

What counts, as a shop owner keeps the books:

* cancelled orders (``cancelled``) and orders that were refunded in full,
  voided, expired or failed (``status``; or ``refunded`` reaching the
  order's total) are not purchases. Their lines write nothing, and a
  purchase imported from an earlier export of the same order is removed;
* a partly refunded order keeps its lines, each worth its share of what was
  not refunded (an export says how much was refunded, not for which line);
* a line's value is ``value``, else ``quantity`` x ``price`` minus the
  line's ``discount``.

A line whose product is not in the catalogue but whose ``variant`` is, is a
purchase of that variant: a shop writes the parent's SKU on the line of a
variant without an SKU of its own, which the products import names by its
id. A line may name a product that is not in the catalogue (deleted since, a
custom item): the purchase keeps the id and is counted as such. A line
without a product id is a purchase of no product, counted too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete
from sqlalchemy.engine import Connection

from ..store import aggregates
from ..store.models import Event
from .accounts import Accounts
from .addresses import customers_by_address, normal_address
from .loader import Loader, References, one_of
from .schemas import PURCHASE_STATUSES, schema_for
from .values import remembered

E = Event.__table__
#: A line whose address no customer has: what to do. A customer's address changed since an old order is found
#: through the shop's account number (``account``), when the export has it.
NO_CUSTOMER = "no customer has this e-mail address"
COUNTED = frozenset(PURCHASE_STATUSES)
#: Distinct addresses, and distinct line values, remembered per import.
REMEMBERED = 65536
#: The events columns a purchase fills, in the order the loader writes them.
EVENT_COLUMNS = ("event_id", "customer_id", "type", "occurred_at", "product_id", "feature", "value", "message_id", "run_id",
                 "topic")


class OrdersWriter:
    """Line items -> purchase events, matched to customers in bulk per chunk."""

    def __init__(self, run, conn: Connection, skip_unknown: bool = False, account_column: str | None = None,
                 source: str = "import"):
        self.run = run
        #: An address no customer has: import the customers first, or (``account_column``: the column of the shop's
        #: account number that the mapping reads and the file lacks) export the orders with that column.
        self.unknown_address = f"{NO_CUSTOMER} (import customers first)" if account_column is None else (
            f"{NO_CUSTOMER} (import customers first; if the customer changed the address since this order, export the "
            f"orders with the column {account_column!r}: the account's other orders then name the customer)")
        #: Lines whose address no customer has are counted and left out (a shop's guest checkouts), not errors.
        self.skip_unknown = skip_unknown
        self.conn = conn
        self.loader = Loader(conn, schema_for("events"))
        if self.loader.columns != EVENT_COLUMNS:
            raise RuntimeError(f"unexpected events columns {self.loader.columns!r}")  # pragma: no cover - schema guard
        #: The lines of one order share its time: bound once per order (see :meth:`Loader.bind`).
        self.bind_time = self.loader.bind("occurred_at")
        self.references = References(conn)
        #: event id -> line, for a line item that appears twice.
        self.seen: dict[str, int] = {}
        self.order: str | None = None
        self.position = 0
        #: Normalized address -> customer id, remembered for the rest of the file (customers reorder).
        self.known: dict[str, str] = {}
        #: An address as written -> its lookup key (a customer's orders repeat it).
        self.normal = remembered(normal_address, REMEMBERED)
        #: A value rounded to cents (lines repeat their quantity and price).
        self.cents = remembered(_cents, REMEMBERED)
        #: Event ids of lines that are not purchases: an earlier import's purchase of theirs is removed at the end.
        self.gone: list[str] = []
        #: The shop's account number -> the customers its lines named by address (``source``: the mapping's name).
        self.accounts = Accounts(conn, source)
        #: Lines whose address no customer has, with an account: found at the end of the file, or rejected.
        self.waiting: list = []
        self.details = {"purchases": 0, "lines_not_purchases": 0, "purchases_removed": 0, "lines_without_customer": 0,
                        "lines_unknown_product": 0, "lines_without_product": 0, "lines_unknown_customer": 0}

    def check(self, line: int, row: dict[str, Any]) -> list[tuple[str | None, str]]:
        order = row["order_id"]
        if row["line"] is not None:
            n = row["line"]
        else:
            if order != self.order:
                self.order, self.position = order, 0
            self.position += 1
            n = self.position
        event_id = f"order:{order}:{n}"
        row["_event_id"] = event_id
        first = self.seen.setdefault(event_id, line)
        if first != line:
            return [("order_id", f"line item {n} of order {order!r} is also on line {first} "
                                 "(the rows of one order must follow each other)")]
        return []

    def write(self, pending: list) -> None:
        # Customers in bulk: ids checked against the store, addresses looked up once per file.
        ids = {row["customer_id"] for _, row in pending if row["customer_id"] is not None}
        unknown_ids = self.references.missing("customers", ids) if ids else set()
        normal = self.normal
        keys = [normal(row["email"]) if row["customer_id"] is None and row["email"] else None for _, row in pending]
        known, saw = self.known, self.accounts.saw
        known.update(customers_by_address(self.conn, set(keys) - known.keys() - {None}))
        details, reject = self.details, self.run.reject
        lines = []
        for (record, row), key in zip(pending, keys):
            customer = row["customer_id"]
            # Once per order, naming its lines: each line names the same customer.
            if customer is not None:
                if customer in unknown_ids:
                    reject(record, [("customer_id", f"unknown customer {customer!r} (import customers first)")],
                           f"order {row['order_id']!r}")
                    continue
            elif key is not None:
                customer = known.get(key)
                account = row["account"]
                if customer is not None and account is not None:
                    saw(account, customer)
                elif customer is None and account is not None:
                    # Every such line waits: a later line of the file may name a second customer for the account.
                    self.waiting.append((record, row))
                    continue
                if customer is None and self.skip_unknown:
                    details["lines_unknown_customer"] += 1
                    continue
                if customer is None:
                    reject(record, [("email", self.unknown_address)], f"order {row['order_id']!r}")
                    continue
            else:
                details["lines_without_customer"] += 1
                continue
            lines.append((row, customer))
        self._write(lines)

    def _write(self, lines: list[tuple[dict[str, Any], str]]) -> None:
        """Lines and their customers -> purchase events, written in one go."""
        details, bind_time, cents = self.details, self.bind_time, self.cents
        events, gone, variants = [], [], []
        when = bound = None
        for row, customer in lines:
            counts, value = purchase_value(row)
            if not counts:
                gone.append(row["_event_id"])
                details["lines_not_purchases"] += 1
                continue
            if value is not None:
                value = cents(value)
            if row["ordered_at"] is not when:
                when = row["ordered_at"]
                bound = bind_time(when)
            # In the order of EVENT_COLUMNS.
            events.append((row["_event_id"], customer, "purchase", bound, row["product_id"], None, value, None, None, None))
            variants.append(row["variant"])
        if not self.run.may_write():
            return
        products = {e[4] for e in events if e[4] is not None}
        unknown = self.references.missing("products", products) if products else set()
        wanted = {v for e, v in zip(events, variants) if v is not None and (e[4] is None or e[4] in unknown)}
        if wanted:
            found = wanted - self.references.missing("products", wanted)
            events = [(*e[:4], v, *e[5:]) if v in found and (e[4] is None or e[4] in unknown) else e
                      for e, v in zip(events, variants)]
        # A shop that gives its products no SKU exports lines without a product id: purchases no
        # segment on products or categories and no featured-product rule can see. Said, not hidden.
        details["lines_without_product"] += sum(1 for e in events if e[4] is None)
        if unknown:
            details["lines_unknown_product"] += sum(1 for e in events if e[4] in unknown)
        self.loader.write_bound(events)
        details["purchases"] += len(events)
        self.run.imported += len(events)
        self.gone.extend(gone)

    def finish(self) -> None:
        """The lines that waited for their account; the account links found, stored; then remove the purchases of lines
        that are none any more, all in one statement (on PostgreSQL) after the last chunk."""
        lines, accounts = [], self.accounts
        accounts.load({row["account"] for _, row in self.waiting})
        for record, row in self.waiting:
            account = row["account"]
            customers = accounts.customers(account)
            if len(customers) == 1:
                self.details["matched_by_account"] = self.details.get("matched_by_account", 0) + 1
                lines.append((row, customers[0]))
            elif customers:
                self.run.reject(record, [("email", f"{NO_CUSTOMER}, and the orders of account {account!r} name "
                                                   f"{len(customers)} customers by their addresses ({', '.join(customers)}; "
                                                   "in this file or an earlier import): which one this order is, is "
                                                   "ambiguous; import a customers export that has the address, or leave "
                                                   "the order out with --skip-invalid")], f"order {row['order_id']!r}")
            elif self.skip_unknown:
                self.details["lines_unknown_customer"] += 1
            else:
                self.run.reject(record, [("email", f"{NO_CUSTOMER}, nor has any order of account {account!r}, in this "
                                                   "file or an earlier import, named one by its address (an address "
                                                   "changed since?): import a customers export that has the address, or "
                                                   "leave the order out with --skip-invalid")], f"order {row['order_id']!r}")
        self.waiting = []
        if lines:
            self._write(lines)
        if not self.run.may_write():
            return
        linked = accounts.save()
        if linked:
            self.details["accounts_linked"] = linked
        if self.gone:
            # Their customers' aggregates lose these purchases.
            self.loader.touched.update(aggregates.owners(self.conn, self.gone))
        for condition in one_of(self.conn, E.c.event_id, self.gone):
            self.details["purchases_removed"] += self.conn.execute(delete(E).where(condition)).rowcount or 0

    def close(self) -> None:
        self.loader.close()


def purchase_value(row: dict[str, Any]) -> tuple[bool, float | None]:
    """(whether the line is a purchase, what it is worth before rounding to cents: None when the file gives no price)."""
    status = row["status"]
    if row["cancelled"] or (status is not None and status not in COUNTED):
        return False, None
    value = row["value"]
    if value is None and row["price"] is not None:
        value = row["quantity"] * row["price"] - (row["discount"] or 0.0)
    total, refunded = row["order_total"], row["refunded"] or 0.0
    if refunded > 0 and total:
        if refunded >= total:
            return False, None
        if value is not None:
            value *= 1.0 - refunded / total
    return True, value


def _cents(value: float) -> float:
    return round(value, 2)
