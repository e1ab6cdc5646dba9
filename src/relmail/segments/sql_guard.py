"""A statement with a segment's ``sql:`` condition runs read-only, whatever relmail's database role may do.

A ``sql:`` condition is an analyst's SELECT, embedded in the segment's
statement. The embedding already refuses a second statement or a bare
``DELETE``, but a SELECT can still write on PostgreSQL: ``setval()`` on a
sequence, ``SELECT ... FOR UPDATE`` locks, a volatile function that deletes.
So such a statement runs with writes refused by the database itself:

- PostgreSQL: in a savepoint with ``SET LOCAL transaction_read_only = on``
  (and ``statement_timeout`` = :data:`SQL_TIMEOUT` when the role sets none),
  rolled back to afterwards: the caller's transaction, its snapshot and its
  settings go on as before.
- SQLite: with ``PRAGMA query_only`` on for that statement.

:func:`refused` tells a write the database refused from any other error,
so the error can name the segment files.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy.engine import Connection

from ..store.faults import first_line

#: How long a statement with a ``sql:`` condition may run on PostgreSQL when relmail's role sets no statement_timeout.
SQL_TIMEOUT = timedelta(minutes=10)

_READ_ONLY_STATE = "25006"  # PostgreSQL: read_only_sql_transaction


@contextmanager
def read_only(conn: Connection) -> Iterator[None]:
    """Statements on ``conn`` inside the block can read but not write."""
    if conn.dialect.name == "postgresql":
        savepoint = conn.begin_nested()
        try:
            conn.exec_driver_sql("SET LOCAL transaction_read_only = on")
            if conn.exec_driver_sql("SELECT current_setting('statement_timeout')").scalar() == "0":
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(SQL_TIMEOUT.total_seconds() * 1000)}")
            yield
        finally:
            # Also after an error: back to the caller's transaction as it was (read-write, its own timeout).
            if savepoint.is_active:
                savepoint.rollback()
    else:
        before = conn.exec_driver_sql("PRAGMA query_only").scalar()
        conn.exec_driver_sql("PRAGMA query_only = ON")
        try:
            yield
        finally:
            conn.exec_driver_sql(f"PRAGMA query_only = {int(bool(before))}")


def refused(orig: BaseException | None) -> str | None:
    """What a reader is told when ``orig`` (the driver's error) is the database refusing a write; else None.

    A time limit that runs out is the database's trouble (exit 13, like any
    statement timeout), not the segment file's: the caller leaves it to
    :func:`~relmail.store.faults.database_fault`.
    """
    if getattr(orig, "sqlstate", None) == _READ_ONLY_STATE or getattr(orig, "sqlite_errorname", "") == "SQLITE_READONLY":
        return f"a sql: condition may only read, and the database refused a write ({first_line(orig)}); nothing was changed"
    return None
