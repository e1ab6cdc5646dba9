"""The point-of-no-return mark: ``committing`` recorded and confirmed before an e-mail is handed over.

:class:`Marker` is the adapter's ``on_commit`` hook (:mod:`relmail.delivery.base`).
It returns only once the database has confirmed the mark; if the mark fails
(a lock or statement timeout, a busy SQLite file, a terminated backend, a
refused connection) it raises :class:`MarkFailed` and the adapter hands
nothing over: SMTP closes the connection before the final dot, an ESP makes
no request. An e-mail that leaves is therefore always ``committing`` in the
ledger first, and a sender killed at any moment can leave only two kinds of
doubt behind: ``sending`` (certainly not handed over; sent again) and
``committing`` (perhaps handed over; assumed delivered and flagged).

The provider's answers are written the same way the moment they arrive
(:meth:`Marker.answer`), on the delivery while it is still ``committing``:
the batch records them together afterwards, and a sender killed in between
leaves them for recovery to settle by (:func:`relmail.sending.ledger.recover`)
instead of assuming every e-mail of the batch delivered.

Each mark is one autocommit statement on a connection of its own thread
(the SMTP pool's threads mark concurrently). After a failure the marker
refuses further marks at once, so the rest of the batch is withheld without
waiting on the database again, until the sending loop has reached the
database again and calls :meth:`Marker.reset`, which also replaces every
mark connection (a terminated backend's connection is never reused).
"""

from __future__ import annotations

import contextlib
import json
import select
import threading
import time
from collections.abc import Sequence
from datetime import datetime

from ..errors import DatabaseError
from ..store.faults import first_line
from ..store.models import Delivery
from . import ledger


class MarkFailed(DatabaseError):
    """The point-of-no-return mark was not confirmed: the e-mails it names must not be handed over."""


class Marker:
    """Records ``committing`` for deliveries about to be handed over; see the module docstring."""

    #: Seconds one mark may take (waiting for a lock, a busy SQLite file, the server's answer) before it fails.
    timeout = 10.0

    _SQL = (b"UPDATE deliveries SET status = 'committing', updated_at = $1::timestamptz "
            b"WHERE id = ANY($2::bigint[]) AND status IN ('sending', 'committing')")
    # One JSON object {delivery id: answer} per statement, whatever the number of answers; the ids
    # again as an array, so that the planner finds the rows by the primary key, not by a scan.
    _ANSWER_PG = (b"UPDATE deliveries SET answer = a.value FROM json_each_text($1::json) AS a "
                  b"WHERE deliveries.id = ANY($2::bigint[]) AND deliveries.id = a.key::bigint "
                  b"AND deliveries.status = 'committing'")
    _ANSWER_SQLITE = ("UPDATE deliveries SET answer = a.value FROM json_each(?) AS a "
                      "WHERE deliveries.id = CAST(a.key AS INTEGER) AND deliveries.status = 'committing'")

    def __init__(self, engine, clock, adapter_clock=None):
        self.engine, self.clock = engine, clock
        #: The adapter's clock, by which it dates a retry (:func:`relmail.sending.ledger.settlement`).
        self.adapter_clock = adapter_clock or clock
        self.local = threading.local()
        self.connections: list = []
        self.lock = threading.Lock()
        #: Bumped by :meth:`reset`; a thread's connection of an older generation is replaced.
        self.generation = 0
        #: Why the last mark failed; set until :meth:`reset`.
        self.failure: str | None = None
        #: The database error behind :attr:`failure`, if one was (its kind sets the send's exit code).
        self.cause: BaseException | None = None

    def __call__(self, keys: Sequence[str]) -> None:
        if self.failure is not None:
            raise MarkFailed(self.failure)
        ids = [int(k[1:]) for k in keys]
        try:
            dialect = self.engine.dialect.name
            if dialect == "postgresql":
                marked = self._pg_execute(self._SQL, [self.clock().isoformat().encode(),
                                                      ("{" + ",".join(map(str, ids)) + "}").encode()])
            elif dialect == "sqlite":
                marked = self._mark_sqlite(ids)
            else:
                with self.engine.begin() as conn:
                    marked = ledger.mark_committing(conn, ids, self.clock())
        except Exception as exc:
            self._drop()
            self.failure, self.cause = f"the point-of-no-return mark failed: {first_line(exc)}", exc
            raise MarkFailed(self.failure) from None
        if marked != len(ids):
            # A delivery is no longer 'sending': another process settled it
            # (a takeover after this sender stalled). It must not leave from here.
            self.failure = f"the point-of-no-return mark found {len(ids) - marked} of {len(ids)} deliveries settled elsewhere"
            raise MarkFailed(self.failure)

    def answer(self, results: Sequence) -> None:
        """Write the provider's answers (:class:`~relmail.delivery.base.Result`) to their ``committing`` deliveries.

        The adapter's :attr:`~relmail.delivery.base.Adapter.on_answer` hook.
        Withheld e-mails have no answer to keep. A failure closes this thread's
        connection and raises; the adapter goes on (the batch records every
        answer anyway), and the next mark connects again.
        """
        if self.failure is not None:
            return
        now, adapter_now = self.clock(), self.adapter_clock()
        answers = {}
        for result in results:
            settled = ledger.settlement(result, now, adapter_now)
            if settled is not None:
                answers[str(settled.delivery_id)] = ledger.answer_text(settled)
        if not answers:
            return
        payload = json.dumps(answers)
        try:
            if self.engine.dialect.name == "postgresql":
                self._pg_execute(self._ANSWER_PG, [payload.encode(), ("{" + ",".join(answers) + "}").encode()])
            else:
                self._connection(self._sqlite_connect).execute(self._ANSWER_SQLITE, [payload])
        except Exception:
            self._drop()
            raise

    def _pg_execute(self, sql: bytes, params: list[bytes]) -> int:
        """Run one statement on this thread's connection, waiting at most :attr:`timeout`; the rows it changed."""
        from psycopg import OperationalError
        from psycopg.pq import ExecStatus

        pg = self._connection(self._pg_connect).pgconn
        pg.send_query_params(sql, params)
        while pg.flush():
            select.select([], [pg.socket], [], self.timeout)
        # Waiting in select() rather than in libpq lets the other SMTP threads
        # run meanwhile, and bounds the wait if the server stops answering.
        # The server's own statement_timeout (the same) fires first.
        deadline = time.monotonic() + self.timeout + 2
        pg.consume_input()
        while pg.is_busy():
            left = deadline - time.monotonic()
            if left <= 0:
                raise OperationalError(f"no answer from the database within {self.timeout + 2:g} s")
            select.select([pg.socket], [], [], left)
            pg.consume_input()
        result, error = None, None
        while (res := pg.get_result()) is not None:
            if res.status == ExecStatus.COMMAND_OK:
                result = res
            else:
                error = res.error_message.decode("utf-8", "replace")
        if error is not None or result is None:
            raise OperationalError(error or "no result")
        return int(result.command_tuples or 0)

    def _pg_connect(self):
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        # The mark must survive this process, not the database server: not
        # waiting for the WAL flush saves an fsync per e-mail. A database crash
        # within a fraction of a second of a mark could lose it, and only then
        # would that e-mail be sent again.
        ms = int(self.timeout * 1000)
        return psycopg.connect(url, autocommit=True, connect_timeout=max(2, int(self.timeout)),
                               options=f"-c synchronous_commit=off -c statement_timeout={ms}")

    def _mark_sqlite(self, ids: list[int]) -> int:
        conn = self._connection(self._sqlite_connect)
        # One autocommit statement: the hook returns right after SQLite's WAL
        # write, or fails once another writer held the file for ``timeout``.
        return conn.execute(
            f"UPDATE deliveries SET status = 'committing', updated_at = ? "
            f"WHERE id IN ({','.join('?' * len(ids))}) AND status IN ('sending', 'committing')",
            [self._stamp(self.clock()), *ids],
        ).rowcount

    def _sqlite_connect(self):
        import sqlite3

        conn = sqlite3.connect(self.engine.url.database, isolation_level=None, timeout=self.timeout,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        # As on PostgreSQL (and as every other connection of relmail's): a mark must survive this
        # process, which the WAL write ensures; syncing the file to disk per e-mail would only guard
        # against the machine losing power.
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _connection(self, connect):
        held = getattr(self.local, "held", None)
        if held is not None and held[0] == self.generation:
            return held[1]
        conn = connect()
        with self.lock:
            self.connections.append(conn)
        self.local.held = (self.generation, conn)
        return conn

    def _drop(self) -> None:
        """Close this thread's connection: after a failure it is never trusted again."""
        held = getattr(self.local, "held", None)
        self.local.held = None
        if held is not None:
            with self.lock:
                if held[1] in self.connections:
                    self.connections.remove(held[1])
            _close(held[1])

    def _stamp(self, now: datetime):
        """``now`` as the ledger's time column stores it on SQLite."""
        process = Delivery.__table__.c.updated_at.type._cached_bind_processor(self.engine.dialect)
        return process(now) if process else now

    def reset(self) -> None:
        """Accept marks again, each thread on a new connection. Call between batches only."""
        self.close()
        with self.lock:
            self.generation += 1
            self.failure, self.cause = None, None

    def close(self) -> None:
        with self.lock:
            connections, self.connections = self.connections, []
        for conn in connections:
            _close(conn)


def _close(conn) -> None:
    # A connection whose server is gone has nothing left to release.
    with contextlib.suppress(Exception):
        conn.close()
