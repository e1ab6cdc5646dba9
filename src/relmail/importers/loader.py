"""Bulk writes for imports: upserts in chunks, reference lookups, the erasure link.

Everything here runs on the caller's connection, inside its transaction, so
an import that fails anywhere leaves the database as it was.

* SQLite (and any other dialect): one ``INSERT ... ON CONFLICT DO UPDATE``
  executed with ``executemany`` per chunk.
* PostgreSQL: ``COPY`` of the chunk into a temporary table, then one
  ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``: one round trip for
  thousands of rows instead of one per row.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import JSON, ColumnElement, Table, and_, any_, bindparam, func, select
from sqlalchemy.engine import Connection

from ..store import consent_log
from ..store.addresses import address_hash, salt
from ..store.models import Customer, Event, Preference, Product, Suppression
from .schemas import Schema

#: Parameters per ``IN (...)`` lookup: below SQLite's oldest variable limit (999).
LOOKUP_BATCH = 500

#: SQLite page cache for the import connection (KiB, negative as SQLite wants it).
#: SQLite's default cache thrashes once the events indexes outgrow it: random
#: customer ids touch pages all over the index, and inserts slow down sharply.
SQLITE_IMPORT_CACHE_KIB = 131072

#: Source recorded on the global opt-out written for a suppressed address.
SUPPRESSION_SOURCE = "suppression-list"
#: Suppression reasons about the address, not the person: a mailing tool cleaned it after hard
#: bounces. Such an address is never mailed, but it says nothing about the person's consent.
ADDRESS_ONLY = ("cleaned",)


def batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def one_of(conn: Connection, column: ColumnElement, values: Collection[Any]) -> Iterator[ColumnElement[bool]]:
    """Conditions "``column`` is one of ``values``", for one statement each.

    PostgreSQL takes the values as one array (one round trip however many
    there are); other databases get ``IN`` lists of :data:`LOOKUP_BATCH`.
    """
    if not values:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        yield column == any_(bindparam("values", list(values), type_=ARRAY(column.type)))
        return
    for batch in batched(sorted(values), LOOKUP_BATCH):
        yield column.in_(batch)


#: How an upsert updates a column of an existing row: ``set`` (the new value), ``keep`` (the new
#: value unless it is NULL: a blank cell does not erase what another source said), ``earliest``
#: (the earlier of the two, NULL meaning unknown), ``merge`` (JSON objects: the new keys over the
#: stored ones).
UPDATES = ("set", "keep", "earliest", "merge")


def upsert_statement(conn: Connection, table: Table, key: Sequence[str], columns: Sequence[str],
                     update: dict[str, str] | None = None):
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` in the connection's dialect, for executemany.

    ``update`` says how each column of an existing row changes (see
    :data:`UPDATES`); a column it leaves out keeps its stored value. None:
    every column is set.
    """
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table)
    update = update if update is not None else {name: "set" for name in columns if name not in key}
    updates = {}
    for name, how in update.items():
        new, old = stmt.excluded[name], table.c[name]
        if how == "keep":
            updates[name] = func.coalesce(new, old)
        elif how == "earliest":
            # SQLite's two-argument min() is NULL when either is (PostgreSQL loads through COPY).
            updates[name] = func.coalesce(func.min(new, old), new, old)
        elif how == "merge":
            updates[name] = func.json_patch(old, new)  # SQLite only: PostgreSQL loads through COPY
        else:
            updates[name] = new
    if not updates:
        return stmt.on_conflict_do_nothing(index_elements=[table.c[k] for k in key])
    return stmt.on_conflict_do_update(index_elements=[table.c[k] for k in key], set_=updates)


class Loader:
    """Upserts validated rows of one schema, a chunk at a time.

    ``update`` (column -> ``set``/``keep``/``merge``) says how an existing
    row changes; None sets every column the schema writes.
    """

    def __init__(self, conn: Connection, schema: Schema, update: dict[str, str] | None = None):
        self.conn = conn
        self.schema = schema
        self.columns = schema.written
        self.update = update if update is not None else {c: "set" for c in self.columns if c not in schema.key}
        self.postgres = conn.dialect.name == "postgresql"
        #: Events: the customers whose events this import wrote or moved, for the per-customer aggregates.
        self.touched: set[str] | None = set() if schema.table is Event.__table__ else None
        if self.postgres:
            self._setup_copy()
        else:
            self._setup_executemany()

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.touched is not None:
            self.touched.update(row["customer_id"] for row in rows)
        if self.postgres:
            self._write_copy(rows)
        elif self.touched is not None:
            self._write_events(rows, lambda row: row.get("event_id"), self._write_executemany)
        else:
            self._write_executemany(rows)

    def _write_events(self, rows: list, event_id: Callable[[Any], Any], execute: Callable[[list, str | None], None]) -> None:
        """Events on SQLite: as :meth:`_write_executemany`, noting the old owners of events an upsert moves.

        An upsert may move an event to another customer, whose old owner's
        aggregates change too. Looking every imported id up first would cost
        a good part of the import, so the chunk is first inserted with
        ``ON CONFLICT DO NOTHING``: when every row got a new id (the usual
        case) that is all; otherwise the stored owners of the ids that were
        there already are looked up, and those rows upserted. ``rows`` are
        dicts or bound tuples: ``event_id`` reads a row's id, ``execute``
        writes rows with a statement (None: the upsert).
        """
        keyed = [key for key in map(event_id, rows) if key is not None]
        if not keyed:
            execute(rows, None)
            return
        ids = Event.__table__.c.id
        top = self.conn.execute(select(func.coalesce(func.max(ids), 0))).scalar_one()
        execute(rows, self.sql_new)
        if self.conn.execute(select(func.count()).where(ids > top)).scalar_one() == len(rows):
            return
        e = Event.__table__
        stored: set[str] = set()
        for batch in batched(keyed, LOOKUP_BATCH):
            for key, customer in self.conn.execute(select(e.c.event_id, e.c.customer_id).where(e.c.event_id.in_(batch),
                                                                                                ids <= top)):
                stored.add(key)
                self.touched.add(customer)
        execute([row for row in rows if event_id(row) in stored], None)

    def bind(self, column: str) -> Callable[[Any], Any]:
        """How a value of ``column`` goes to the database, for :meth:`write_bound`.

        A writer whose rows repeat values (the lines of one order share its
        time) binds each distinct value once instead of once per row.
        """
        if self.postgres:
            return _json_text if self.columns.index(column) in self.json_columns else _same
        return dict(self.processors).get(column, _same)

    def write_bound(self, rows: list[tuple]) -> None:
        """Rows as tuples in the order of :attr:`columns`, each value passed through :meth:`bind` already."""
        if not rows:
            return
        if self.touched is not None:
            customer = self.columns.index("customer_id")
            self.touched.update(row[customer] for row in rows)
        if self.postgres:
            self._copy(rows)
        elif self.touched is not None:
            key = self.columns.index("event_id")
            self._write_events(rows, itemgetter(key), lambda part, sql: self.conn.exec_driver_sql(sql or self.sql, part))
        else:
            self.conn.exec_driver_sql(self.sql, rows)

    # SQLite and others: the Core upsert, compiled once, run with executemany.

    def close(self) -> None:
        """Give the pooled connection its page cache size back."""
        if getattr(self, "cache_before", None) is not None:
            self.conn.exec_driver_sql(f"PRAGMA cache_size = {int(self.cache_before)}")

    def _setup_executemany(self) -> None:
        dialect = self.conn.dialect
        if dialect.name == "sqlite":
            self.cache_before = self.conn.exec_driver_sql("PRAGMA cache_size").scalar()
            self.conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_IMPORT_CACHE_KIB}")
        statement = upsert_statement(self.conn, self.schema.table, self.schema.key, self.columns, self.update)
        compiled = statement.compile(dialect=dialect, column_keys=list(self.columns))
        if compiled.positiontup != list(self.columns):
            raise RuntimeError(f"unexpected parameter order {compiled.positiontup!r}")  # pragma: no cover - dialect guard
        self.sql = str(compiled)
        if self.touched is not None:
            # Events: the same insert that leaves stored ids alone (see _write_events).
            self.sql_new = str(upsert_statement(self.conn, self.schema.table, self.schema.key, self.columns, update={})
                               .compile(dialect=dialect, column_keys=list(self.columns)))
        # The column types' own bind processors (UTC conversion, JSON, ...)
        # applied in one tight loop: passing dicts through Connection.execute
        # costs more per row than the insert itself.
        self.processors = []
        for name in self.columns:
            processor = self.schema.table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors.append((name, processor))
        self.as_tuple = itemgetter(*self.columns)

    def _write_executemany(self, rows: list[dict[str, Any]], sql: str | None = None) -> None:
        as_tuple = self.as_tuple
        params = []
        for row in rows:
            if self.processors:
                row = dict(row)
                for name, processor in self.processors:
                    row[name] = processor(row[name])
            params.append(as_tuple(row))
        self.conn.exec_driver_sql(sql or self.sql, params)

    # PostgreSQL: COPY into a temp table, then one set-based upsert.

    def _setup_copy(self) -> None:
        table = self.schema.table.name
        self.temp = f"relmail_import_{table}"
        cols = ", ".join(f'"{c}"' for c in self.columns)
        forms = {"set": 'EXCLUDED."{c}"', "keep": 'COALESCE(EXCLUDED."{c}", "{t}"."{c}")',
                 "earliest": 'LEAST(EXCLUDED."{c}", "{t}"."{c}")',
                 "merge": '("{t}"."{c}"::jsonb || EXCLUDED."{c}"::jsonb)::json'}
        updates = ", ".join(f'"{c}" = ' + forms[how].format(c=c, t=table) for c, how in self.update.items())
        key = ", ".join(f'"{k}"' for k in self.schema.key)
        self.json_columns = [i for i, c in enumerate(self.columns) if isinstance(self.schema.table.c[c].type, JSON)]
        self.copy_sql = f'COPY "{self.temp}" ({cols}) FROM STDIN'
        action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        self.merge_sql = f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM "{self.temp}" ON CONFLICT ({key}) {action}'
        with self._cursor() as cur:
            # Column types are copied from the target table; ON COMMIT DROP
            # (and any rollback) removes it with the transaction.
            cur.execute(f'CREATE TEMP TABLE IF NOT EXISTS "{self.temp}" ON COMMIT DROP AS SELECT {cols} FROM "{table}" WITH NO DATA')
            cur.execute(f'TRUNCATE "{self.temp}"')

    def _cursor(self):
        return self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]

    def _write_copy(self, rows: list[dict[str, Any]]) -> None:
        columns, json_columns = self.columns, self.json_columns
        with self._cursor() as cur:
            with cur.copy(self.copy_sql) as copy:
                for row in rows:
                    values = [row[c] for c in columns]
                    for i in json_columns:
                        values[i] = json.dumps(values[i], ensure_ascii=False)
                    copy.write_row(values)
            self._merge(cur)

    def _copy(self, rows: list[tuple]) -> None:
        with self._cursor() as cur:
            with cur.copy(self.copy_sql) as copy:
                for values in rows:
                    copy.write_row(values)
            self._merge(cur)

    def _merge(self, cur) -> None:
        if self.touched is not None:
            # Events the merge moves to another customer: their old owner's aggregates change too.
            cur.execute(f'SELECT DISTINCT e.customer_id FROM events e JOIN "{self.temp}" t ON t.event_id = e.event_id '
                        'WHERE e.customer_id <> t.customer_id')
            self.touched.update(r[0] for r in cur.fetchall())
        cur.execute(self.merge_sql)
        cur.execute(f'TRUNCATE "{self.temp}"')


def _same(value: Any) -> Any:
    return value


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class References:
    """Which referenced ids exist, looked up in bulk and remembered for the rest of the file."""

    TABLES = {"customers": Customer.__table__, "products": Product.__table__}

    def __init__(self, conn: Connection):
        self.conn = conn
        self.known: dict[str, set[str]] = {name: set() for name in self.TABLES}

    def missing(self, table_name: str, ids: Iterable[str]) -> set[str]:
        """The ids in ``ids`` that are not rows of ``table_name``."""
        table = self.TABLES[table_name]
        known = self.known[table_name]
        todo = [i for i in set(ids) if i not in known]
        for batch in batched(todo, LOOKUP_BATCH):
            known.update(self.conn.execute(select(table.c.id).where(table.c.id.in_(batch))).scalars())
        return {i for i in todo if i not in known}

    def other_case(self, table_name: str, ids: set[str]) -> dict[str, str]:
        """Stored ids that differ from these missing ones only in case (``acc-c40`` for ``ACC-C40``).

        Only asked when an id is missing, so the scan that ``lower()`` needs costs nothing on a clean file.
        """
        table = self.TABLES[table_name]
        wanted = {i.lower(): i for i in ids}
        found: dict[str, str] = {}
        for batch in batched(sorted(wanted), LOOKUP_BATCH):
            for stored in self.conn.execute(select(table.c.id).where(func.lower(table.c.id).in_(batch))).scalars():
                found.setdefault(wanted[stored.lower()], stored)
        return found


class SuppressionLink:
    """Gives re-imported erased addresses a global opt-out, so they are not mailed without fresh consent.

    An address in ``suppressions`` was erased on request. If a customer with
    that address is imported again (a CRM sync brings it back), relmail
    writes the global preference ``*`` = opted out, source
    ``suppression-list``. A global opt-in dated after the suppression is
    fresh consent and is left alone; an older one is overridden.
    """

    def __init__(self, conn: Connection, origin: str | None = None):
        self.conn = conn
        #: The imported file, for the consent history.
        self.origin = origin
        table = Suppression.__table__
        self.about_person = table.c.reason.not_in(ADDRESS_ONLY)
        self.active = conn.execute(select(table.c.email_hash).where(self.about_person).limit(1)).first() is not None
        self.salt = salt(conn) if self.active else ""
        self.written = 0

    def apply(self, rows: list[dict[str, Any]]) -> int:
        """Write opt-outs for the suppressed customers among ``rows``; returns how many."""
        if not self.active or not rows:
            return 0
        by_hash = {address_hash(row["email"], self.salt): row["id"] for row in rows}
        suppressed: dict[str, datetime] = {}
        table = Suppression.__table__
        for batch in batched(list(by_hash), LOOKUP_BATCH):
            for email_hash, created_at in self.conn.execute(
                select(table.c.email_hash, table.c.created_at).where(table.c.email_hash.in_(batch), self.about_person)
            ):
                suppressed[by_hash[email_hash]] = created_at
        if not suppressed:
            return 0
        prefs = Preference.__table__
        existing: dict[str, tuple[bool, datetime]] = {}
        for batch in batched(list(suppressed), LOOKUP_BATCH):
            query = select(prefs.c.customer_id, prefs.c.opted_in, prefs.c.updated_at).where(
                and_(prefs.c.topic == "*", prefs.c.customer_id.in_(batch))
            )
            existing.update({cid: (opted_in, updated) for cid, opted_in, updated in self.conn.execute(query)})
        targets = [
            cid
            for cid, erased_at in suppressed.items()
            if cid not in existing or (existing[cid][0] and existing[cid][1] < erased_at)
        ]
        if targets:
            columns = ("customer_id", "topic", "opted_in", "max_per_week", "updated_at", "source")
            stmt = upsert_statement(self.conn, prefs, ("customer_id", "topic"), columns)
            self.conn.execute(
                stmt,
                [
                    # Dated when the address was erased: consent given after that is fresh and,
                    # the latest record winning, still wins over this opt-out.
                    {"customer_id": cid, "topic": "*", "opted_in": False, "max_per_week": None, "updated_at": suppressed[cid],
                     "source": SUPPRESSION_SOURCE}
                    for cid in targets
                ],
            )
            consent_log.record(self.conn, [{"customer_id": cid, "topic": "*", "opted_in": False, "changed_at": suppressed[cid],
                                            "source": SUPPRESSION_SOURCE, "detail": self.origin} for cid in targets])
        self.written += len(targets)
        return len(targets)
