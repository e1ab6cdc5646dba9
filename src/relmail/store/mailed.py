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

from sqlalchemy import case, func, or_, select

from .models import Event

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.sql import ColumnElement

E = Event.__table__

#: How many of the newest events (by id: the last written) the look reads at most, in storage order:
#: a fraction of a second per look (docs/guide/segments.md has the figures).
LATEST = 500_000


class MailedNames:
    """Existence checks on the newest :data:`LATEST` events; the range is found once, on first use."""

    def __init__(self, engine: Engine, latest: int | None = None) -> None:
        self._engine, self.latest = engine, LATEST if latest is None else latest

    @cached_property
    def _range(self) -> tuple[int, bool]:
        """(the lowest id read, whether that is every event): two ends of the primary key."""
        # Apart: SQLite finds a lone min() or max() at an end of the key, both together by reading every row.
        ends = select(select(func.min(E.c.id)).scalar_subquery(), select(func.max(E.c.id)).scalar_subquery())
        with self._engine.connect() as conn:
            low, high = conn.execute(ends).one()
        if high is None:
            return 0, True
        floor = high - self.latest + 1
        return floor, floor <= low

    @property
    def complete(self) -> bool:
        """True when the look reads every event of the store: a name none of them has is named by no e-mail."""
        return self._range[1]

    def which(self, conditions: Mapping[str, ColumnElement[bool]]) -> set[str]:
        """The names of ``conditions`` some of the newest events meet, in one pass over them for all the names.

        One ``EXISTS`` per name (:func:`relmail.store.db.which_exist`) would
        read the whole range again for each name no event has.
        """
        if not conditions:
            return set()
        names = sorted(conditions)
        flags = [func.max(case((conditions[name], 1), else_=0)) for name in names]
        query = select(*flags).where(E.c.id >= self._range[0], or_(*(conditions[name] for name in names)))
        with self._engine.connect() as conn:
            row = conn.execute(query).one()
        return {name for name, flag in zip(names, row, strict=True) if flag}

    def among(self) -> str:
        """What a warning adds after "no e-mail": nothing when every event was read, else which were."""
        return "" if self.complete else f" among the newest {self.latest:,} events"
