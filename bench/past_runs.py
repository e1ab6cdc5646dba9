"""A ledger with history for ``bench_plan.py --past-runs N``: the N weeks before the measured window, planned and sent.

A shop that has used relmail for a while holds every earlier week's
decisions (about 2.5 per customer) and the deliveries of its sends. The
measured plan reads that ledger (sends still pending count against
frequency caps) and writes into its indexes, so its cost must not grow with
the weeks the ledger holds. The past weeks here are copies of one plan of
the measured window under the earlier windows' run ids, their sends
delivered (``accepted``): the same rows a real ledger would hold, at the
cost of SQL copies instead of N full plans. Created once per store and kept.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from sqlalchemy import String, cast, insert, literal, select

from relmail.store.models import Decision, Delivery, Run

RUNS, DEC, DEL = Run.__table__, Decision.__table__, Delivery.__table__
DECISION_COLUMNS = ("customer_id", "message_id", "action", "score", "expected_value", "reasons", "features", "created_at")


def windows_before(window: str, n: int) -> list[str]:
    """The ``n`` ISO weeks before ``window`` (``2026-W48``), most recent first."""
    monday = datetime.strptime(window + "-1", "%G-W%V-%u")
    out = []
    for k in range(1, n + 1):
        year, week, _ = (monday - timedelta(weeks=k)).isocalendar()
        out.append(f"{year}-W{week:02d}")
    return out


def ensure(engine, campaign: str, window: str, as_of: datetime, n: int, plan_once) -> float | None:
    """Give the store exactly the ``n`` past runs of ``campaign`` before ``window``; seconds spent, None if they were there.

    ``plan_once()`` writes a plan of ``window`` (run ``campaign:window``), the rows copied; the caller clears it.
    """
    wanted = {f"{campaign}:{w}": (w, as_of - timedelta(weeks=k)) for k, w in enumerate(windows_before(window, n), start=1)}
    measured = f"{campaign}:{window}"
    with engine.connect() as conn:
        have = {rid for (rid,) in conn.execute(select(RUNS.c.id).where(RUNS.c.campaign == campaign, RUNS.c.id != measured))}
    if have == set(wanted):
        return None
    started = time.perf_counter()
    with engine.begin() as conn:
        for rid in have - set(wanted):
            _drop(conn, rid)
    missing = [rid for rid in wanted if rid not in have]
    if missing:
        plan_once()
    for rid in missing:
        w, at = wanted[rid]
        with engine.begin() as conn:
            conn.execute(insert(RUNS).values(id=rid, campaign=campaign, window=w, as_of=at, seed=0, status="done",
                                             config_hash="", created_at=at, updated_at=at))
            source = select(literal(rid), *[DEC.c[c] for c in DECISION_COLUMNS]).where(DEC.c.run_id == measured).order_by(DEC.c.id)
            conn.execute(insert(DEC).from_select(["run_id", *DECISION_COLUMNS], source))
            sends = select(DEC.c.id, DEC.c.run_id, DEC.c.customer_id, DEC.c.message_id, literal("accepted"), literal("file"),
                           literal("<") + cast(DEC.c.id, String) + literal("@bench.example>"), literal(1), DEC.c.created_at).where(
                DEC.c.run_id == rid, DEC.c.action == "send")
            conn.execute(insert(DEL).from_select(
                ["decision_id", "run_id", "customer_id", "message_id", "status", "adapter", "rfc_message_id", "attempts",
                 "updated_at"], sends))
    return time.perf_counter() - started


def _drop(conn, run_id: str) -> None:
    conn.execute(DEL.delete().where(DEL.c.run_id == run_id))
    conn.execute(DEC.delete().where(DEC.c.run_id == run_id))
    conn.execute(RUNS.delete().where(RUNS.c.id == run_id))
