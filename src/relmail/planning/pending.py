"""What the ledger adds to the features before the rules run.

The feature store counts e-mails that left (``email_sent`` events). A plan
must also count what is about to leave: ``send`` decisions of other runs
whose delivery has not been accepted yet, so two campaigns planned for the
same week cannot together exceed a frequency cap. This module adds those
counts to the frame as columns:

``planned_7`` / ``planned_30``
    pending sends of other runs whose ``as_of`` falls on a calendar day (in
    the project's time zone) less than 7 / 30 days from this plan's as-of
    day, either side: a run planned ahead will be delivered later, and a run
    planned later the same day counts as one planned earlier does;
``<k>.topic_planned_7`` / ``<k>.topic_planned_30``
    the same, on message ``k``'s topic;
``<k>.planned_same``
    pending sends of message ``k`` itself (for a recurring message: of runs
    on days less than its ``repeat_after_days`` away);
``<k>.held_out``
    hold-outs of message ``k`` in other runs of the campaign (for a recurring
    message: of runs on days less than its ``repeat_after_days`` away): a
    customer kept back to measure a message's effect stays in its control
    group (:mod:`relmail.rules.held_out`);
``<k>.recent_tickets``
    service tickets opened in the last ``recent_complaint_days`` of ``k``'s policy.

(For a recurring message, ``repeat_after_days: N``, the feature statement
itself counts ``<k>.already_sent`` over the as-of day and the N - 1 before only.)

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
from ..windows import local_day, local_midnight

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ..campaigns import Campaign
    from ..features.frame import FeatureFrame

DEC, DEL, RUNS, EV = Decision.__table__, Delivery.__table__, Run.__table__, Event.__table__
#: Delivery states that mean "left, or may have left": such decisions are never re-decided.
KEEP_STATES = ("accepted", "sending", "committing")
#: Delivery states that settle a send without an e-mail leaving (``withdrawn``: the customer opted out,
#: complained or hard-bounced after the plan; :mod:`relmail.sending.ledger`).
NOT_SENT = ("rejected", "failed", "withdrawn")


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


#: Customer ids per ``IN (...)`` when reading the pending sends of given customers (within every database's parameter limit).
CHUNK = 5_000
#: Calendar days either side of a plan's as-of day whose runs' pending sends can count: the longest cap
#: window's, or a campaign's longest ``repeat_after_days`` where that is longer.
REACH = 30


def pending(conn: Connection, run_id: str, as_of: datetime, tz: str, customers: tuple[str, str] | None = None,
            reach: int = REACH) -> list[tuple]:
    """(customer, message, topic, run as_of) of every send not delivered yet that counts.

    Those of runs whose as-of day (in time zone ``tz``) is less than
    ``reach`` days from ``as_of``'s. ``customers``: (first, last) id of
    the customers asked about (a plan range); their sends are read from the
    partial index of sends and hold-outs, run by run, so the read grows with
    the sends of those customers, not with the decisions the ledger holds.
    """
    return conn.execute(pending_statement(run_id, as_of, tz, customers, reach)).all()


def pending_statement(run_id: str, as_of: datetime, tz: str, customers: tuple[str, str] | None = None, reach: int = REACH):
    """The SELECT of :func:`pending`."""
    day = local_day(as_of, tz)
    settled = select(DEL.c.id).where(
        DEL.c.decision_id == DEC.c.id, DEL.c.status.in_(("accepted",) + NOT_SENT)
    ).exists()
    in_flight_here = select(DEL.c.id).where(DEL.c.decision_id == DEC.c.id, DEL.c.status.in_(("sending", "committing"))).exists()
    stmt = (
        select(DEC.c.customer_id, DEC.c.message_id, json_text(DEC.c.features, "topic"), RUNS.c.as_of)
        .join(RUNS, RUNS.c.id == DEC.c.run_id)
        .where(
            # Literally the partial index's predicate: SQLite uses such an index only for a query that says it.
            text(f"decisions.{NOT_SUPPRESSED}"),
            DEC.c.action == "send",
            RUNS.c.as_of >= when(local_midnight(day - timedelta(days=reach - 1), tz)),
            RUNS.c.as_of < when(local_midnight(day + timedelta(days=reach), tz)),
            or_(and_(DEC.c.run_id != run_id, ~settled), and_(DEC.c.run_id == run_id, in_flight_here)),
        )
    )
    if customers is not None:
        stmt = stmt.where(DEC.c.customer_id >= customers[0], DEC.c.customer_id <= customers[1])
    return stmt


def _counts(ids: np.ndarray, customers: np.ndarray) -> np.ndarray:
    out = np.zeros(len(ids))
    if len(customers):
        keys, counts = np.unique(customers, return_counts=True)
        mask, pos = align(ids, keys)
        out[pos] = counts[mask]
    return out


def load_context(conn: Connection, frame: FeatureFrame, campaign: Campaign, tz: str, run_id: str, as_of: datetime) -> None:
    """Add the columns described in the module docstring to ``frame`` (in place); days are calendar days in ``tz``."""
    ids = frame.customer_ids
    within = (str(ids[0]), str(ids[-1])) if len(ids) and code_point_order(conn) else None
    frame.columns.update(planned(conn, ids, campaign, tz, run_id, as_of, within))
    _held_out(conn, frame, campaign, tz, run_id, as_of, within)
    frame.columns.update(recent_tickets(conn, ids, campaign, as_of))


def planned(conn: Connection, ids: np.ndarray, campaign: Campaign, tz: str, run_id: str, as_of: datetime,
            within: tuple[str, str] | None = None, exact: bool = False) -> dict[str, np.ndarray]:
    """``planned_7``, ``planned_30`` and each message's ``topic_planned_7``/``_30`` and ``planned_same`` for the sorted ``ids``.

    ``within``: read the pending sends of the customers from the first to the
    last id (a plan range); ``exact``: of ``ids`` only, a chunk of them per
    statement (a few customers spread over the store).
    """
    reach = max([REACH, *(m.repeat_after_days for m in campaign.messages if m.repeat_after_days)])
    if not len(ids):
        rows: list = []
    elif exact:
        rows = [r for a in range(0, len(ids), CHUNK) for r in conn.execute(
            pending_statement(run_id, as_of, tz, None, reach).where(DEC.c.customer_id.in_(ids[a:a + CHUNK].tolist())))]
    else:
        rows = pending(conn, run_id, as_of, tz, within, reach)
    customer_col, message_col, topic_col, as_of_col = zip(*rows) if rows else ((), (), (), ())
    customers = np.array(customer_col, dtype=str)
    messages = np.array(message_col, dtype=object)
    topics = np.array(topic_col, dtype=object)
    apart_days = _days_apart(as_of_col, as_of, tz)
    near7, near30 = apart_days < 7, apart_days < 30
    out = {"planned_7": _counts(ids, customers[near7]), "planned_30": _counts(ids, customers[near30])}
    for m in campaign.messages:
        on_topic = topics == m.topic
        out[f"{m.id}.topic_planned_7"] = _counts(ids, customers[near7 & on_topic])
        out[f"{m.id}.topic_planned_30"] = _counts(ids, customers[near30 & on_topic])
        out[f"{m.id}.planned_same"] = _counts(ids, customers[_same_issue(messages, apart_days, m)])
    return out


def recent_tickets(conn: Connection, ids: np.ndarray, campaign: Campaign, as_of: datetime) -> dict[str, np.ndarray]:
    """Each message's ``recent_tickets`` for the sorted ``ids``: tickets opened in its policy's ``recent_complaint_days``."""
    out = {}
    for days in sorted({m.policy.recent_complaint_days for m in campaign.messages}):
        tickets = _recent_tickets(conn, ids, as_of, days)
        for m in campaign.messages:
            if m.policy.recent_complaint_days == days:
                out[f"{m.id}.recent_tickets"] = tickets
    return out


def held_out_statement(run_id: str, campaign: str, messages: list[str], customers: tuple[str, str] | None = None):
    """(customer, message, run as_of) of the hold-outs of ``messages`` in the other runs of ``campaign``."""
    stmt = (
        select(DEC.c.customer_id, DEC.c.message_id, RUNS.c.as_of)
        .join(RUNS, RUNS.c.id == DEC.c.run_id)
        .where(
            # The partial index of sends and hold-outs, run by run: the campaign's runs, not the whole ledger.
            text(f"decisions.{NOT_SUPPRESSED}"),
            DEC.c.action == "holdout",
            RUNS.c.campaign == campaign,
            DEC.c.run_id != run_id,
            DEC.c.message_id.in_(messages),
        )
    )
    if customers is not None:
        stmt = stmt.where(DEC.c.customer_id >= customers[0], DEC.c.customer_id <= customers[1])
    return stmt


def _held_out(conn, frame: FeatureFrame, campaign: Campaign, tz: str, run_id: str, as_of: datetime,
              within: tuple[str, str] | None) -> None:
    ids = frame.customer_ids
    rows = conn.execute(held_out_statement(run_id, campaign.name, [m.id for m in campaign.messages], within)).all() \
        if len(ids) else []
    frame.columns.update(_held_out_counts(ids, rows, campaign, tz, as_of))


#: Customer ids per ``IN (...)`` of :func:`held_out` (well under SQLite's 32,766 parameters).
CHUNK = 5_000


def held_out(conn: Connection, ids: np.ndarray, campaign: Campaign, tz: str, run_id: str, as_of: datetime) -> dict[str, np.ndarray]:
    """Each message's ``held_out`` for the sorted ``ids``, a few customers listed by id (those of a shared mailbox)."""
    rows: list = []
    for a in range(0, len(ids), CHUNK):
        stmt = held_out_statement(run_id, campaign.name, [m.id for m in campaign.messages])
        rows += conn.execute(stmt.where(DEC.c.customer_id.in_(ids[a:a + CHUNK].tolist()))).all()
    return _held_out_counts(ids, rows, campaign, tz, as_of)


def _held_out_counts(ids: np.ndarray, rows: list, campaign: Campaign, tz: str, as_of: datetime) -> dict[str, np.ndarray]:
    customer_col, message_col, as_of_col = zip(*rows) if rows else ((), (), ())
    customers, messages = np.array(customer_col, dtype=str), np.array(message_col, dtype=object)
    apart_days = _days_apart(as_of_col, as_of, tz)
    # A one-off message's control group is for good; a recurring message's, for the issue it was kept from.
    return {f"{m.id}.held_out": _counts(ids, customers[_same_issue(messages, apart_days, m)]) for m in campaign.messages}


def _days_apart(run_as_ofs, as_of: datetime, tz: str) -> np.ndarray:
    """Calendar days (in ``tz``) between each run's as-of day and this plan's: worked out once per run, looked up per row."""
    day = local_day(as_of, tz)
    apart = {t: abs((local_day(t, tz) - day).days) for t in set(run_as_ofs)}
    return np.fromiter(map(apart.__getitem__, run_as_ofs), dtype=np.int64, count=len(run_as_ofs))


def _same_issue(messages: np.ndarray, apart_days: np.ndarray, message) -> np.ndarray:
    """Rows of ``message``; of a recurring one, only those of runs less than its ``repeat_after_days`` away."""
    same = messages == message.id
    if message.repeat_after_days is not None:
        same &= apart_days < message.repeat_after_days
    return same


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
