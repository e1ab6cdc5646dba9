"""What the web tests share: the signing key the project fixture exports, a run, and reads of the consent the app wrote."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from relmail import tokens
from relmail.store.models import Event, Preference

KEY = "test-signing-key-not-secret"  # what the project fixture exports
PROJECT = "Fietsenwinkel"  # its [project] name
RUN = "weekly-2026-W48"
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
#: An RFC 8058 one-click POST, as a mail program sends it.
ONE_CLICK = {"data": "List-Unsubscribe=One-Click", "content_type": "application/x-www-form-urlencoded"}


def prefs(engine) -> dict:
    """(customer, topic) -> (opted_in, source, max_per_week) of every preference row."""
    t = Preference.__table__
    with engine.connect() as conn:
        return {(c, tp): (o, s, m) for c, tp, o, s, m in conn.execute(
            select(t.c.customer_id, t.c.topic, t.c.opted_in, t.c.source, t.c.max_per_week))}


def feedback_events(engine) -> list:
    """Every event but the sends, sorted: what a page or a webhook recorded."""
    t = Event.__table__
    with engine.connect() as conn:
        return sorted(conn.execute(select(t.c.customer_id, t.c.type, t.c.topic, t.c.message_id, t.c.event_id)
                                   .where(t.c.type != "email_sent")).all())


def token(customer: str = "C0000001", topic: str = "promotions") -> str:
    return tokens.sign(KEY, customer, topic, RUN, PROJECT)
