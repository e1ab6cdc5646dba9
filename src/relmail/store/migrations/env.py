"""Alembic environment: relmail passes its engine in ``config.attributes``.

Each migration is its own transaction: one that builds an index concurrently
(:mod:`relmail.store.migrations.online_index`) must commit what came before
it, and a store whose upgrade stopped half-way is at the last revision that
completed, which the next ``relmail db upgrade`` continues from.
"""

from alembic import context
from sqlmodel import SQLModel

import relmail.store.models  # noqa: F401  (registers the tables on SQLModel.metadata)

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
