"""Alembic environment: relmail passes its engine in ``config.attributes``."""

from alembic import context

import relmail.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from sqlmodel import SQLModel

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
