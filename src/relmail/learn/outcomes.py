"""What happened after each decision: outcomes within a window, by SQL aggregate.

For every ``send`` that was delivered and every ``holdout``, the events of
that customer in ``(as_of, as_of + window]`` are counted per outcome. The
run's ``as_of`` is the clock for both groups: a hold-out has no send time,
and measuring both from the same moment keeps the comparison fair.

A send counts as delivered when its delivery was accepted by the server or
provider, or when the run was imported from history (``status =
'imported'``, where the sends happened elsewhere). Runs whose window has not
closed yet are left out: their outcomes are still coming in, and counting
them would teach the model that recent mail does nothing.

The unit is the mailbox. Customer ids that share an address (trimmed, in
any case: :mod:`relmail.store.mailboxes`) are one person's mailbox, and the
plan treats it as one: one e-mail per message, and one hold-out draw, so
every id of the mailbox is in the same arm. A mailbox therefore gives one
row per run and message: its delivered send, or else the hold-out of the id
the e-mail would have gone to (the highest score, then the lowest id, as the
plan picks among the ids it sends to), and that row's outcomes are the events
of every id of the mailbox in the window, in both arms alike. A purchase
under the guest checkout after the e-mail to the account is a response to
the e-mail; counting one hold-out row per id instead would put two rows of
one person in the control group against one in the treated group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.engine import Engine

from ..store.mailboxes import Mailboxes, find
from ..store.models import Customer, Decision, Delivery, Event, Run, mailbox_key
from ..windows import current_time

#: Positive outcomes and the event types that count for them.
POSITIVE = {"open": "email_opened", "click": "email_clicked", "visit": "view", "conversion": "purchase"}
#: Irritation outcomes (one "irritation" outcome is their union).
IRRITATION = {"unsubscribe": "email_unsubscribed", "complaint": "email_complained"}
OUTCOMES = (*POSITIVE, *IRRITATION, "irritation")
#: E-mail events are tied to the message they came from when they name it.
_EMAIL_EVENTS = {"email_opened", "email_clicked", "email_unsubscribed", "email_complained"}
DEFAULT_WINDOW = timedelta(days=14)
#: Decisions per ``IN (...)`` when a mailbox's outcomes are counted again (well under SQLite's 32,766 parameters).
CHUNK = 5_000


@dataclass
class OutcomeTable:
    """One row per decision: who, what, the logged features and what followed."""

    decision_id: np.ndarray
    run_id: np.ndarray
    customer_id: np.ndarray
    message_id: np.ndarray
    treated: np.ndarray
    as_of: list[datetime]
    features: list[dict]
    outcomes: dict[str, np.ndarray] = field(default_factory=dict)
    #: Sum of purchase values in the window.
    revenue: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: The mailbox the row stands for, named by its lowest customer id (the customer's own id when no other
    #: customer has the address): what keeps a person on one side of a train/test split.
    mailbox: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.mailbox is None:
            self.mailbox = self.customer_id

    def __len__(self) -> int:
        return len(self.decision_id)

    def subset(self, mask: np.ndarray) -> OutcomeTable:
        idx = np.flatnonzero(mask)
        return OutcomeTable(
            decision_id=self.decision_id[idx],
            run_id=self.run_id[idx],
            customer_id=self.customer_id[idx],
            message_id=self.message_id[idx],
            treated=self.treated[idx],
            as_of=[self.as_of[i] for i in idx],
            features=[self.features[i] for i in idx],
            outcomes={k: v[idx] for k, v in self.outcomes.items()},
            revenue=self.revenue[idx],
            mailbox=self.mailbox[idx],
        )

    def date_range(self) -> tuple[str | None, str | None]:
        if not self.as_of:
            return None, None
        return min(self.as_of).isoformat(), max(self.as_of).isoformat()


def _counted(event_type: str):
    """1 per event of this type that belongs to the decision's customer (and message)."""
    e, d = Event.__table__.c, Decision.__table__.c
    cond = e.type == event_type
    if event_type in _EMAIL_EVENTS:
        # An unsubscribe caused by another message or run is not this one's.
        cond = and_(cond, or_(e.message_id.is_(None), e.message_id == d.message_id), or_(e.run_id.is_(None), e.run_id == d.run_id))
    return func.sum(case((cond, 1), else_=0))


def _aggregate(source, customer, start: datetime, end: datetime):
    """Per decision of ``source``: each outcome's events and the purchases' value in ``(start, end]`` of ``customer``."""
    e, d = Event.__table__.c, Decision.__table__.c
    counts = [_counted(t).label(name) for name, t in {**POSITIVE, **IRRITATION}.items()]
    revenue = func.sum(case((e.type == "purchase", func.coalesce(e.value, 0.0)), else_=0.0)).label("revenue")
    joined = source.outerjoin(Event.__table__, and_(e.customer_id == customer, e.occurred_at > start, e.occurred_at <= end))
    return select(d.id.label("decision_id"), *counts, revenue).select_from(joined).group_by(d.id)


def load_outcomes(
    engine: Engine,
    window: timedelta = DEFAULT_WINDOW,
    runs: Sequence[str] | None = None,
    messages: Sequence[str] | None = None,
    now: datetime | None = None,
) -> OutcomeTable:
    """Decisions with their outcomes, for every run whose window has closed by ``now``; one row per mailbox,
    run and message (see the module)."""
    if window <= timedelta(0):
        raise ValueError("the outcome window must be positive")
    now = now or current_time()  # $RELMAIL_NOW in a rehearsal, as the plan and the send it measures
    r = Run.__table__.c
    d, dl = Decision.__table__.c, Delivery.__table__.c
    with engine.connect() as conn:
        query = select(r.id, r.as_of, r.status)
        if runs:
            query = query.where(r.id.in_(list(runs)))
        # Few runs: the closed-window test is done here, portable across backends.
        run_rows = [row for row in conn.execute(query.order_by(r.as_of, r.id)) if row.as_of + window <= now]
        parts = []
        for run in run_rows:
            eligible = d.action == "holdout"
            if run.status == "imported":
                eligible = or_(eligible, d.action == "send")
            else:
                eligible = or_(eligible, and_(d.action == "send", dl.status == "accepted"))
            source = Decision.__table__.outerjoin(Delivery.__table__, dl.decision_id == d.id)
            agg = _aggregate(source, d.customer_id, run.as_of, run.as_of + window).where(d.run_id == run.id, eligible)
            if messages:
                agg = agg.where(d.message_id.in_(list(messages)))
            sub = agg.subquery()
            # Features are joined after the aggregate: JSON cannot be grouped by on PostgreSQL.
            rows = conn.execute(
                select(d.id, d.run_id, d.customer_id, d.message_id, d.action, d.score, d.features,
                       *[sub.c[n] for n in (*POSITIVE, *IRRITATION, "revenue")])
                .join(sub, sub.c.decision_id == d.id)
                .order_by(d.id)
            ).all()
            parts.append((run.as_of, rows))
        table, score = _table(parts)
        mailboxes = find(conn) if len(table) else Mailboxes.none()
        if len(mailboxes):
            table = _per_mailbox(conn, table, score, mailboxes, window)
    return table


def _per_mailbox(conn, table: OutcomeTable, score: np.ndarray, mailboxes: Mailboxes, window: timedelta) -> OutcomeTable:
    """``table`` with one row per (run, message, mailbox several customer ids share), counting every id's events.

    Per mailbox: its send (treated) if it has one, else the hold-out with the
    highest score, then the lowest id, as the plan picks the id a mailbox's
    e-mail goes to; its outcomes are counted again over every customer with
    the address, in one statement per run and chunk of decisions.
    """
    customers = table.customer_id.astype(str)
    box = mailboxes.mailbox_of(customers)
    shared = np.flatnonzero(box >= 0)
    if not len(shared):
        return table
    at = np.searchsorted(mailboxes.ids, customers[shared])
    table.mailbox = table.mailbox.copy()
    table.mailbox[shared] = mailboxes.lowest()[at]
    # One group per (run, message, mailbox); the first row of each in (treated, score, id) order stands for it.
    keys = np.char.add(np.char.add(table.run_id[shared].astype(str), "\x00"), table.message_id[shared].astype(str))
    _, group = np.unique(np.char.add(np.char.add(keys, "\x00"), box[shared].astype(str)), return_inverse=True)
    rank = np.nan_to_num(score[shared].astype(float), nan=-np.inf)
    order = np.lexsort((customers[shared], -rank, -table.treated[shared], group))
    first = np.r_[True, group[order][1:] != group[order][:-1]]
    keep = np.ones(len(table), dtype=bool)
    keep[shared[order[~first]]] = False
    stands = shared[order[first]]

    d = Decision.__table__.c
    own, mate = Customer.__table__.alias("own"), Customer.__table__.alias("mate")
    by_mailbox = Decision.__table__.join(own, own.c.id == d.customer_id).join(mate, mailbox_key(mate) == mailbox_key(own))
    row_of = {int(i): n for n, i in enumerate(table.decision_id.tolist())}
    runs = table.run_id[stands].astype(str)
    for run_id in np.unique(runs).tolist():
        mine = stands[runs == run_id]
        start, ids = table.as_of[int(mine[0])], table.decision_id[mine].tolist()
        for a in range(0, len(ids), CHUNK):
            stmt = _aggregate(by_mailbox, mate.c.id, start, start + window).where(d.id.in_(ids[a:a + CHUNK]))
            for row in conn.execute(stmt):
                _set(table, row_of[int(row.decision_id)], row)
    return table.subset(keep)


def _set(table: OutcomeTable, i: int, row) -> None:
    """Row ``i``'s outcomes and revenue from an aggregate ``row`` (counts per outcome and the revenue)."""
    for name in (*POSITIVE, *IRRITATION):
        table.outcomes[name][i] = (getattr(row, name) or 0) > 0
    table.outcomes["irritation"][i] = table.outcomes["unsubscribe"][i] | table.outcomes["complaint"][i]
    table.revenue[i] = float(row.revenue or 0.0)


def _table(parts) -> tuple[OutcomeTable, np.ndarray]:
    """The outcome table of the aggregate rows, and each row's score (what picks a mailbox's row)."""
    rows = [(as_of, row) for as_of, chunk in parts for row in chunk]
    names = (*POSITIVE, *IRRITATION)
    n = len(rows)
    outcomes = {name: np.fromiter(((getattr(row, name) or 0) > 0 for _, row in rows), dtype=np.int8, count=n) for name in names}
    outcomes["irritation"] = (outcomes["unsubscribe"] | outcomes["complaint"]).astype(np.int8)
    table = OutcomeTable(
        decision_id=np.fromiter((row.id for _, row in rows), dtype=np.int64, count=n),
        run_id=np.array([row.run_id for _, row in rows], dtype=object),
        customer_id=np.array([row.customer_id for _, row in rows], dtype=object),
        message_id=np.array([row.message_id for _, row in rows], dtype=object),
        treated=np.fromiter((row.action == "send" for _, row in rows), dtype=np.int8, count=n),
        as_of=[as_of for as_of, _ in rows],
        features=[dict(row.features or {}) for _, row in rows],
        outcomes=outcomes,
        revenue=np.fromiter((float(row.revenue or 0.0) for _, row in rows), dtype=float, count=n),
    )
    score = np.fromiter((np.nan if row.score is None else float(row.score) for _, row in rows), dtype=float, count=n)
    return table, score
