"""The sending loop's bounded retries when the database stops answering.

A terminated backend, a server restart, a lock or statement timeout, a
connection limit reached, a busy SQLite file: the sending loop retries the
*database* (never an e-mail) with :class:`DatabaseRetry`. Each retry waits
a little longer (:data:`DELAYS`) and first closes the engine's pooled
connections, so a connection whose backend died is never used again. Once
the database answers and a batch goes through, the count starts over. If it
stays unreachable, the send stops after the last delay with the error that kept it
failing: :class:`~relmail.errors.DatabaseUnavailable` (exit 13) when the
database was up but would not do the work (a lock or statement timeout, a
busy SQLite file), :class:`~relmail.errors.DatabaseError` (exit 5) when it
could not be reached. Either way the ledger is consistent at that point (every
e-mail is ``planned``, ``sending``, ``committing`` or settled), and the next
``relmail send`` resumes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

from ..errors import DatabaseError, DatabaseUnavailable
from ..store.faults import database_fault, first_line

T = TypeVar("T")

#: Seconds to wait before each retry; after the last one the send stops.
DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)


def retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is the database being unavailable for a while, rather than a wrong statement.

    Operational errors are: a lost or refused connection, ``too many
    connections``, a lock or statement timeout, SQLite's ``database is
    locked``. A read-only database, a missing table or a constraint are not,
    and stop the send at once.
    """
    return isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


class DatabaseRetry:
    """Counts consecutive database failures of one sender and waits between them; see the module docstring."""

    def __init__(self, engine, sleep: Callable[[float], None] = time.sleep, delays: tuple[float, ...] | None = None):
        self.engine, self.sleep = engine, sleep
        self.delays = DELAYS if delays is None else delays
        self.failures = 0
        self.started: float | None = None

    def run(self, what: str, step: Callable[[], T]) -> T:
        """``step()``, retried while the database is unavailable; ``what`` names the step in the final error."""
        while True:
            try:
                return step()
            except Exception as exc:
                if not retryable(exc):
                    raise
                self.failed(what, exc)

    def failed(self, what: str, why: BaseException | str, cause: BaseException | None = None) -> None:
        """One more failure: wait before the next attempt, or raise once the delays are spent (see the module docstring)."""
        if self.started is None:
            self.started = time.monotonic()
        text = why if isinstance(why, str) else first_line(why)
        if self.failures >= len(self.delays):
            waited = time.monotonic() - self.started
            # A scheduler reads "retry later" (13) from "fix the server or the URL" (5) in the exit code.
            error = cause if isinstance(why, str) else why
            busy = error is not None and isinstance(database_fault(error), DatabaseUnavailable)
            state = "would not do the work" if busy else "stopped answering"
            raise (DatabaseUnavailable if busy else DatabaseError)(
                f"the database {state} while {what} ({text}); gave up after {self.failures + 1} attempts "
                f"in {waited:.0f} s; the ledger is consistent; re-run to resume"
            )
        self.sleep(self.delays[self.failures])
        self.failures += 1
        # Pooled connections from before the failure may belong to a terminated backend.
        self.engine.dispose()

    def progress(self) -> None:
        """A batch went through: the database answers again."""
        self.failures, self.started = 0, None
