"""A customer's rows in the ledger (decisions, deliveries), found run by run.

The ledger's indexes lead with the run (see :class:`~relmail.store.models.Decision`):
a plan then writes at the end of each index however many weeks the ledger
holds. A customer's rows are found through the same indexes, one probe of
(run, customer) per run, instead of through an index on the customer alone.
"""

from __future__ import annotations

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection

from .models import Run

RUNS = Run.__table__


def run_ids(conn: Connection) -> list[str]:
    """Every run's id, the most recent first (by ``as_of``, then creation)."""
    return list(conn.execute(select(RUNS.c.id).order_by(RUNS.c.as_of.desc(), RUNS.c.created_at.desc())).scalars())


def of_customer(conn: Connection, table, customer_id: str):
    """The WHERE clause for ``customer_id``'s rows of ``table`` (decisions or deliveries), run by run."""
    return and_(table.c.run_id.in_(run_ids(conn)), table.c.customer_id == customer_id)


def latest_run(conn: Connection, table, customer_id: str) -> str | None:
    """The most recent run holding a row of ``customer_id`` in ``table``, or None."""
    for run_id in run_ids(conn):
        if conn.execute(select(table.c.customer_id).where(table.c.run_id == run_id, table.c.customer_id == customer_id)
                        .limit(1)).first():
            return run_id
    return None
