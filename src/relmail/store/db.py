"""Database engines and the versioned schema.

SQLite (a file in the project) is the embedded default; PostgreSQL through a
``postgresql+psycopg://`` URL is the deployment choice. The schema is owned by
the Alembic migrations in ``relmail/store/migrations``: :func:`upgrade` applies
them, and :func:`connect` refuses a database whose schema is missing or
behind, instead of silently creating tables.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import ColumnElement, String, create_engine, event, exists, literal, select, text, union_all
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from ..errors import ConfigError, DatabaseError
from . import aggregates
from .faults import as_relmail_error, redact
from .models import Meta
from .private import OWNER_ONLY

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # A database file SQLite has just made (empty) becomes the owner's only, before its WAL and
    # shared-memory files exist: SQLite gives those the database file's mode. It holds every customer.
    for _, name, file in cur.execute("PRAGMA database_list").fetchall():
        if name == "main" and file and os.path.isfile(file) and os.path.getsize(file) == 0:
            os.chmod(file, OWNER_ONLY)
    # WAL lets readers (why, report) work while a send writes; NORMAL is
    # durable across application crashes, which is what the ledger needs.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def dialect_insert(conn: Connection, table):
    """``INSERT`` with ``ON CONFLICT`` support for the connection's dialect (PostgreSQL or SQLite)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def which_exist(conn: Connection, conditions: Mapping[str, ColumnElement[bool]]) -> set[str]:
    """The names of ``conditions`` that some row meets, in one statement for all of them.

    Each name's ``EXISTS`` stops at its first row, where a ``DISTINCT`` over
    the column would read every row, and one query per name a round trip each.
    """
    if not conditions:
        return set()
    probes = [select(literal(name, String).label("name")).where(exists().where(condition))
              for name, condition in sorted(conditions.items(), key=lambda item: item[0])]
    return set(conn.execute(union_all(*probes) if len(probes) > 1 else probes[0]).scalars())


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with relmail's connection settings; no schema check."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        # psycopg 3 is the driver we ship; plain URLs would ask for psycopg2.
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    # A failed statement's bound values (an address an erasure looks for, a customer's row in an import)
    # stay out of its error, which ``relmail --verbose`` prints for a bug report.
    private = {"hide_parameters": True}
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30}, **private)
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            # A server that stops answering without closing the connection (a
            # network cut, a frozen host) is noticed within seconds, not after
            # the operating system's two hours: a send then retries and stops
            # within its bound (docs/operations/faults.md).
            engine = create_engine(url, pool_pre_ping=True, connect_args={
                "connect_timeout": 10, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}, **private)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise ConfigError(f"invalid database URL {redact(url)!r}: {exc}") from None
    return engine


def _alembic_config(engine: Engine):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(None)  # type: ignore[arg-type]
    return ScriptDirectory.from_config(cfg).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise as_relmail_error(exc, str(engine.url)) from None


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Apply migrations up to ``revision``; returns (before, after) revisions."""
    from alembic import command

    before = current_revision(engine)
    try:
        command.upgrade(_alembic_config(engine), revision)
    except SQLAlchemyError as exc:
        fault = as_relmail_error(exc, str(engine.url))
        raise type(fault)(f"schema upgrade failed: {fault}", detail=fault.detail) from None
    after = current_revision(engine)
    with engine.begin() as conn:
        _ensure_salt(conn)
        if after == head_revision() and not aggregates.built(conn):
            # A store upgraded to the feature store: build it from the events it already holds.
            aggregates.rebuild(conn)
    return before, after


def _ensure_salt(conn) -> None:
    table = Meta.__table__
    if conn.execute(select(table.c.value).where(table.c.key == "address_salt")).first() is None:
        conn.execute(table.insert().values(key="address_salt", value=secrets.token_hex(16)))


def connect(url: str) -> Engine:
    """An engine for a database whose schema is current, or a clear error."""
    engine = make_engine(url)
    try:
        have = current_revision(engine)
    except BaseException:
        engine.dispose()
        raise
    want = head_revision()
    if have != want:
        engine.dispose()  # the caller never gets it: close its connection now
        if have is None:
            raise DatabaseError(f"database {redact(url)} has no relmail schema; run 'relmail db upgrade'")
        raise DatabaseError(f"database schema is at {have}, relmail needs {want}; run 'relmail db upgrade'")
    return engine


def refresh_statistics(conn: Connection, table: str, rows_written: int) -> bool:
    """ANALYZE ``table`` on PostgreSQL once bulk writes changed a large share of it; True if it did.

    PostgreSQL plans from sampled statistics: a store filled by an import
    and planned on at once (a CI job, a scheduler) would otherwise be
    planned as the empty tables it was, several times slower (figures in
    docs/benchmarks.md). "Large" is autovacuum's own rule (rows changed
    since the last ANALYZE, these included, at least 50 plus 10% of the
    table), applied at once instead of up to a minute later, or never on a
    server that runs without autovacuum. Inside the caller's
    transaction, so the statistics commit or roll back with the rows.
    SQLite is left alone: its plans measured the same with, without and
    with stale statistics.
    """
    if conn.dialect.name != "postgresql" or rows_written <= 0:
        return False
    row = conn.execute(
        text("SELECT c.reltuples, coalesce(s.n_mod_since_analyze, 0) FROM pg_class c "
             "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.oid = to_regclass(:t)"),
        {"t": table},
    ).first()
    if row is None:
        raise ValueError(f"no table {table!r} to analyze")
    known, changed = row
    # reltuples is -1 for a table never analyzed or vacuumed (0 before PostgreSQL 14).
    if known > 0 and rows_written + changed < 50 + 0.1 * known:
        return False
    conn.exec_driver_sql(f'ANALYZE "{table}"')
    return True
