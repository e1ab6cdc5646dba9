"""One schema per import kind: which fields a file has, how each is checked, how rows are keyed.

A schema turns a record's raw values into a row for its table (every
column present, so rows can go to ``executemany`` together) plus a list of
``(field, message)`` problems. File fields map 1:1 to table columns; the
customers and products schemas also collect extra columns into
``attributes``. The ``orders`` kind has no table of its own: its rows (one
per line item) become ``purchase`` events (:mod:`relmail.importers.orders`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from sqlalchemy import Table

from ..store.models import EVENT_TYPES, Customer, Event, Preference, Product
from . import fields as f

KINDS = ("customers", "products", "preferences", "events", "orders")


class Fallback(str):
    """A value a row left blank, filled in from the caller's defaults (a customer's locale and time zone).

    A new customer gets it; a stored one keeps the value another source gave
    (:meth:`relmail.importers.writers.CustomersWriter.write`), as a blank name
    does not erase a stored one.
    """

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    parse: f.Parser
    required: bool = False
    #: Value when missing or empty: a constant, or the name of a caller default (``"@locale"``, given as a :class:`Fallback`).
    default: Any = None
    #: How an invalid value is kept when the import is lenient (a malformed address: stored as
    #: written and flagged), or None: an invalid value is always a problem.
    lenient: f.Parser | None = None


@dataclass(frozen=True)
class Schema:
    kind: str
    table: Table
    columns: tuple[Column, ...]
    #: Columns of the upsert key; duplicates within one file are errors.
    key: tuple[str, ...]
    #: field -> referenced table name ("customers" or "products"), checked in bulk.
    references: dict[str, str] = field(default_factory=dict)
    #: Extra CSV columns / JSON keys go into this JSON column instead of being errors.
    extras_into: str | None = None
    #: Rows without a key value are appended instead of upserted (events without event_id).
    key_optional: bool = False
    #: Columns the import computes, not read from files: (column, value of a clean row).
    computed: tuple[tuple[str, Any], ...] = ()
    #: The column that says a lenient field was kept invalid (False = flagged).
    flag: str | None = None

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @cached_property
    def written(self) -> tuple[str, ...]:
        """The table columns an import writes: the file fields, then the computed ones."""
        return self.names + tuple(name for name, _ in self.computed)

    @cached_property
    def _plan(self) -> tuple[tuple[str, f.Parser, bool, Any, f.Parser | None], ...]:
        # Plain tuples: convert() runs once per row, attribute lookups add up.
        return tuple((c.name, c.parse, c.required, c.default, c.lenient) for c in self.columns)

    @cached_property
    def known(self) -> frozenset[str]:
        return frozenset(self.names)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    def check_header(self, header: list[str]) -> list[tuple[str | None, str]]:
        """Header problems: missing required columns, unknown or repeated columns."""
        problems: list[tuple[str | None, str]] = []
        seen: set[str] = set()
        for name in header:
            if not name:
                problems.append((None, "the header has an empty column name"))
            elif name in seen:
                problems.append((name, f"column '{name}' appears twice in the header"))
            seen.add(name)
        for name in self.required:
            if name not in seen:
                problems.append((name, f"missing required column '{name}' in the header"))
        if self.extras_into is None:
            known = set(self.names)
            for name in header:
                if name and name not in known:
                    problems.append((name, f"unknown column '{name}' in the header (known: {', '.join(self.names)})"))
        return problems

    def convert(self, values: dict[str, Any], defaults: dict[str, Any], from_csv: bool,
                flagged: list[tuple[str, str]] | None = None, final: frozenset[str] = frozenset()) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """The row to store and the problems found (every field is checked, not just the first bad one).

        With ``flagged`` (a lenient import), a field with a ``lenient`` parser
        keeps its invalid value as written: its name and why it is invalid are
        appended to ``flagged`` and the row's :attr:`flag` column is False. ``final``
        names fields whose values went through this schema's parser already
        (a column mapping does that once per distinct cell, and never gives
        such a field a blank value: a blank cell is left out).
        """
        if final and final.issuperset(values):
            return self._complete(values, defaults, from_csv)
        row: dict[str, Any] = dict(self.computed)
        problems: list[tuple[str, str]] = []
        for name, parse, required, default, lenient in self._plan:
            value = values.get(name)
            if value is None or value == "" or (value.__class__ is str and value.isspace()):
                if required:
                    problems.append((name, "is required"))
                elif default.__class__ is str and default[:1] == "@":
                    row[name] = defaults[default[1:]]
                else:
                    row[name] = default() if callable(default) else default
                continue
            if name in final:
                row[name] = value
                continue
            try:
                row[name] = parse(value)
            except f.FieldError as exc:
                if flagged is None or lenient is None:
                    problems.append((name, str(exc)))
                    continue
                try:
                    row[name] = lenient(value)
                except f.FieldError as kept:
                    problems.append((name, f"{exc}; {kept}"))
                    continue
                flagged.append((name, str(exc)))
                row[self.flag] = False  # type: ignore[index]
        if self.extras_into is not None:
            self._collect_extras(values, row, from_csv)
        elif not from_csv:
            known = self.known
            for name in values:
                if name not in known:
                    problems.append((name, f"unknown field '{name}' (known: {', '.join(self.names)})"))
        return row, problems

    @cached_property
    def _fills(self) -> tuple[dict[str, Any], tuple[tuple[str, Any], ...], tuple[str, ...]]:
        """(the computed columns and constant defaults, the defaults made per row, the required fields as a set)."""
        constant = dict(self.computed)
        per_row = []
        for name, _, required, default, _ in self._plan:
            if required:
                continue
            if callable(default) or (default.__class__ is str and default[:1] == "@"):
                per_row.append((name, default))
            else:
                constant[name] = default
        return constant, tuple(per_row), frozenset(self.required)

    def _complete(self, values: dict[str, Any], defaults: dict[str, Any], from_csv: bool) -> tuple[dict[str, Any], list]:
        """:meth:`convert` of values that all went through this schema's parsers: only the missing fields are filled.

        A column mapping checks each distinct cell once, so a mapped row
        needs no per-field loop: the constant defaults and computed columns
        come in one dict merge.
        """
        constant, per_row, required = self._fills
        row = {**constant, **values}
        for name, default in per_row:
            if name not in values:
                row[name] = defaults[default[1:]] if default.__class__ is str else default()
        problems = [] if values.keys() >= required else [(name, "is required") for name in self.required if name not in values]
        if self.extras_into is not None:
            self._collect_extras(values, row, from_csv)
        return row, problems

    def _collect_extras(self, values: dict[str, Any], row: dict[str, Any], from_csv: bool) -> None:
        target = self.extras_into
        known = self.known
        extras = dict(row.get(target) or {})
        for name, value in values.items():
            if name in known:
                continue
            if from_csv:
                if value.strip():
                    extras[name] = f.csv_scalar(value.strip())
            elif value is not None:
                extras[name] = value
        row[target] = extras  # type: ignore[index]


def _length(table: Table, name: str) -> int:
    return table.c[name].type.length  # type: ignore[attr-defined]


def _customers() -> Schema:
    t = Customer.__table__
    return Schema(
        kind="customers",
        table=t,
        columns=(
            Column("id", f.identifier(_length(t, "id")), required=True),
            # Lenient: an address that is not one is stored as written and flagged
            # (INVALID_ADDRESS never mails it), unless the import is strict.
            Column("email", f.email, required=True, lenient=f.text(_length(t, "email"))),
            Column("first_name", f.text(_length(t, "first_name"))),
            Column("last_name", f.text(_length(t, "last_name"))),
            Column("locale", f.locale, default="@locale"),
            Column("timezone", f.time_zone, default="@timezone"),
            # Optional, and never defaulted to "now": that would make every imported
            # customer look new. Unknown, the features date the customer from the
            # first order; with no order either, the customer is never treated as new.
            Column("created_at", f.aware_datetime),
            Column("attributes", f.json_object, default=dict),
        ),
        key=("id",),
        extras_into="attributes",
        computed=(("email_valid", True),),
        flag="email_valid",
    )


def _products() -> Schema:
    t = Product.__table__
    return Schema(
        kind="products",
        table=t,
        columns=(
            Column("id", f.identifier(_length(t, "id")), required=True),
            Column("name", f.text(_length(t, "name")), required=True),
            Column("category", f.identifier(_length(t, "category")), required=True),
            Column("price", f.number(minimum=0), default=0.0),
            Column("sale_price", f.number(minimum=0)),
            Column("sale_starts_at", f.scheduled_datetime),
            Column("sale_ends_at", f.scheduled_datetime),
            Column("url", f.text(_length(t, "url"), allow_spaces=False)),
            Column("features", f.string_list(100), default=list),
            Column("image_url", f.text(_length(t, "image_url"), allow_spaces=False)),
            Column("attributes", f.json_object, default=dict),
        ),
        key=("id",),
        extras_into="attributes",
    )


def _preferences() -> Schema:
    t = Preference.__table__
    return Schema(
        kind="preferences",
        table=t,
        columns=(
            Column("customer_id", f.identifier(_length(t, "customer_id")), required=True),
            Column("topic", f.identifier(_length(t, "topic")), required=True),
            Column("opted_in", f.boolean, required=True),
            Column("max_per_week", f.integer(minimum=0)),
            Column("updated_at", f.aware_datetime, required=True),
            Column("source", f.text(_length(t, "source")), default="import"),
        ),
        key=("customer_id", "topic"),
        references={"customer_id": "customers"},
    )


def _events() -> Schema:
    t = Event.__table__
    return Schema(
        kind="events",
        table=t,
        columns=(
            Column("event_id", f.identifier(_length(t, "event_id"))),
            Column("customer_id", f.identifier(_length(t, "customer_id")), required=True),
            Column("type", f.one_of(EVENT_TYPES, "event type"), required=True),
            Column("occurred_at", f.aware_datetime, required=True),
            Column("product_id", f.identifier(_length(t, "product_id"))),
            Column("feature", f.text(_length(t, "feature"))),
            Column("value", f.number()),
            Column("message_id", f.identifier(_length(t, "message_id"))),
            Column("run_id", f.identifier(_length(t, "run_id"))),
            Column("topic", f.identifier(_length(t, "topic"))),
        ),
        key=("event_id",),
        references={"customer_id": "customers", "product_id": "products"},
        key_optional=True,
    )


def _orders() -> Schema:
    t = Event.__table__
    return Schema(
        kind="orders",
        table=t,
        columns=(
            # event_id is "order:<order_id>:<line>", at most 128 characters.
            Column("order_id", f.identifier(100), required=True),
            Column("line", f.integer(minimum=1)),
            Column("customer_id", f.identifier(_length(t, "customer_id"))),
            Column("email", f.text(320)),
            # The shop's own number of the customer's account: links an order to the account's other orders.
            Column("account", f.identifier(100)),
            Column("ordered_at", f.aware_datetime, required=True),
            Column("product_id", f.identifier(_length(t, "product_id"))),
            # The variant's own id: the product when product_id is not in the catalogue (a shop writes
            # the parent's SKU for a variant without one, and the products import names it by its id).
            Column("variant", f.identifier(_length(t, "product_id"))),
            Column("quantity", f.number(minimum=0), default=1.0),
            Column("price", f.number()),
            Column("discount", f.number(minimum=0), default=0.0),
            Column("value", f.number()),
            Column("status", f.one_of(ORDER_STATUSES, "order status")),
            Column("cancelled", f.boolean, default=False),
            Column("refunded", f.number(minimum=0), default=0.0),
            Column("order_total", f.number(minimum=0)),
        ),
        key=("order_id", "line"),
        key_optional=True,
    )


#: Order statuses (Shopify's financial statuses and WooCommerce's order statuses) whose
#: lines count as purchases; the others (refunded, voided, expired, cancelled, failed) do not.
PURCHASE_STATUSES = ("paid", "pending", "authorized", "partially_paid", "partially_refunded", "processing", "on-hold",
                     "completed")
ORDER_STATUSES = (*PURCHASE_STATUSES, "refunded", "voided", "expired", "cancelled", "failed")


_BUILDERS: dict[str, Callable[[], Schema]] = {
    "customers": _customers,
    "products": _products,
    "preferences": _preferences,
    "events": _events,
    "orders": _orders,
}


def schema_for(kind: str) -> Schema:
    """The schema of an import kind (one of :data:`KINDS`)."""
    try:
        return _BUILDERS[kind]()
    except KeyError:
        raise ValueError(f"unknown import kind {kind!r} (known: {', '.join(KINDS)})") from None
