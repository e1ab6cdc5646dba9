"""Runs in the ledger as things to list, look at, export and discard: ``relmail runs list|show|export|discard``.

A run is named by its id (``weekly:2026-W49``). :func:`resolve_run` also
takes ``last`` (the newest run of a campaign, given the campaign) and
``<campaign>:last``; newest means the latest ``as_of``, then the latest
created. :func:`list_runs` gives each run's counts, :func:`run_details`
one run's counts per message, reason and delivery state, and
:func:`export_run` writes one CSV row per decision with the same reason
sentences as ``relmail why``, and the customer's contact details only when
asked for. :func:`discard_run` removes a run nothing of which was sent.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, text

from ..campaigns import load_campaign
from ..errors import Conflict, NotFound, ValidationError
from ..rules import REASON_CODES
from ..store import locks
from ..store.models import NOT_SUPPRESSED, Decision, Delivery, Event, Run

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from ..project import Project

RUNS, DEC, DLV, EVENTS = Run.__table__, Decision.__table__, Delivery.__table__, Event.__table__
ACTIONS = ("send", "holdout", "suppress")
NEWEST = (RUNS.c.as_of.desc(), RUNS.c.created_at.desc(), RUNS.c.id.desc())


@dataclass
class RunSummary:
    """A run with its decision and delivery counts."""

    id: str
    campaign: str
    window: str
    as_of: datetime
    status: str
    created_at: datetime
    updated_at: datetime
    #: Action → decisions.
    actions: dict[str, int] = field(default_factory=dict)
    #: Delivery state → deliveries.
    deliveries: dict[str, int] = field(default_factory=dict)

    @property
    def decisions(self) -> int:
        return sum(self.actions.values())

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "campaign": self.campaign, "window": self.window, "as_of": self.as_of.isoformat(),
                "status": self.status, "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
                "decisions": self.decisions, **{a: self.actions.get(a, 0) for a in ACTIONS},
                "deliveries": dict(sorted(self.deliveries.items()))}


@dataclass
class RunDetails:
    """One run in detail: its summary, counts per message and per reason code."""

    summary: RunSummary
    #: Message id → {action → decisions} and its deliveries per state, in the order the messages were decided.
    messages: dict[str, dict[str, Any]]
    #: Reason code → decisions, in the registry's order.
    reasons: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {**self.summary.as_dict(), "messages": [{"message": m, **v} for m, v in self.messages.items()],
                "reasons": self.reasons}


def resolve_run(conn: Connection, text: str, campaign: str | None = None) -> str:
    """The run id ``text`` names: an id, ``last`` (with ``campaign``) or ``<campaign>:last``.

    Raises :class:`NotFound` naming the newest runs when there is no such run.
    """
    text = text.strip()
    name = campaign
    if text.endswith(":last"):
        name, text = text[: -len(":last")], "last"
    if text == "last":
        if not name:
            raise ValidationError("'last' needs a campaign: use CAMPAIGN:last or --campaign")
        found = conn.execute(select(RUNS.c.id).where(RUNS.c.campaign == name).order_by(*NEWEST).limit(1)).scalar()
        if found is None:
            raise NotFound(f"campaign '{name}' has no run in the ledger yet{_newest(conn, None)}")
        return found
    if conn.execute(select(RUNS.c.id).where(RUNS.c.id == text)).first() is None:
        raise NotFound(f"no run '{text}' in the ledger{_newest(conn, name)}")
    return text


def discard_run(engine: Engine, run: str, campaign: str | None = None, timeout: timedelta = locks.DEFAULT_TIMEOUT) -> dict[str, Any]:
    """Remove a run nothing of which was sent: its decisions, its planned deliveries and the run itself.

    For a plan written by mistake (a wrong window, a campaign file not
    finished): its decisions would otherwise count as pending sends in the
    frequency caps of every later plan. Under the run's lock, so no plan or
    send of it runs meanwhile; refused (:class:`Conflict`) once any e-mail of
    the run was handed over or attempted, since the ledger is what keeps a
    later send from mailing a customer twice. Returns the run id and what was
    removed. A run imported with ``relmail runs import`` can be discarded
    after its outcome events were imported (they stay), so a corrected file
    can be imported in its place.
    """
    with engine.connect() as conn:
        run_id = resolve_run(conn, run, campaign)
    with locks.acquire(engine, run_id, timeout=timeout, heartbeat=False), engine.begin() as conn:
        started = conn.execute(select(DLV.c.status, func.count()).where(DLV.c.run_id == run_id, DLV.c.status != "planned")
                               .group_by(DLV.c.status)).all()
        status = conn.execute(select(RUNS.c.status).where(RUNS.c.id == run_id)).scalar_one()
        # An imported run was sent by another system: its events (outcomes, unsubscribes) stay in the
        # store and keep counting, so taking the run back to import a corrected file mails nobody twice.
        sent = 0 if status == "imported" else conn.execute(
            select(func.count()).select_from(EVENTS).where(EVENTS.c.run_id == run_id)).scalar_one()
        if started or sent:
            what = ", ".join(f"{n:,} {status}" for status, n in sorted(started)) or f"{sent:,} events"
            raise Conflict(f"run {run_id} has e-mails handed over or attempted ({what}): it stays in the ledger, "
                           "which keeps a later send from mailing anyone twice")
        deliveries = conn.execute(delete(DLV).where(DLV.c.run_id == run_id)).rowcount
        decisions = conn.execute(delete(DEC).where(DEC.c.run_id == run_id)).rowcount
        conn.execute(delete(RUNS).where(RUNS.c.id == run_id))
    return {"run": run_id, "decisions": decisions, "deliveries": deliveries}


def _newest(conn, campaign: str | None) -> str:
    q = select(RUNS.c.id).order_by(*NEWEST).limit(5)
    if campaign:
        q = q.where(RUNS.c.campaign == campaign)
    known = conn.execute(q).scalars().all()
    return f" (newest: {', '.join(known)})" if known else " (the ledger has no runs yet: relmail plan first)"


def list_runs(engine: Engine, campaign: str | None = None, limit: int | None = 20) -> list[RunSummary]:
    """The newest runs first (of ``campaign``, or every campaign), at most ``limit`` (None: all)."""
    q = select(RUNS).order_by(*NEWEST)
    if campaign:
        q = q.where(RUNS.c.campaign == campaign)
    if limit is not None:
        q = q.limit(limit)
    with engine.connect() as conn:
        runs = [_summary(r) for r in conn.execute(q).mappings()]
        if runs:
            by_id = {r.id: r for r in runs}
            ids = list(by_id)
            # From the indexes, not the rows (a run of a million customers is 2.5M rows): every decision
            # through the unique index, sends and hold-outs through their partial index, the rest suppressed.
            totals = dict(conn.execute(select(DEC.c.run_id, func.count()).where(DEC.c.run_id.in_(ids)).group_by(DEC.c.run_id)).all())
            for run_id, action, n in conn.execute(select(DEC.c.run_id, DEC.c.action, func.count())
                                                  .where(DEC.c.run_id.in_(ids), text(f"decisions.{NOT_SUPPRESSED}"))
                                                  .group_by(DEC.c.run_id, DEC.c.action)):
                by_id[run_id].actions[action] = n
            for run_id, n in totals.items():
                rest = n - sum(by_id[run_id].actions.values())
                if rest:
                    by_id[run_id].actions["suppress"] = rest
            for run_id, status, n in conn.execute(select(DLV.c.run_id, DLV.c.status, func.count()).where(DLV.c.run_id.in_(ids))
                                                  .group_by(DLV.c.run_id, DLV.c.status)):
                by_id[run_id].deliveries[status] = n
    return runs


def run_details(engine: Engine, run: str, campaign: str | None = None, project: Project | None = None) -> RunDetails:
    """Counts of one run (``run`` as :func:`resolve_run` takes it) per message, reason and delivery state.

    Messages come in the order of the campaign's file when ``project`` has it
    (the order a marketer knows), else by name.
    """
    with engine.connect() as conn:
        run_id = resolve_run(conn, run, campaign)
        summary = _summary(conn.execute(select(RUNS).where(RUNS.c.id == run_id)).mappings().one())
        patterns = conn.execute(select(DEC.c.message_id, DEC.c.action, DEC.c.reasons, func.count())
                                .where(DEC.c.run_id == run_id).group_by(DEC.c.message_id, DEC.c.action, DEC.c.reasons)).all()
        deliveries = conn.execute(select(DLV.c.message_id, DLV.c.status, func.count()).where(DLV.c.run_id == run_id)
                                  .group_by(DLV.c.message_id, DLV.c.status)).all()
    present = {p[0] for p in patterns}
    known = []
    # Without the campaign file (gone, or the run was imported) the ledger is all there is.
    with contextlib.suppress(NotFound):
        if project is not None:
            known = [m.id for m in load_campaign(project, summary.campaign).messages if m.id in present]
    messages = {m: {**dict.fromkeys(ACTIONS, 0), "deliveries": {}} for m in known + sorted(present - set(known))}
    reasons: Counter = Counter()
    for message_id, action, codes, n in patterns:
        messages[message_id][action] = messages[message_id].get(action, 0) + n
        summary.actions[action] = summary.actions.get(action, 0) + n
        reasons.update(dict.fromkeys(codes.split(), n))
    for message_id, status, n in deliveries:
        messages.setdefault(message_id, {**dict.fromkeys(ACTIONS, 0), "deliveries": {}})["deliveries"][status] = n
        summary.deliveries[status] = summary.deliveries.get(status, 0) + n
    ordered = {c: reasons[c] for c in REASON_CODES if reasons.get(c)}
    ordered.update({c: n for c, n in sorted(reasons.items()) if c not in ordered})
    return RunDetails(summary, messages, ordered)


def _summary(row) -> RunSummary:
    return RunSummary(row["id"], row["campaign"], row["window"], row["as_of"], row["status"], row["created_at"], row["updated_at"])
