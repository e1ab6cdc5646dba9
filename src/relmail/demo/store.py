"""Bulk writing of generated rows, and clearing the store for ``--replace``.

The big tables (customers, preferences, events) bypass SQLAlchemy's
per-value type processing: rows arrive as tuples of ready-made values
(UTC times already in each backend's text form, see
:func:`frames.time_strings`) and go out as one ``executemany`` on SQLite
or one ``COPY`` on PostgreSQL per table and chunk.  That is what makes a
million customers and twenty million events a matter of minutes.
"""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateIndex, DropIndex

from ..errors import Conflict
from ..store import columnar
from ..store.models import ConsentChange, Customer, Decision, Delivery, Event, Meta, Preference, Product, Run

#: The tables ``relmail demo`` fills or, with ``--replace``, empties.  The
#: suppression list is not among them: an erased address stays suppressed
#: whatever happens to the demo data.
STORE_TABLES = (Event, Preference, ConsentChange, Customer, Product, Decision, Delivery, Run)

CUSTOMER_COLUMNS = ("id", "email", "first_name", "last_name", "locale", "timezone", "created_at", "attributes")
PREFERENCE_COLUMNS = ("customer_id", "topic", "opted_in", "max_per_week", "updated_at", "source")
EVENT_COLUMNS = ("customer_id", "type", "occurred_at", "product_id", "feature", "value", "message_id", "run_id", "topic")


def non_empty_tables(conn: Connection) -> list[str]:
    out = []
    for model in STORE_TABLES:
        table = model.__table__
        if conn.execute(select(1).select_from(table).limit(1)).first() is not None:
            out.append(table.name)
    return out


def ensure_empty(conn: Connection, replace: bool) -> None:
    """Refuse to mix demo data into a store that holds data, unless replacing it."""
    if replace:
        clear(conn)
        return
    busy = non_empty_tables(conn)
    if busy:
        raise Conflict(
            f"the store already holds data (tables: {', '.join(busy)}); "
            "use 'relmail demo --replace' to delete it and generate the demo shop"
        )


def clear(conn: Connection) -> None:
    names = [m.__table__.name for m in STORE_TABLES]
    if conn.dialect.name == "postgresql":
        conn.execute(text("TRUNCATE " + ", ".join(f'"{n}"' for n in names) + " RESTART IDENTITY"))
    else:
        for name in names:
            conn.execute(text(f'DELETE FROM "{name}"'))
    conn.execute(Meta.__table__.delete().where(Meta.__table__.c.key == "demo"))
    columnar.new_identity(conn)


def bulk_indexes() -> list:
    """Secondary indexes worth dropping during a bulk load and building once after.

    Maintaining a (type, time) B-tree under millions of randomly ordered
    inserts costs more than the inserts themselves; one sorted build at the
    end is several times faster on both backends.  The definitions come from
    the models, which mirror the migrations, so the rebuilt index is the same.
    """
    return [*Event.__table__.indexes, *Customer.__table__.indexes]


def drop_indexes(conn: Connection) -> None:
    # IF EXISTS rather than checkfirst: reflection does not see an index on an expression (lower(email)).
    for index in bulk_indexes():
        conn.execute(DropIndex(index, if_exists=True))


def create_indexes(conn: Connection) -> None:
    for index in bulk_indexes():
        conn.execute(CreateIndex(index, if_not_exists=True))


def write(conn: Connection, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Append ``rows`` (tuples in ``columns`` order) to ``table``."""
    if not rows:
        return
    cols = ", ".join(f'"{c}"' for c in columns)
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        with raw.cursor() as cur, cur.copy(f'COPY "{table}" ({cols}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(row)
    else:
        marks = ", ".join("?" for _ in columns)
        conn.exec_driver_sql(f'INSERT INTO "{table}" ({cols}) VALUES ({marks})', rows)
