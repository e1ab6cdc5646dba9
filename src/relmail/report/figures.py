"""The figures of a run report, from the ledger by SQL aggregate.

:func:`run_figures` reads one run's decisions and deliveries and returns a
JSON-ready dict: what kind of run it is (:mod:`relmail.report.mailed`),
totals, per-message action counts, what came back of the e-mails mailed
(per customer and per e-mail; the e-mails refused at send apart), reason
counts and their kinds, score histograms with the relevance threshold, how
many decisions each irritation rule stopped, the incrementality (lift with
a confidence interval) of this and earlier runs that have hold-outs, the
suppression list, and the campaign's last runs week on week
(:mod:`relmail.report.trend`). The HTML report draws exactly these
numbers, and ``relmail report RUN --format json`` prints them, so what a
person reads and what a machine checks cannot drift apart.

Every count is a ``GROUP BY`` in the database; Python only splits the
distinct reason strings (a handful of patterns per message, whatever the
audience size) into their codes.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import timedelta
from typing import Any

from sqlalchemy import Integer, and_, case, cast, func, select
from sqlalchemy.engine import Engine

from ..campaigns import load_campaign
from ..errors import NotFound
from ..feedback.events import STORE_TYPES, TYPES
from ..learn.incrementality import incrementality
from ..rules import ARBITRATION_LOST, HARD, HOLDOUT, KINDS, REASON_CODES, REASON_KINDS, RULES
from ..sending import ledger
from ..sending.loop import OUTCOMES
from ..store.faults import translated
from ..store.models import Decision, Delivery, Event, Run
from ..windows import current_time
from .mailed import SOURCES, mailed_customers, never_mailed, refused_hard, run_source
from .trend import DEFAULT_RUNS, trend

DEC, DLV, RUNS, EVENTS = Decision.__table__, Delivery.__table__, Run.__table__, Event.__table__
ACTIONS = ("send", "holdout", "suppress")
#: What came back of the run's e-mails (provider events, bounce mailbox, unsubscribe links): every feedback type.
FEEDBACK = TYPES
#: Rows of the suppression list kept in a report unless told otherwise: a
#: browser searches a table this size at once; millions belong in a file.
SUPPRESSION_LIMIT = 5000
DEFAULT_BINS = 20


def irritation_codes() -> list[str]:
    """The rules that protect the customer's patience (kind ``irritation``), in evaluation order.

    Not every switchable rule: ``HELD_OUT`` keeps the experiment's control group and ``NOT_WORTH_IT``
    the shop's money; hard rules are compliance (:data:`relmail.rules.REASON_KINDS`).
    """
    return [code for code in RULES if REASON_KINDS[code] == "irritation"]


@translated
def run_figures(
    engine: Engine,
    run_id: str,
    *,
    project: Any = None,
    bins: int = DEFAULT_BINS,
    window: timedelta = timedelta(days=14),
    confidence: float = 0.95,
    suppression_limit: int | None = SUPPRESSION_LIMIT,
    trend_runs: int = DEFAULT_RUNS,
) -> dict[str, Any]:
    """Every figure of the report of ``run_id`` (a run id, or ``CAMPAIGN:last`` for the campaign's newest run).

    ``project`` (optional) supplies a message's relevance threshold when the
    ledger does not hold it (no decision of that message fell below it).
    ``suppression_limit`` caps the suppression rows returned (None: all);
    ``suppression_total`` always gives the full count. ``trend_runs``: how
    many runs of the campaign, up to this one, the week-on-week trend shows
    (0: none).
    Raises :class:`NotFound` for an unknown run.
    """
    if bins < 1:
        raise ValueError("bins must be at least 1")
    from ..planning.runs import resolve_run

    with engine.connect() as conn:
        run_id = resolve_run(conn, run_id)  # an id or CAMPAIGN:last; NotFound names the newest runs
        run = conn.execute(select(RUNS).where(RUNS.c.id == run_id)).mappings().first()
        patterns = conn.execute(
            select(DEC.c.message_id, DEC.c.action, DEC.c.reasons, func.count().label("n"))
            .where(DEC.c.run_id == run_id)
            .group_by(DEC.c.message_id, DEC.c.action, DEC.c.reasons)
        ).all()
        customers = conn.execute(select(func.count(func.distinct(DEC.c.customer_id))).where(DEC.c.run_id == run_id)).scalar_one()
        stats = {
            r.message_id: r
            for r in conn.execute(
                select(DEC.c.message_id, func.min(DEC.c.score).label("lo"), func.avg(DEC.c.score).label("mean"),
                       func.max(DEC.c.score).label("hi"), func.sum(case((DEC.c.action == "send", DEC.c.expected_value), else_=0.0)).label("ev"))
                .where(DEC.c.run_id == run_id)
                .group_by(DEC.c.message_id)
            )
        }
        # An accepted delivery without the provider's reply is counted apart: "uncertain", never resent.
        state = ledger.outcome().label("state")
        deliveries = conn.execute(
            select(DLV.c.message_id, state, func.count()).where(DLV.c.run_id == run_id).group_by(DLV.c.message_id, state)
        ).all()
        feedback = _feedback(conn, run_id, run["as_of"])
        # The whole run's rates read against customers, as its feedback counts do: those the run mailed
        # (accepted deliveries, uncertain ones included; an imported run's sends; a history's e-mail events).
        source = run_source(conn, run_id, run["status"])
        mailed_rows = mailed_customers(run_id, source).subquery()
        mailed = conn.execute(select(func.count(func.distinct(mailed_rows.c.customer_id)))).scalar_one()
        sent = conn.execute(select(func.count()).select_from(mailed_rows)).scalar_one()
        # E-mails per message: what the "sent" column of what came back shows where relmail holds no deliveries.
        sent_per_message = dict(conn.execute(select(mailed_rows.c.message_id, func.count()).group_by(mailed_rows.c.message_id)).all())
        # Refused at send: never mailed, so apart from the bounces of the e-mails mailed.
        refused = dict(conn.execute(refused_hard(run_id)).all())
        weeks = trend(conn, run, trend_runs, window, current_time(), _feedback)
        histogram = _histograms(conn, run_id, bins)
        thresholds = _ledger_thresholds(conn, run_id)
        suppression_total = conn.execute(
            select(func.count()).select_from(DEC).where(DEC.c.run_id == run_id, DEC.c.action == "suppress")
        ).scalar_one()
        query = (
            select(DEC.c.customer_id, DEC.c.message_id, DEC.c.score, DEC.c.reasons)
            .where(DEC.c.run_id == run_id, DEC.c.action == "suppress")
            .order_by(DEC.c.message_id, DEC.c.customer_id)
        )
        if suppression_limit is not None:
            query = query.limit(suppression_limit)
        suppressions = [
            {"customer_id": r.customer_id, "message_id": r.message_id, "score": round(float(r.score), 4), "reasons": r.reasons.split()}
            for r in conn.execute(query)
        ]

    order = _message_order(project, run["campaign"], {p.message_id for p in patterns})
    messages = {m: {"message": m, "decisions": 0, **dict.fromkeys(ACTIONS, 0), "reasons": {}, "deliveries": {}} for m in order}
    reasons_total: Counter = Counter()
    kinds: Counter = Counter()
    irritation = {code: {"code": code, "summary": REASON_CODES[code], "stopped": 0, "only": 0, "messages": {}} for code in irritation_codes()}
    for p in patterns:
        m = messages[p.message_id]
        m["decisions"] += p.n
        m[p.action] = m.get(p.action, 0) + p.n
        codes = p.reasons.split()
        for kind in {REASON_KINDS.get(code, "unknown") for code in codes}:
            kinds[kind] += p.n  # a decision with reasons of two kinds counts in both
        for code in codes:
            m["reasons"][code] = m["reasons"].get(code, 0) + p.n
            reasons_total[code] += p.n
            if p.action == "suppress" and code in irritation:
                entry = irritation[code]
                entry["stopped"] += p.n
                entry["messages"][p.message_id] = entry["messages"].get(p.message_id, 0) + p.n
                if len(codes) == 1:
                    entry["only"] += p.n
    for message_id, status, n in deliveries:
        messages.setdefault(message_id, {"message": message_id, "decisions": 0, **dict.fromkeys(ACTIONS, 0), "reasons": {}, "deliveries": {}})
        messages[message_id]["deliveries"][status] = n
    if source == "events":  # no decisions name the messages: the e-mail events do
        for message_id in sorted(sent_per_message):
            messages.setdefault(message_id, {"message": message_id, "decisions": 0, **dict.fromkeys(ACTIONS, 0), "reasons": {}, "deliveries": {}})
    for message_id, m in messages.items():
        m["feedback"] = feedback.get(message_id, dict.fromkeys(FEEDBACK, 0))
        m["sent"] = sent_per_message.get(message_id, 0)
        m["refused_hard"] = refused.get(message_id, 0)
    campaign_thresholds = _campaign_thresholds(project, run["campaign"])
    for message_id, m in messages.items():
        m["reasons"] = _in_code_order(m["reasons"])
        s = stats.get(message_id)
        m["score"] = {
            "min": _r(s.lo) if s else None, "mean": _r(s.mean) if s else None, "max": _r(s.hi) if s else None,
            "threshold": thresholds.get(message_id, campaign_thresholds.get(message_id)),
            "bins": bins,
            "histogram": histogram.get(message_id, {a: [0] * bins for a in ACTIONS}),
        }
        m["expected_value_sent"] = _r(s.ev) if s else 0.0

    totals = {"decisions": sum(m["decisions"] for m in messages.values()), "customers": customers}
    for a in ACTIONS:
        totals[a] = sum(m[a] for m in messages.values())
    totals["suppression_rate"] = round(totals["suppress"] / totals["decisions"], 4) if totals["decisions"] else 0.0
    delivered: Counter = Counter()
    for m in messages.values():
        delivered.update(m["deliveries"])
    if delivered:
        delivered.update(dict.fromkeys(OUTCOMES, 0))  # every outcome named, zeros too, once the run has deliveries
    totals["deliveries"] = dict(sorted(delivered.items()))
    totals["feedback"] = feedback.get(None, dict.fromkeys(FEEDBACK, 0))
    totals["customers_mailed"] = mailed
    totals["sent"] = sent
    # Per e-mail, as the messages count: a customer who opened both her e-mails is two of the e-mails sent.
    totals["feedback_emails"] = {kind: sum(m["feedback"][kind] for m in messages.values()) for kind in FEEDBACK}
    totals["refused_hard"] = sum(m["refused_hard"] for m in messages.values())

    return _finite({
        "run": {
            "id": run["id"], "campaign": run["campaign"], "window": run["window"], "as_of": run["as_of"].isoformat(),
            "status": run["status"], "seed": run["seed"], "config_hash": run["config_hash"],
            "created_at": run["created_at"].isoformat(), "updated_at": run["updated_at"].isoformat(),
            "source": source, "source_means": SOURCES[source],
        },
        "totals": totals,
        "messages": list(messages.values()),
        "reasons": [{"code": c, "decisions": n, "hard": c in HARD, "kind": REASON_KINDS.get(c, "unknown"), "summary": REASON_CODES.get(c, "")}
                    for c, n in _in_code_order(reasons_total).items()],
        "reason_kinds": [{"kind": k, "means": KINDS[k], "decisions": kinds[k]} for k in KINDS if kinds[k]],
        "irritation": list(irritation.values()),
        "incrementality": _incrementality(engine, run, window, confidence),
        "incrementality_window_days": window.total_seconds() / 86400,
        "confidence": confidence,
        "suppression_total": suppression_total,
        "suppressions": suppressions,
        "trend": weeks,
    })


def _finite(value):
    """NaN and infinities (an interval with too few hold-outs) become None: valid JSON, shown as a dash."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _r(value) -> float:
    return round(float(value), 4) if value is not None else 0.0


#: How long before a run's as-of time an event naming the run may be dated (a provider's clock, a time zone slip).
FEEDBACK_SKEW = timedelta(days=1)


def _feedback(conn, run_id: str, as_of, until=None) -> dict[str | None, dict[str, int]]:
    """Customers per feedback type of the run, per message and (key None) for the whole run.

    Customers, not events: a customer who opened twice counts once, so each figure reads against the
    e-mails sent. The run's total also counts what names the run but no message (an unsubscribe
    link signed for the run), and counts a customer once however many of the run's e-mails they had.
    The events are read once, through the (type, time) index from the run's as-of time on, not
    through the store's whole history of e-mail events: the run's count of a type is the number of
    rows flagged ``first``, one per (type, customer), whichever of the run's e-mails it came with.
    What names an e-mail refused at send is left out (:func:`relmail.report.mailed.never_mailed`): the
    ledger's hard bounce of a dead address it was refused for would count a bounce of an e-mail never mailed.
    ``until``: only events up to then (the trend measures every run over the same time).
    """
    types = {STORE_TYPES[t]: t for t in FEEDBACK}
    first_in_run = func.row_number().over(partition_by=(EVENTS.c.type, EVENTS.c.customer_id))
    query = (select(EVENTS.c.message_id, EVENTS.c.type, EVENTS.c.customer_id, case((first_in_run == 1, 1), else_=0).label("first"))
             .where(EVENTS.c.run_id == run_id, EVENTS.c.type.in_(types), EVENTS.c.occurred_at >= as_of - FEEDBACK_SKEW, ~never_mailed()))
    if until is not None:
        query = query.where(EVENTS.c.occurred_at <= until)
    rows = query.subquery()
    out: dict[str | None, dict[str, int]] = {None: dict.fromkeys(FEEDBACK, 0)}
    for message_id, kind, customers, first in conn.execute(
        select(rows.c.message_id, rows.c.type, func.count(func.distinct(rows.c.customer_id)), func.sum(rows.c.first))
        .group_by(rows.c.message_id, rows.c.type)
    ):
        if message_id is not None:
            out.setdefault(message_id, dict.fromkeys(FEEDBACK, 0))[types[kind]] = customers
        out[None][types[kind]] += int(first)
    return out


def _histograms(conn, run_id: str, bins: int) -> dict[str, dict[str, list[int]]]:
    """Decisions per (message, action, score bin); scores are in [0, 1], the last bin holds 1.0."""
    scaled = DEC.c.score * bins
    # PostgreSQL rounds a float cast to integer, SQLite truncates (and may lack floor()).
    whole = func.floor(scaled) if conn.dialect.name != "sqlite" else scaled
    bin_ = case((DEC.c.score >= 1.0, bins - 1), (DEC.c.score <= 0.0, 0), else_=cast(whole, Integer)).label("bin")
    out: dict[str, dict[str, list[int]]] = {}
    for message_id, action, b, n in conn.execute(
        select(DEC.c.message_id, DEC.c.action, bin_, func.count()).where(DEC.c.run_id == run_id).group_by(DEC.c.message_id, DEC.c.action, bin_)
    ):
        per = out.setdefault(message_id, {a: [0] * bins for a in ACTIONS})
        per.setdefault(action, [0] * bins)[min(max(int(b), 0), bins - 1)] += n
    return out


def _ledger_thresholds(conn, run_id: str) -> dict[str, float]:
    """The threshold each message was planned with, as logged by LOW_RELEVANCE (one row per message)."""
    first = (
        select(DEC.c.message_id, func.min(DEC.c.id).label("id"))
        .where(DEC.c.run_id == run_id, DEC.c.reasons.contains("LOW_RELEVANCE"))
        .group_by(DEC.c.message_id)
        .subquery()
    )
    out = {}
    for message_id, features in conn.execute(select(DEC.c.message_id, DEC.c.features).join(first, and_(first.c.id == DEC.c.id))):
        if isinstance(features, str):  # a JSON column read through a text path
            features = json.loads(features)
        if features and features.get("min_relevance") is not None:
            out[message_id] = float(features["min_relevance"])
    return out


def _campaign(project, name: str):
    if project is None:
        return None

    try:
        return load_campaign(project, name)
    except NotFound:
        return None  # the campaign file is gone (or the run was imported): the ledger is all there is


def _campaign_thresholds(project, name: str) -> dict[str, float]:
    camp = _campaign(project, name)
    return {m.id: float(m.policy.min_relevance) for m in camp.messages} if camp else {}


def _message_order(project, campaign: str, present: set[str]) -> list[str]:
    """The campaign file's message order (what a marketer knows), then any others alphabetically."""
    camp = _campaign(project, campaign)
    known = [m.id for m in camp.messages if m.id in present] if camp else []
    return known + sorted(present - set(known))


def _in_code_order(counts: dict[str, int]) -> dict[str, int]:
    order = {c: i for i, c in enumerate([*REASON_CODES, ARBITRATION_LOST, HOLDOUT])}
    return dict(sorted(counts.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def _incrementality(engine, run, window: timedelta, confidence: float) -> list[dict]:
    """Lift of this run and the runs before it that have hold-outs and a closed outcome window, newest first."""
    with engine.connect() as conn:
        as_of = dict(conn.execute(select(RUNS.c.id, RUNS.c.as_of).where(RUNS.c.as_of <= run["as_of"])).all())
    entries = [e for e in incrementality(engine, None, window, confidence=confidence) if e["run"] in as_of]
    entries.sort(key=lambda e: (-as_of[e["run"]].timestamp(), e["run"], e["message"]))
    for e in entries:
        e["as_of"] = as_of[e["run"]].isoformat()
        e["this_run"] = e["run"] == run["id"]
    return entries
