"""How many PostgreSQL connections a send needs, checked against what the server has left before sending.

Every sending process (the one ``relmail send`` runs in, and each worker
of ``--workers N``) holds:

* up to 2 pooled connections: the loop's (claim, render, record) and the
  heartbeat of its run lock or sender lease;
* one mark connection per thread that passes points of no return
  (:mod:`relmail.sending.marker`): the SMTP pool's ``pool_size``, an ESP
  adapter's request ``concurrency``, none for the file adapter.

With ``--workers 1`` that is ``2 + marks``; with ``N`` workers the
submitting process keeps its 2 and each worker has its own:
``2 + N x (2 + marks)``. A send that cannot get its connections would
withhold e-mails batch after batch; :func:`check` refuses it up front with
what it needs and what the server has left.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

from ..errors import DatabaseError

#: Pooled connections per sending process: its loop and its lock's heartbeat.
POOLED = 2


def needed(workers: int, marks: int) -> int:
    """Connections a send with ``workers`` sending processes, each marking from ``marks`` threads, holds at most."""
    per_sender = POOLED + marks
    return per_sender if workers <= 1 else POOLED + workers * per_sender


@dataclass(frozen=True)
class Budget:
    """What the server lets this role open on this database now, and why."""

    available: int
    explanation: str


def budget(engine) -> Budget | None:
    """Free connections for this role and database on PostgreSQL (None on SQLite, which has no limit).

    The least of: ``max_connections`` minus the slots reserved for
    superusers (and ``reserved_connections``, PostgreSQL 16) minus the
    connections open now; the database's ``CONNECTION LIMIT`` minus its
    connections; the role's ``CONNECTION LIMIT`` minus its connections. A
    superuser is bound by ``max_connections`` alone. The connections
    ``engine`` holds are this command's own, so they count as free.
    """
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int, "
            "coalesce(current_setting('reserved_connections', true), '0')::int, "
            "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'), "
            "d.datconnlimit, (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid), "
            "r.rolconnlimit, (SELECT count(*) FROM pg_stat_activity a WHERE a.usesysid = r.oid), r.rolsuper "
            "FROM pg_database d, pg_roles r WHERE d.datname = current_database() AND r.rolname = current_user"
        )).one()
        # The connections this engine holds (the one asking included) are this command's own: free for the send.
        ours = engine.pool.checkedin() + engine.pool.checkedout()
    max_conn, su_reserved, reserved, in_use, db_limit, db_in_use, role_limit, role_in_use, superuser = row
    others, db_others, role_others = in_use - ours, db_in_use - ours, role_in_use - ours
    limits = []
    if superuser:
        limits.append((max_conn - others, f"max_connections {max_conn} - {others} open elsewhere"))
    else:
        limits.append((max_conn - su_reserved - reserved - others,
                       f"max_connections {max_conn} - {su_reserved + reserved} reserved - {others} open elsewhere"))
        if db_limit >= 0:
            limits.append((db_limit - db_others, f"the database's CONNECTION LIMIT {db_limit} - {db_others} open elsewhere"))
        if role_limit >= 0:
            limits.append((role_limit - role_others, f"the role's CONNECTION LIMIT {role_limit} - {role_others} open elsewhere"))
    available, why = min(limits)
    return Budget(max(available, 0), why)


def check(engine, workers: int, marks: int, setting: str) -> None:
    """Raise :class:`DatabaseError` unless the server has the connections this send needs (PostgreSQL).

    ``setting`` names what sets ``marks`` (the adapter's :meth:`~relmail.delivery.base.Adapter.mark_threads`).
    """
    have = budget(engine)
    want = needed(workers, marks)
    if have is not None and have.available < want:
        senders = "1 process" if workers <= 1 else f"{workers} workers"
        raise DatabaseError(
            f"this send needs {want} database connections ({senders}, {marks} mark connection(s) each) and the "
            f"server has {have.available} free ({have.explanation}); lower --workers or {setting}, "
            "or raise the limit; nothing was sent"
        )
