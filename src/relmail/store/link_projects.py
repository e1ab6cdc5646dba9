"""The project names this store's unsubscribe links were signed with.

A token names its project (``[project] name``) so that a staging copy
sharing production's signing key refuses production's links. A project
renamed after a send must still honour the links already in inboxes, so
every send records the name it signs with, and a token is accepted when it
names the project's current name or any name this store has sent links
under. A staging store that never sent under production's name still
refuses production's links.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from .models import Meta

M = Meta.__table__
#: Meta keys of the recorded names: this prefix and a digest of the name (a name may be longer than a key).
PREFIX = "link_project:"


def _key(name: str) -> str:
    return PREFIX + hashlib.sha256(name.encode()).hexdigest()[:40]


def record(conn: Connection, name: str) -> None:
    """Remember that links signed with project ``name`` leave from this store (idempotent, safe between processes)."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(insert(M).values(key=_key(name), value=name).on_conflict_do_nothing(index_elements=[M.c.key]))


def accepted(conn: Connection, current: str) -> frozenset[str]:
    """The project names a token may carry here: ``current`` and every name links were sent under from this store."""
    names = conn.execute(select(M.c.value).where(M.c.key.startswith(PREFIX, autoescape=True))).scalars()
    return frozenset({current, *names})
