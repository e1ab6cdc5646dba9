"""An index a migration adds to a table that may be large, built without holding its writers back.

A plain ``CREATE INDEX`` on PostgreSQL takes a lock that conflicts with
every ``INSERT``, ``UPDATE`` and ``DELETE`` on the table until the index is
built: minutes on a store of millions of customers or deliveries, during
which an import, a send or a provider's webhook waits. ``CREATE INDEX
CONCURRENTLY`` lets them go on; it cannot run in a transaction, so it runs
in alembic's autocommit block (the migrations before it are committed
first, each migration being its own transaction).

A concurrent build that fails (a cancelled statement, a lost connection)
leaves an INVALID index behind, which PostgreSQL keeps up to date but never
reads: the next ``relmail db upgrade`` drops it and builds it again, and
keeps a valid one a crash left before the revision was recorded. SQLite
has no concurrent build, nor a writer a build could hold back for long:
there it is a plain ``CREATE INDEX``.
"""

from __future__ import annotations

import re

from alembic import op
from sqlalchemy import text

_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def create_index_online(name: str, table: str, expression: str) -> None:
    """``CREATE INDEX name ON table (expression)``, concurrently on PostgreSQL (``expression``: SQL, e.g. ``lower(email)``)."""
    if not (_NAME.fullmatch(name) and _NAME.fullmatch(table)):
        raise ValueError(f"not a plain identifier: {name!r} on {table!r}")
    if op.get_bind().dialect.name != "postgresql":
        op.execute(f"CREATE INDEX {name} ON {table} ({expression})")
        return
    with op.get_context().autocommit_block():
        valid = op.get_bind().execute(text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
                                      {"name": name}).scalar()
        if valid is False:
            op.execute(f"DROP INDEX CONCURRENTLY {name}")
        if valid is not True:
            op.execute(f"CREATE INDEX CONCURRENTLY {name} ON {table} ({expression})")
