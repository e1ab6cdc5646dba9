"""Database failures as relmail errors: one line naming the problem, and its exit code.

Every command, and every worker process of one, turns an exception of the
database driver (SQLAlchemy wrapping psycopg or sqlite3, or the drivers
themselves) into a :class:`~relmail.errors.DatabaseError` here, so the CLI
prints one line and a scheduler reads the kind of trouble from the exit
code:

- the database cannot be reached, closed the connection, or refused one
  more (too many connections): :class:`~relmail.errors.DatabaseError`,
  exit 5. Something is wrong with the server or relmail's access to it.
- the database is up but would not do the work now: a statement or lock
  timeout, a lock held by another writer (SQLite's "database is locked"),
  a deadlock, a read-only database (a standby, or writes switched off):
  :class:`~relmail.errors.DatabaseUnavailable`, exit 13. The transaction
  was rolled back; the same command can be retried later.

The driver's own text and the SQL statement are kept in the error's
``detail`` (printed by ``relmail --verbose``), never in the line itself.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import DatabaseError, DatabaseUnavailable

F = TypeVar("F", bound=Callable[..., Any])

#: PostgreSQL SQLSTATE → (error class, what happened), for the states relmail can name.
_SQLSTATES: dict[str, tuple[type[DatabaseError], str]] = {
    "57014": (DatabaseUnavailable, "a statement ran past the database's statement_timeout and was cancelled; "
                                   "its transaction was rolled back: retry when the database is less busy, or "
                                   "raise statement_timeout for relmail's role"),
    "55P03": (DatabaseUnavailable, "a lock was not granted within the database's lock_timeout (another session "
                                   "holds it); the transaction was rolled back: retry later"),
    "40P01": (DatabaseUnavailable, "a deadlock with another session; the transaction was rolled back: retry"),
    "40001": (DatabaseUnavailable, "a concurrent update conflicted; the transaction was rolled back: retry"),
    "25006": (DatabaseUnavailable, "the database is read-only (a standby, or default_transaction_read_only is on); "
                                   "nothing was written: point relmail at the primary, or retry once it accepts writes"),
    "53300": (DatabaseError, "the database refused a connection: too many connections; raise the connection limit "
                             "of the server or of relmail's role, or use fewer --workers"),
    "57P01": (DatabaseError, "the database terminated relmail's connection; its transaction was rolled back: "
                             "re-run the command"),
    "57P02": (DatabaseError, "the database server crashed and closed relmail's connection; its transaction was "
                             "rolled back: re-run the command once the server is back"),
    "57P03": (DatabaseError, "the database is starting up or shutting down and accepts no connections: "
                             "re-run the command once it is up"),
    "57P05": (DatabaseError, "the database closed relmail's idle connection (idle_session_timeout); its "
                             "transaction was rolled back: re-run the command"),
    "25P03": (DatabaseError, "the database closed relmail's connection (idle_in_transaction_session_timeout); its "
                             "transaction was rolled back: re-run the command"),
    "53100": (DatabaseError, "the database server's disk is full; the transaction was rolled back"),
    "3D000": (DatabaseError, "the database does not exist: check database_url"),
    "28P01": (DatabaseError, "the database refused relmail's password: check database_url"),
    "28000": (DatabaseError, "the database refused relmail's login: check database_url and the server's pg_hba.conf"),
}

_SQLITE_FULL = ("the SQLite database's disk is full; nothing was written: free space on the disk holding the "
                "database file (its -wal and -shm files grow beside it) and run the command again")

#: Fragments of driver messages (lower case) that carry no SQLSTATE: connection failures and SQLite.
_MESSAGES: tuple[tuple[str, type[DatabaseError], str], ...] = (
    ("too many connections", *_SQLSTATES["53300"]),
    ("remaining connection slots are reserved", *_SQLSTATES["53300"]),
    ("terminating connection due to administrator command", *_SQLSTATES["57P01"]),
    ("server closed the connection unexpectedly", DatabaseError,
     "the database closed relmail's connection; its transaction was rolled back: re-run the command"),
    ("the connection is lost", DatabaseError,
     "the connection to the database was lost; its transaction was rolled back: re-run the command"),
    ("the connection is closed", DatabaseError,
     "the connection to the database was lost; its transaction was rolled back: re-run the command"),
    ("connection failed", DatabaseError, "cannot reach the database: check that it runs and database_url"),
    ("could not connect", DatabaseError, "cannot reach the database: check that it runs and database_url"),
    ("database is locked", DatabaseUnavailable,
     "the SQLite database is locked by another process past the busy timeout; nothing was written: "
     "retry when that process is done"),
    ("database table is locked", DatabaseUnavailable,
     "an SQLite table is locked by another connection; nothing was written: retry when it is done"),
    ("attempt to write a readonly database", DatabaseUnavailable,
     "the SQLite database accepts no writes (a read-only file or folder, or a read-only connection); "
     "nothing was written: "
     "make the file and its folder writable for relmail's user"),
    ("unable to open database file", DatabaseError,
     "cannot open the SQLite database file: check database_url and the folder's permissions"),
    ("database or disk is full", DatabaseError, _SQLITE_FULL),
    ("disk i/o error", DatabaseError,
     "the SQLite database's disk failed to read or write; nothing was written: check the disk holding the "
     "database file (full, failing, or a network file system) and run the command again"),
)

#: SQLite's extended error names (``sqlite3.Error.sqlite_errorname``) that say more than their message.
_SQLITE_ERRORS: dict[str, tuple[type[DatabaseError], str]] = {
    # A full disk met while growing the -shm file, which every connection to a WAL database maps (readers
    # too): SQLite's message is only "disk I/O error".
    "SQLITE_IOERR_SHMSIZE": (DatabaseError, _SQLITE_FULL),
}


def database_fault(exc: BaseException, url: str | None = None) -> DatabaseError | None:
    """The database's own trouble behind ``exc`` as a relmail error, or None.

    None when ``exc`` is no database error, or is one caused by the
    statement itself (a syntax error, an unknown column): the caller knows
    whose statement that was (a segment's ``sql:``, say) and says so.
    """
    orig = _driver_error(exc)
    if orig is None:
        return None
    state = getattr(orig, "sqlstate", None) or ""
    found = _SQLSTATES.get(state)
    if state == "57014" and "statement timeout" not in str(orig):
        found = (DatabaseUnavailable, "a statement was cancelled (pg_cancel_backend, by an operator or a "
                                      "monitoring tool); its transaction was rolled back: retry")
    elif state == "42501":
        # The server's line names the table or sequence: the grant the operator has to add.
        found = (DatabaseError, f"relmail's database role lacks a privilege ({first_line(orig)}); its transaction "
                                "was rolled back: grant what the PostgreSQL page lists for this command's role "
                                "(tables and sequences), or run it with a role that has it")
    elif found is None and state.startswith("08"):
        found = (DatabaseError, "the connection to the database was lost; its transaction was rolled back: "
                                "re-run the command")
    if found is None:
        found = _SQLITE_ERRORS.get(getattr(orig, "sqlite_errorname", ""))
    if found is None:
        text = str(orig).lower()
        found = next(((cls, what) for fragment, cls, what in _MESSAGES if fragment in text), None)
    if found is None and getattr(exc, "connection_invalidated", False):
        found = (DatabaseError, "the connection to the database was lost; its transaction was rolled back: "
                                "re-run the command")
    if found is None:
        return None
    cls, what = found
    return cls(_where(url) + what, detail=_detail(exc))


def as_relmail_error(exc: BaseException, url: str | None = None) -> DatabaseError | None:
    """Any database error as a relmail error (exit 5 unless :func:`database_fault` names it); None for other errors."""
    if _driver_error(exc) is None:
        return None
    fault = database_fault(exc, url)
    if fault is not None:
        return fault
    return DatabaseError(f"{_where(url)}the database reported an error: {first_line(_driver_error(exc))}",
                         detail=_detail(exc))


def first_line(exc: BaseException) -> str:
    """The first line of the driver's message (its statement and hints follow it; not SQLAlchemy's wrapper), or the type."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


def translated(fn: F) -> F:
    """``fn``, raising the database driver's errors as relmail's (:func:`as_relmail_error`), the driver's as the cause.

    For the library's entry points (:func:`relmail.plan`, :func:`relmail.send`,
    an import, a report), so a Python caller catches
    :class:`~relmail.errors.DatabaseError` whether the error happened in this
    process or in a worker.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            error = as_relmail_error(exc)
            if error is None:
                raise
            raise error from exc

    return wrapper  # type: ignore[return-value]


def _driver_error(exc: BaseException) -> BaseException | None:
    """The driver's exception inside ``exc`` (SQLAlchemy wraps it as ``orig``), if ``exc`` is a database error."""
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    if isinstance(exc, DBAPIError):
        return exc.orig if exc.orig is not None else exc
    if isinstance(exc, sqlite3.Error) or type(exc).__module__.split(".")[0] == "psycopg":
        return exc
    if isinstance(exc, SQLAlchemyError) and isinstance(exc.__cause__, BaseException):
        return _driver_error(exc.__cause__)
    return None


def _where(url: str | None) -> str:
    return "" if url is None else f"database {redact(url)}: "


#: A password given as a query parameter (libpq's ``password`` and ``sslpassword``, as a URL may carry them).
_QUERY_PASSWORD = re.compile(r"([?&](?:ssl)?password=)[^&#]*", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL without its password (in the user part or the query), for messages and logs."""
    head, sep, tail = url.partition("://")
    if "@" in tail.split("?", 1)[0]:
        creds, _, host = tail.split("?", 1)[0].rpartition("@")
        query = tail[len(creds) + 1 + len(host):]
        user = creds.split(":", 1)[0]
        tail = f"{user}:***@{host}{query}" if ":" in creds else tail
    return head + sep + _QUERY_PASSWORD.sub(r"\1***", tail)


def _detail(exc: BaseException) -> str:
    """The driver's message and the statement, for ``--verbose``."""
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
