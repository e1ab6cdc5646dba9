"""The consent history (``consent_changes``): every preference change, with where it came from.

``preferences`` holds one row per (customer, topic), overwritten by every
change, so it cannot say which of several opt-outs a plan saw, nor which
file or provider event made it. Every writer of preferences appends here,
in the same transaction and in bulk, the rows it actually changed:
:func:`record` takes plain dicts, :func:`change_in_force` finds what a plan
made at a given time saw.

``source`` is the preference row's own (``unsubscribe-link``,
``preference-page``, ``esp-webhook``, ``esp-import``, ``esp-send`` (an ESP that refused a
send for an earlier opt-out: Mandrill), ``bounce-mailbox``,
``import`` or an import's own source name, ``suppression-list``);
``detail`` what exactly (the file, the provider and its event, one-click
or the confirmation page), never an address.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from ..windows import current_time
from .models import ConsentChange, Preference

T = ConsentChange.__table__
P = Preference.__table__

#: ``updated_at`` / ``changed_at`` of a consent record whose source gives no date (Shopify's "accepts marketing",
#: a Klaviyo profile SUBSCRIBED with a blank time): older than any dated record, so any dated one wins over it.
#: A stored value only: what relmail shows and exports says "no date" (None) instead.
UNDATED = datetime(1970, 1, 1, tzinfo=UTC)


def shown(when: datetime | None) -> datetime | None:
    """A consent record's time as relmail shows it: None for :data:`UNDATED`."""
    return None if when == UNDATED else when


#: ``detail`` is a String(300).
_MAX_DETAIL = 300


@dataclass(frozen=True)
class Change:
    """One recorded change of a preference, or the bare row of one made before the history was kept."""

    changed_at: datetime
    opted_in: bool
    #: None: made before relmail kept the history (only the row's time is known).
    source: str | None
    detail: str | None = None


def record(conn: Connection, rows: Iterable[Mapping[str, Any]], now: datetime | None = None) -> int:
    """Append changes: ``customer_id``, ``topic``, ``opted_in``, ``changed_at``, ``source``, optional ``detail`` and ``event_id``."""
    # relmail's clock, as a decision's created_at: why compares the two (RELMAIL_NOW in a rehearsal).
    recorded_at = now or current_time()
    out = [{"customer_id": r["customer_id"], "topic": r["topic"], "opted_in": bool(r["opted_in"]),
            "changed_at": r["changed_at"], "recorded_at": recorded_at, "source": r["source"],
            "detail": (r.get("detail") or None) and str(r["detail"])[:_MAX_DETAIL], "event_id": r.get("event_id")}
           for r in rows]
    if out:
        conn.execute(T.insert(), out)
    return len(out)


def change_in_force(conn: Connection, customer_id: str, topic: str, seen_at: datetime) -> Change | None:
    """The change of (customer, topic) in force for a plan made at ``seen_at``, or None when nothing is known.

    The latest change recorded by then; without one, the preference row
    itself when it was last written by then (its source not recorded).
    """
    row = conn.execute(
        select(T.c.changed_at, T.c.opted_in, T.c.source, T.c.detail)
        .where(T.c.customer_id == customer_id, T.c.topic == topic, T.c.recorded_at <= seen_at)
        .order_by(T.c.id.desc()).limit(1)
    ).first()
    if row is not None:
        return Change(row.changed_at, bool(row.opted_in), row.source, row.detail)
    pref = conn.execute(select(P.c.updated_at, P.c.opted_in).where(P.c.customer_id == customer_id, P.c.topic == topic)).first()
    if pref is not None and pref.updated_at <= seen_at:
        return Change(pref.updated_at, bool(pref.opted_in), None)
    return None


def change_of_event(conn: Connection, customer_id: str, event_id: str) -> Change | None:
    """The change a feedback event made (an unsubscribe), or None when it changed nothing or predates the history."""
    row = conn.execute(select(T.c.changed_at, T.c.opted_in, T.c.source, T.c.detail)
                       .where(T.c.customer_id == customer_id, T.c.event_id == event_id)
                       .order_by(T.c.id.desc()).limit(1)).first()
    return Change(row.changed_at, bool(row.opted_in), row.source, row.detail) if row is not None else None
