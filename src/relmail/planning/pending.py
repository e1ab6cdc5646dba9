"""What the ledger adds to the features before the rules run.

The feature store counts e-mails that left (``email_sent`` events). A plan
must also count what is about to leave: ``send`` decisions of other runs
whose delivery has not been accepted yet, so two campaigns planned for the
same week cannot together exceed a frequency cap. This module adds those
counts to the frame as columns:

``planned_7`` / ``planned_30``
    pending sends of other runs whose ``as_of`` is within 7 / 30 days of this
    plan's (either side: a run planned ahead will be delivered later);
``<k>.topic_planned_7`` / ``<k>.topic_planned_30``
    the same, on message ``k``'s topic;
``<k>.planned_same``
    pending sends of message ``k`` itself (for a recurring message: of runs
    within its ``repeat_after_days``);
``<k>.recent_tickets``
    service tickets opened in the last ``recent_complaint_days`` of ``k``'s policy.

(For a recurring message, ``repeat_after_days: N``, the feature statement
itself counts ``<k>.already_sent`` over the last N days only.)

Decisions of the run being re-planned whose delivery is in flight (sending,
committing) count as pending too; accepted ones are events already.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import and_, func, or_, select, text

from ..features.sql import align, code_point_order, json_text, when
from ..store.models import NOT_SUPPRESSED, Decision, Delivery, Event, Run

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ..campaigns import Campaign
    from ..features.frame import FeatureFrame
    from ..windows import Window

DEC, DEL, RUNS, EV = Decision.__table__, Delivery.__table__, Run.__table__, Event.__table__
#: Delivery states that mean "left, or may have left": such decisions are never re-decided.
KEEP_STATES = ("accepted", "sending", "committing")
#: Delivery states that settle a send without an e-mail leaving.
NOT_SENT = ("rejected", "failed")


def kept_decisions(conn: Connection, run_id: str) -> dict[str, set[str]]:
    """message id → customers whose decision in ``run_id`` is delivered or in flight."""
    rows = conn.execute(
        select(DEC.c.message_id, DEC.c.customer_id)
        .join(DEL, DEL.c.decision_id == DEC.c.id)
        .where(DEC.c.run_id == run_id, DEL.c.status.in_(KEEP_STATES))
    ).all()
    out: dict[str, set[str]] = {}
    for message_id, customer_id in rows:
        out.setdefault(message_id, set()).add(customer_id)
    return out


def pending(conn: Connection, run_id: str, as_of: datetime, customers: tuple[str, str] | None = None) -> list[tuple]:
    """(customer, message, topic, run as_of, run window) of every send not delivered yet that counts.

    ``customers``: (first, last) id of the customers asked about (a plan
    range); their sends are read from the partial index of sends and hold-outs, run by run,
    so the read grows with the sends of those customers, not with the
    decisions the ledger holds.
    """
    return conn.execute(pending_statement(run_id, as_of, customers)).all()


def pending_statement(run_id: str, as_of: datetime, customers: tuple[str, str] | None = None):
    """The SELECT of :func:`pending`."""
    settled = select(DEL.c.id).where(
        DEL.c.decision_id == DEC.c.id, DEL.c.status.in_(("accepted",) + NOT_SENT)
    ).exists()
    in_flight_here = select(DEL.c.id).where(DEL.c.decision_id == DEC.c.id, DEL.c.status.in_(("sending", "committing"))).exists()
    stmt = (
        select(DEC.c.customer_id, DEC.c.message_id, json_text(DEC.c.features, "topic"), RUNS.c.as_of, RUNS.c.window)
        .join(RUNS, RUNS.c.id == DEC.c.run_id)
        .where(
            # Literally the partial index's predicate: SQLite uses such an index only for a query that says it.
            text(f"decisions.{NOT_SUPPRESSED}"),
            DEC.c.action == "send",
            RUNS.c.as_of > when(as_of, 30),
            RUNS.c.as_of < when(as_of, -30),
            or_(and_(DEC.c.run_id != run_id, ~settled), and_(DEC.c.run_id == run_id, in_flight_here)),
        )
    )
    if customers is not None:
        stmt = stmt.where(DEC.c.customer_id >= customers[0], DEC.c.customer_id <= customers[1])
    return stmt


def _counts(ids: np.ndarray, customers: list[str]) -> np.ndarray:
    out = np.zeros(len(ids))
    if customers:
        keys, counts = np.unique(np.array(customers, dtype=str), return_counts=True)
        mask, pos = align(ids, keys)
        out[pos] = counts[mask]
    return out


def load_context(conn: Connection, frame: FeatureFrame, campaign: Campaign, window: Window, run_id: str, as_of: datetime) -> None:
    """Add the columns described in the module docstring to ``frame`` (in place)."""
    ids = frame.customer_ids
    within = (str(ids[0]), str(ids[-1])) if len(ids) and code_point_order(conn) else None
    rows = pending(conn, run_id, as_of, within) if len(ids) else []
    week = timedelta(days=7)
    near7 = [r for r in rows if abs(r[3] - as_of) < week]
    frame.columns["planned_7"] = _counts(ids, [r[0] for r in near7])
    frame.columns["planned_30"] = _counts(ids, [r[0] for r in rows])
    for m in campaign.messages:
        frame.columns[f"{m.id}.topic_planned_7"] = _counts(ids, [r[0] for r in near7 if r[2] == m.topic])
        frame.columns[f"{m.id}.topic_planned_30"] = _counts(ids, [r[0] for r in rows if r[2] == m.topic])
        gap = m.repeat_after_days
        same = [r[0] for r in rows if r[1] == m.id and (gap is None or abs(r[3] - as_of) < timedelta(days=gap))]
        frame.columns[f"{m.id}.planned_same"] = _counts(ids, same)
    for days in sorted({m.policy.recent_complaint_days for m in campaign.messages}):
        tickets = _recent_tickets(conn, ids, as_of, days)
        for m in campaign.messages:
            if m.policy.recent_complaint_days == days:
                frame.columns[f"{m.id}.recent_tickets"] = tickets


def _recent_tickets(conn, ids: np.ndarray, as_of: datetime, days: int) -> np.ndarray:
    stmt = (
        select(EV.c.customer_id, func.count())
        .where(EV.c.type == "ticket_opened", EV.c.occurred_at > when(as_of, days), EV.c.occurred_at <= when(as_of))
        .group_by(EV.c.customer_id)
    )
    return _aligned(conn, ids, stmt)


def _aligned(conn, ids: np.ndarray, stmt) -> np.ndarray:
    out = np.zeros(len(ids))
    rows = conn.execute(stmt).all()
    if rows:
        keys = np.array([r[0] for r in rows], dtype=str)
        values = np.array([r[1] for r in rows], dtype=float)
        mask, pos = align(ids, keys)
        out[pos] = values[mask]
    return out
