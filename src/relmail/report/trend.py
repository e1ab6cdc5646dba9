"""Week on week: the figures of a campaign's last runs, and each one's change from the run before.

A manager's first question of a weekly report is "better or worse than
last week?". :func:`trend` answers it for the runs of the report's
campaign up to the report's run (by as-of time), oldest first: e-mails
sent and how many of them were reported delivered, the suppression rate,
the customers mailed, the open, click and conversion rates, unsubscribes
and complaints per 1,000 customers mailed, and the revenue of the
customers mailed. Every rate reads against the customers mailed
(:mod:`relmail.report.mailed`), each once, as the whole run's row of "what
came back" does; a run that mails a customer two messages counts two
e-mails sent and delivered, and one customer. Conversions and revenue are
the purchases after the run's as-of time of the mailboxes mailed: a purchase
under another customer id with a mailed address (a guest checkout of the
account the e-mail went to) is the same person's response, counted once.

Every run is measured over the same time after its as-of time: as long as
the newest run has had until now, at most the outcome window
(``measured_days``; the whole window while the newest run is not out yet).
Opens, clicks and purchases keep coming in for days
after a send; measured so, last week's run does not look better only
because it had a week longer to collect them.

A change is the difference from the previous run: in points for a rate, per
1,000 for unsubscribes and complaints, in units otherwise. Week-on-week
changes are not tested against chance: the lift figures are.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from ..store.mailboxes import with_mates
from ..store.models import Decision, Delivery, Event, Run
from .mailed import mailed_customers, run_source

DEC, DLV, RUNS, EVENTS = Decision.__table__, Delivery.__table__, Run.__table__, Event.__table__
#: Runs shown unless told otherwise: two months of a weekly campaign.
DEFAULT_RUNS = 8
#: Per metric: how a change reads for the shop (1: more is better, -1: more is worse, 0: neither).
METRICS: dict[str, int] = {
    "sent": 0, "delivered_emails": 1, "suppression_rate": 0, "customers_mailed": 0, "open_rate": 1, "click_rate": 1,
    "conversion_rate": 1, "unsubscribes_per_1000": -1, "complaints_per_1000": -1, "revenue": 1,
}
#: Metrics whose change is in (percentage) points; the others change in their own units.
RATES = ("suppression_rate", "open_rate", "click_rate", "conversion_rate")


def trend(conn, run: Any, runs: int, window: timedelta, now: datetime, feedback) -> list[dict[str, Any]]:
    """The figures of the last ``runs`` runs of ``run``'s campaign up to ``run``, oldest first, each with its ``change``.

    ``feedback(conn, run_id, as_of, until)`` gives a run's customers per message and feedback type (key None: the
    whole run, each customer once).
    """
    if runs < 1:
        return []
    rows = conn.execute(
        select(RUNS.c.id, RUNS.c.window, RUNS.c.as_of, RUNS.c.status)
        .where(RUNS.c.campaign == run["campaign"], RUNS.c.as_of <= run["as_of"])
        .order_by(RUNS.c.as_of.desc(), RUNS.c.id.desc()).limit(runs)
    ).all()
    ids = [r.id for r in rows]
    horizon = min(window, now - rows[0].as_of) if rows else window
    if horizon <= timedelta(0):
        horizon = window  # the newest run is not out yet (a preview of next week): it has nothing to compare

    actions: dict[str, dict[str, int]] = {}
    for run_id, action, n in conn.execute(
        select(DEC.c.run_id, DEC.c.action, func.count()).where(DEC.c.run_id.in_(ids)).group_by(DEC.c.run_id, DEC.c.action)
    ):
        actions.setdefault(run_id, {})[action] = n
    out = []
    for r in reversed(rows):
        source = run_source(conn, r.id, r.status)
        mailed = mailed_customers(r.id, source).subquery()
        sent = conn.execute(select(func.count()).select_from(mailed)).scalar_one()
        customers = conn.execute(select(func.count(func.distinct(mailed.c.customer_id)))).scalar_one()
        end = r.as_of + horizon
        purchases = (EVENTS.c.type == "purchase", EVENTS.c.occurred_at > r.as_of, EVENTS.c.occurred_at <= end)
        # A customer mailed converted when anyone of her mailbox bought; each purchase of a mailbox mailed counts once.
        bought = with_mates(select(EVENTS.c.customer_id).where(*purchases))
        converted = conn.execute(
            select(func.count(func.distinct(mailed.c.customer_id))).where(mailed.c.customer_id.in_(bought))
        ).scalar_one()
        revenue = conn.execute(
            select(func.coalesce(func.sum(EVENTS.c.value), 0.0))
            .where(*purchases, EVENTS.c.customer_id.in_(with_mates(select(mailed.c.customer_id))))
        ).scalar_one()
        per_message = feedback(conn, r.id, r.as_of, end)
        came_back = per_message.pop(None)  # the whole run, each customer once
        # An e-mail is a customer and a message: a message's customers are its e-mails.
        delivered = sum(kinds["delivered"] for kinds in per_message.values())
        a = actions.get(r.id, {})
        decisions = sum(a.values())
        out.append({
            "run": r.id, "window": r.window, "as_of": r.as_of.isoformat(), "source": source,
            "decisions": decisions, "send": a.get("send", 0), "holdout": a.get("holdout", 0), "suppress": a.get("suppress", 0),
            "customers_mailed": customers, "measured_days": round(horizon.total_seconds() / 86400, 2),
            "sent": sent,
            "suppression_rate": _share(a.get("suppress", 0), decisions),
            "delivered_emails": delivered,
            "open_rate": _share(came_back["opened"], customers),
            "click_rate": _share(came_back["clicked"], customers),
            "conversion_rate": _share(converted, customers),
            "unsubscribes_per_1000": _per_1000(came_back["unsubscribed"], customers),
            "complaints_per_1000": _per_1000(came_back["complained"], customers),
            "revenue": round(float(revenue), 2),
        })
    for before, after in zip([None, *out], out):
        after["change"] = {m: _change(before, after, m) for m in METRICS}
    return out


def measured(days: float) -> str:
    """How long each run of the trend is measured over, as people say it: ``7.1 days``, ``5 hours``."""
    if days >= 1:
        text = f"{days:.1f}".removesuffix(".0")
        return f"{text} day" if text == "1" else f"{text} days"
    hours = max(round(days * 24), 1)
    return "1 hour" if hours == 1 else f"{hours} hours"


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _per_1000(part: int, whole: int) -> float | None:
    return round(1000 * part / whole, 2) if whole else None


def _change(before: dict | None, after: dict, metric: str) -> float | None:
    """``after``'s figure minus ``before``'s; None without a run before or a figure on either side."""
    if before is None or before[metric] is None or after[metric] is None:
        return None
    return round(after[metric] - before[metric], 4)
