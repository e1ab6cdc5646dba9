"""Whether an e-mail names a topic, message or campaign: a bounded look at the newest events.

``relmail segments show`` (and a plan's warning of a message that reaches
nobody) asks whether a topic, message or campaign a segment names is known
to anything. The events table has no index on topic, message or run: an
``EXISTS`` for a name no e-mail has reads every event before it can say so
(2.2 million at 100,000 customers, 15.7 million at a million). The small
sources answer first (``[topics]``, the consent records, the campaign files,
the runs); what they do not know is looked for only among the newest
:data:`LATEST` events, a range of the primary key: a cost that does not grow
with the history. :attr:`MailedNames.complete` says whether that range held
every event of the store, so a warning says "no e-mail event" only when none
was left unread.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from .db import which_exist
from .models import Event

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.sql import ColumnElement

E = Event.__table__

#: How many of the newest events (by id: the last written) the look reads at most. A name's EXISTS
#: over them reads them in storage order, about 0.1 s per name on SQLite (docs/guide/segments.md).
LATEST = 500_000


class MailedNames:
    """Existence checks on the newest :data:`LATEST` events; the range is found once, on first use."""

    def __init__(self, engine: Engine, latest: int | None = None) -> None:
        self._engine, self.latest = engine, LATEST if latest is None else latest

    @cached_property
    def _range(self) -> tuple[int, bool]:
        """(the lowest id read, whether that is every event): two ends of the primary key."""
        with self._engine.connect() as conn:
            low, high = conn.execute(select(func.min(E.c.id), func.max(E.c.id))).one()
        if high is None:
            return 0, True
        floor = high - self.latest + 1
        return floor, floor <= low

    @property
    def complete(self) -> bool:
        """True when the look reads every event of the store: a name none of them has is named by no e-mail."""
        return self._range[1]

    def which(self, conditions: Mapping[str, ColumnElement[bool]]) -> set[str]:
        """The names of ``conditions`` some of the newest events meet (see :func:`relmail.store.db.which_exist`)."""
        if not conditions:
            return set()
        newest = E.c.id >= self._range[0]
        with self._engine.connect() as conn:
            return which_exist(conn, {name: newest & condition for name, condition in conditions.items()})

    def among(self) -> str:
        """What a warning adds after "no e-mail": nothing when every event was read, else which were."""
        return "" if self.complete else f" among the newest {self.latest:,} events"
