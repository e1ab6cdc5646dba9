"""SQL building blocks shared by the feature queries: ages, windows, audience scoping.

The same expressions must mean the same on SQLite and PostgreSQL. SQLite
keeps times as ISO text (``UTCDateTime`` writes ``YYYY-MM-DD HH:MM:SS.ffffff``
in UTC), so window bounds are bound parameters of the column's own type and
compare as text; ages in days use ``julianday`` there and ``EXTRACT(EPOCH)``
on PostgreSQL. No ``exp()``/``pow()``: not every SQLite has math functions.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from operator import itemgetter

import numpy as np
from psycopg.pq import Format
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, bindparam, cast, event, func, insert, literal, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from ..store.models import Customer, UTCDateTime

#: Above this share of all customers, queries aggregate the whole store and
#: NumPy drops the rest: cheaper than joining a temporary table of ids.
FULL_SCAN_SHARE = 0.2


def when(as_of: datetime, days: float = 0, name: str | None = None):
    """A bound time ``days`` before ``as_of``, typed so SQLite compares it as stored text."""
    value = as_of - timedelta(days=days)
    if name is None:
        return literal(value, UTCDateTime)
    return bindparam(name, value, type_=UTCDateTime)


def age_days(dialect: str, as_of: datetime, expr):
    """Days from ``expr`` (a time; NULL stays NULL) to ``as_of``, as a float."""
    if dialect == "sqlite":
        return func.julianday(when(as_of)) - func.julianday(expr)
    return cast(func.extract("epoch", when(as_of) - expr) / 86400.0, Float)


@contextlib.contextmanager
def connection(engine_or_conn: Engine | Connection) -> Iterator[Connection]:
    """Use the caller's connection (and its transaction) or open one from an engine."""
    if isinstance(engine_or_conn, Connection):
        yield engine_or_conn
    else:
        with engine_or_conn.connect() as conn:
            yield conn


#: PostgreSQL work_mem for the bulk statements (per sort/hash node and worker).
PG_WORK_MEM = "128MB"


def analytic(conn: Connection, parallel: bool = True) -> Connection:
    """Set up ``conn``'s transaction for a few big statements over the store (PostgreSQL only).

    JIT compiling these wide aggregates and EXISTS tests costs more than it
    saves; and a million groups must not spill a hash
    aggregate to disk at the default 4MB. ``parallel=False`` for statements
    that already run side by side on every core (the feature statements of
    a partitioned plan): PostgreSQL's own parallel workers then only add
    partial aggregates to merge.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL jit = off")
        conn.exec_driver_sql(f"SET LOCAL work_mem = '{PG_WORK_MEM}'")
        if not parallel:
            conn.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")
    return conn


def key_order(conn: Connection) -> Connection:
    """Have PostgreSQL group in the order of the index it reads, for the rest of ``conn``'s transaction.

    For a statement grouping a table by customer over a range of customers,
    where the table's primary key leads with the customer: PostgreSQL's
    estimates favour a bitmap scan (which loses the key order) and a hash
    table of every customer, where walking the key and grouping the rows as
    they come costs the server less (measured on the benchmarks page).
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL enable_hashagg = off")
        conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
    return conn


def parallel_connections(conn: Connection) -> bool:
    """Whether fresh connections of ``conn``'s engine see the same database (not an in-memory SQLite one)."""
    return conn.engine.url.database not in (None, "", ":memory:")


#: PostgreSQL collations that order strings by code point, as NumPy sorts the ids (SQLite's BINARY does).
CODE_POINT_COLLATIONS = frozenset({"C", "POSIX", "C.UTF-8", "C.utf8"})


def code_point_order(conn: Connection) -> bool:
    """Whether the database's ``<`` on customer ids is code point order, the order of a plan's ranges.

    Only then is a range of sorted ids (first to last) the same customers as
    ``customer_id BETWEEN first AND last``. A PostgreSQL database created
    with a language's collation (``en_US.UTF-8``, an ICU locale) orders
    ``a1`` before ``B2`` and ``C_1`` before ``C1``: there a range test would
    leave out customers of the range, so statements read every customer and
    keep the range's in NumPy instead.
    """
    if conn.dialect.name != "postgresql":
        return True
    # A database's collation cannot change while a connection to it is open: asked once per
    # driver connection (its info lives as long as it does), not once per range or segment.
    known = conn.info.get("relmail_code_point_order")
    if known is None:
        # As JSON: datlocprovider (ICU or libc) exists from PostgreSQL 15 on.
        provider, collate = conn.execute(text(
            "SELECT to_jsonb(d) ->> 'datlocprovider', d.datcollate FROM pg_database d WHERE d.datname = current_database()")).one()
        known = conn.info["relmail_code_point_order"] = provider in (None, "c") and collate in CODE_POINT_COLLATIONS
    return known


def sorted_ids(customer_ids) -> np.ndarray:
    """Customer ids as a sorted, unique NumPy str array (the frame's row order)."""
    arr = np.asarray(customer_ids)
    if arr.size == 0:
        return np.array([], dtype="<U1")
    if arr.dtype.kind != "U":
        arr = arr.astype(str)
    # Already strictly increasing (ids from audience() are): no sort needed.
    if arr.size > 1 and not bool(np.all(arr[1:] > arr[:-1])):
        arr = np.unique(arr)
    return arr


class Scope:
    """Limits feature queries to an audience.

    A large audience (a big share of all customers) is served by aggregating
    the whole table and dropping the other rows in NumPy; a small one by a
    join to a temporary table of its ids (never a giant ``IN`` list). A
    ``bounded`` audience (one range of a partitioned plan) that is a big
    share of the customers in its id range is served like a large one, over
    that range only: ``customer_id BETWEEN first AND last``.
    """

    def __init__(self, conn: Connection, ids: np.ndarray, bounded: bool = False):
        self.conn = conn
        self.ids = ids
        self.table: Table | None = None
        self.range: tuple[str, str] | None = None
        c = Customer.__table__
        if bounded and len(ids) and code_point_order(conn):
            # Only the range's customers count: counting the whole store too costs every range a scan of it.
            self.range = (str(ids[0]), str(ids[-1]))
            total = conn.execute(select(func.count()).select_from(c).where(c.c.id.between(*self.range))).scalar_one()
        else:
            total = conn.execute(select(func.count()).select_from(c)).scalar_one()
        if len(ids) and len(ids) < FULL_SCAN_SHARE * total:
            self.range = None
            self.table = Table(
                f"relmail_audience_{uuid.uuid4().hex[:10]}",
                MetaData(),
                Column("customer_id", String(64), primary_key=True),
                prefixes=["TEMPORARY"],
            )
            self.table.create(conn)
            rows = [{"customer_id": str(c)} for c in ids]
            for start in range(0, len(rows), 10_000):
                conn.execute(insert(self.table), rows[start:start + 10_000])

    def restrict(self, stmt, customer_col, by_customer_index: bool = True):
        """``stmt`` joined to the audience table, or bounded to the audience's id range, when there is one.

        ``by_customer_index=False`` for statements that read events through
        the (type, time) index: their range test must not tempt SQLite to
        walk the customer index instead.
        """
        if self.table is not None:
            return stmt.join(self.table, self.table.c.customer_id == customer_col)
        if self.range is not None:
            col = customer_col if by_customer_index else unindexed(customer_col)
            return stmt.where(col.between(*self.range))
        return stmt

    def close(self) -> None:
        if self.table is not None:
            self.table.drop(self.conn)
            self.table = None


def align(ids: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For result ``keys``: (mask of keys in ``ids``, their row positions in ``ids``)."""
    if len(ids) == 0 or len(keys) == 0:
        return np.zeros(len(keys), dtype=bool), np.zeros(0, dtype=np.int64)
    pos = np.searchsorted(ids, keys)
    pos_c = np.minimum(pos, len(ids) - 1)
    mask = ids[pos_c] == keys
    return mask, pos_c[mask]


def fetch_columns(conn: Connection, stmt, chunk: int = 200_000) -> tuple[np.ndarray, list[np.ndarray]]:
    """Run ``stmt`` (first column a customer id) into (ids, one typed array per other column).

    Rows are converted chunk by chunk, so at most ``chunk`` rows exist as
    Python objects at a time. Columns of Python ints become int64 (packed
    counts need all 63 bits), text stays object, the rest float64 with
    NULL as NaN.
    """
    # Not a server-side cursor: PostgreSQL plans cursors for the first rows
    # and without parallel workers. The driver's copy of the result is
    # compact; the Python objects are what chunking keeps small.
    binary = conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"
    if binary:
        event.listen(conn, "before_cursor_execute", _binary_results)
    try:
        result = conn.execute(stmt)
    finally:
        if binary:
            event.remove(conn, "before_cursor_execute", _binary_results)
    width = len(result.keys())
    parts: list[list[np.ndarray]] = []
    # The driver's plain tuples, not SQLAlchemy Row objects: these columns need no result
    # processing (_typed converts them), and building a Row per customer is a large share of
    # fetching a statement.
    try:
        while rows := result.cursor.fetchmany(chunk):
            # A list per column, picked in C: cheaper than transposing the rows with zip(*rows).
            parts.append([_typed(list(map(itemgetter(j), rows))) for j in range(width)])
    finally:
        result.close()
    if not parts:
        return np.array([], dtype="<U1"), [np.empty(0) for _ in range(width - 1)]
    merged = [parts[0][j] if len(parts) == 1 else np.concatenate([p[j] for p in parts]) for j in range(width)]
    return merged[0].astype(str), merged[1:]


def _binary_results(conn, cursor, statement, parameters, context, executemany) -> None:
    """Ask PostgreSQL for this statement's rows in binary: numbers travel as their bytes, where text
    makes the server format each one and the driver parse it back (the values are the same)."""
    cursor.format = Format.BINARY


def _typed(values: list) -> np.ndarray:
    kinds = set(map(type, values))  # one C pass (a generator per value cost a tenth of the fetch)
    if kinds == {int}:
        return np.array(values, dtype=np.int64)
    if str in kinds:
        return np.array(values, dtype=object)
    return np.array(values, dtype=np.float64)



# JSON attribute access, typed: a value is only compared as a number when it
# is a JSON number (PostgreSQL would fail casting text, SQLite would compare
# across types), and only as text when it is a JSON string.


class _JsonScalar(FunctionElement):
    inherit_cache = True

    def __init__(self, col, key: str):
        super().__init__(col, literal(key, String))


class json_number(_JsonScalar):
    """The attribute ``key`` of a JSON column as a float, NULL unless it is a JSON number."""

    type = Float()
    name = "json_number"
    inherit_cache = True


class json_text(_JsonScalar):
    """The attribute ``key`` as text, NULL unless it is a JSON string."""

    type = String()
    name = "json_text"
    inherit_cache = True


class json_bool(_JsonScalar):
    """The attribute ``key`` as 1/0, NULL unless it is a JSON true/false."""

    type = Integer()
    name = "json_bool"
    inherit_cache = True


#: Per dialect, each accessor's SQL with ``{col}`` (the column) and ``{key}`` (SQLite: a JSON path, PostgreSQL: the key).
_JSON_SQL = {
    "sqlite": {
        json_number: "(CASE WHEN json_type({col}, {key}) IN ('integer', 'real') THEN json_extract({col}, {key}) END)",
        json_text: "(CASE WHEN json_type({col}, {key}) = 'text' THEN json_extract({col}, {key}) END)",
        json_bool: "(CASE json_type({col}, {key}) WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)",
    },
    "postgresql": {
        json_number: "(CASE WHEN json_typeof(({col})::json -> {key}) = 'number' THEN (({col})::json ->> {key})::float8 END)",
        json_text: "(CASE WHEN json_typeof(({col})::json -> {key}) = 'string' THEN ({col})::json ->> {key} END)",
        json_bool: ("(CASE WHEN json_typeof(({col})::json -> {key}) = 'boolean' "
                    "THEN (CASE WHEN (({col})::json ->> {key}) = 'true' THEN 1 ELSE 0 END) END)"),
    },
}


def _json_sql(element, compiler, **kw):
    col, key = element.clauses.clauses
    dialect = compiler.dialect.name
    key_sql = compiler.process(key, **kw)
    if dialect == "sqlite":
        # The path is built in SQL around the bound key: a literal made here would be baked into the
        # compiled statement SQLAlchemy caches, and the next key of the same shape would read the first.
        key_sql = f"""('$."' || {key_sql} || '"')"""
    return _JSON_SQL[dialect][type(element)].format(col=compiler.process(col, **kw), key=key_sql)


for _accessor in (json_number, json_text, json_bool):
    for _dialect in _JSON_SQL:
        compiles(_accessor, _dialect)(_json_sql)


class unindexed(FunctionElement):
    """A column SQLite must not pick an index for (``+col``); the column itself elsewhere.

    Used where a filter on ``type`` would tempt SQLite to read events through
    the (type, time) index and then sort millions of rows for GROUP BY
    customer, instead of walking the (customer, time) index in order.
    """

    inherit_cache = True
    name = "unindexed"

    def __init__(self, col):
        super().__init__(col)
        self.type = col.type


@compiles(unindexed)
def _unindexed_default(element, compiler, **kw):
    return compiler.process(element.clauses.clauses[0], **kw)


@compiles(unindexed, "sqlite")
def _unindexed_sqlite(element, compiler, **kw):
    return "+" + compiler.process(element.clauses.clauses[0], **kw)
