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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.engine import Engine

from ..store.models import Decision, Delivery, Event, Run
from ..windows import current_time

#: Positive outcomes and the event types that count for them.
POSITIVE = {"open": "email_opened", "click": "email_clicked", "visit": "view", "conversion": "purchase"}
#: Irritation outcomes (one "irritation" outcome is their union).
IRRITATION = {"unsubscribe": "email_unsubscribed", "complaint": "email_complained"}
OUTCOMES = (*POSITIVE, *IRRITATION, "irritation")
#: E-mail events are tied to the message they came from when they name it.
_EMAIL_EVENTS = {"email_opened", "email_clicked", "email_unsubscribed", "email_complained"}
DEFAULT_WINDOW = timedelta(days=14)


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


def load_outcomes(
    engine: Engine,
    window: timedelta = DEFAULT_WINDOW,
    runs: Sequence[str] | None = None,
    messages: Sequence[str] | None = None,
    now: datetime | None = None,
) -> OutcomeTable:
    """Decisions with their outcomes, for every run whose window has closed by ``now``."""
    if window <= timedelta(0):
        raise ValueError("the outcome window must be positive")
    now = now or current_time()  # $RELMAIL_NOW in a rehearsal, as the plan and the send it measures
    r = Run.__table__.c
    d, e, dl = Decision.__table__.c, Event.__table__.c, Delivery.__table__.c
    with engine.connect() as conn:
        query = select(r.id, r.as_of, r.status)
        if runs:
            query = query.where(r.id.in_(list(runs)))
        # Few runs: the closed-window test is done here, portable across backends.
        run_rows = [row for row in conn.execute(query.order_by(r.as_of, r.id)) if row.as_of + window <= now]
        parts = []
        for run in run_rows:
            start, end = run.as_of, run.as_of + window
            eligible = d.action == "holdout"
            if run.status == "imported":
                eligible = or_(eligible, d.action == "send")
            else:
                eligible = or_(eligible, and_(d.action == "send", dl.status == "accepted"))
            counts = [_counted(t).label(name) for name, t in {**POSITIVE, **IRRITATION}.items()]
            revenue = func.sum(case((e.type == "purchase", func.coalesce(e.value, 0.0)), else_=0.0)).label("revenue")
            agg = (
                select(d.id.label("decision_id"), *counts, revenue)
                .select_from(
                    Decision.__table__.outerjoin(Delivery.__table__, dl.decision_id == d.id).outerjoin(
                        Event.__table__, and_(e.customer_id == d.customer_id, e.occurred_at > start, e.occurred_at <= end)
                    )
                )
                .where(d.run_id == run.id, eligible)
                .group_by(d.id)
            )
            if messages:
                agg = agg.where(d.message_id.in_(list(messages)))
            sub = agg.subquery()
            # Features are joined after the aggregate: JSON cannot be grouped by on PostgreSQL.
            rows = conn.execute(
                select(d.id, d.run_id, d.customer_id, d.message_id, d.action, d.features, *[sub.c[n] for n in (*POSITIVE, *IRRITATION, "revenue")])
                .join(sub, sub.c.decision_id == d.id)
                .order_by(d.id)
            ).all()
            parts.append((run.as_of, rows))
    return _table(parts)


def _table(parts) -> OutcomeTable:
    rows = [(as_of, row) for as_of, chunk in parts for row in chunk]
    names = (*POSITIVE, *IRRITATION)
    n = len(rows)
    outcomes = {name: np.fromiter(((getattr(row, name) or 0) > 0 for _, row in rows), dtype=np.int8, count=n) for name in names}
    outcomes["irritation"] = (outcomes["unsubscribe"] | outcomes["complaint"]).astype(np.int8)
    return OutcomeTable(
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
