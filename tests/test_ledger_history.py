"""A ledger that holds many weeks: the plan writes and reads it through indexes that lead with the run.

Writing a plan must not cost more in a shop's fiftieth week than in its
first, nor must reading the sends still pending. These tests state the
structure that makes it so (which indexes exist, which index a statement
can use) and that the answers are those of a plan that reads everything.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import func, inspect, select, text

import relmail.planning.run as plan_module
from relmail.planning.pending import pending_statement
from relmail.planning.run import plan
from relmail.planning.runs import list_runs
from relmail.planning.why import explain
from relmail.store.customer_rows import latest_run
from relmail.store.models import NOT_SUPPRESSED, Decision, Run

AS_OF = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
WINDOW = "2026-W48"
DEC, RUNS = Decision.__table__, Run.__table__


@pytest.fixture
def demo_shop(project, engine):
    from relmail.demo import generate

    generate(engine, customers=1200, seed=7, as_of=AS_OF)
    return project


def test_every_index_of_the_decisions_leads_with_the_run(engine):
    found = inspect(engine)
    indexes = found.get_indexes("decisions") + [{"name": u["name"], "column_names": u["column_names"]}
                                                for u in found.get_unique_constraints("decisions")]
    firsts = {ix["name"]: ix["column_names"][0] for ix in indexes}
    assert "ix_decisions_not_suppressed" in firsts and "uq_decisions_run_customer_message" in firsts
    assert set(firsts.values()) == {"run_id"}, firsts


def _explain(conn, stmt) -> str:
    sql = str(stmt.compile(conn, compile_kwargs={"literal_binds": True}))
    if conn.dialect.name == "sqlite":
        return " ".join(str(r[-1]) for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
    # Whether the index can serve the statement, whatever a small table's statistics would choose.
    conn.execute(text("SET LOCAL enable_seqscan = off"))
    return " ".join(r[0] for r in conn.execute(text("EXPLAIN " + sql)))


def test_pending_sends_are_read_from_the_sends_index_within_the_range(engine):
    with engine.begin() as conn:
        shown = _explain(conn, pending_statement("weekly:2026-W48", AS_OF, "UTC", ("C0000100", "C0000200")))
    assert "ix_decisions_not_suppressed" in shown, shown


def test_a_range_of_a_plan_counts_the_pending_sends_of_its_customers_as_one_process_does(demo_shop, engine, monkeypatch):
    weekly = (demo_shop.campaigns_dir / "weekly.yml").read_text(encoding="utf-8")
    other = weekly
    for mid in ("ebike-launch", "lock-tip", "welcome-offer", "service-reminder", "newsletter"):
        other = other.replace(f"- id: {mid}\n", f"- id: {mid}-2\n")
    assert other != weekly
    (demo_shop.campaigns_dir / "other.yml").write_text(other, encoding="utf-8")
    later = AS_OF + timedelta(hours=1)
    alone = plan(demo_shop, engine, "other", WINDOW, as_of=later, dry_run=True, workers=1)
    first = plan(demo_shop, engine, "weekly", WINDOW, as_of=AS_OF)  # written, not sent: its sends are pending
    single = plan(demo_shop, engine, "other", WINDOW, as_of=later, dry_run=True, workers=1)
    monkeypatch.setattr(plan_module, "MIN_PARTITION", 100)
    split = plan(demo_shop, engine, "other", WINDOW, as_of=later, dry_run=True, workers=2)
    assert split.partitions == 2
    key = lambda d: sorted(zip(d.customer_id.tolist(), d.message_id.tolist(), d.action.tolist(), d.reasons.tolist(),  # noqa: E731
                               d.features.tolist()))
    assert key(split.decisions) == key(single.decisions)
    # The pending sends did count, in both halves of the customers: capped now, not without the first run.
    sent = np.unique(first.decisions.customer_id[first.decisions.action == "send"].astype(str))
    newly = np.setdiff1d(_capped(split), _capped(alone))
    half = sent[len(sent) // 2]
    assert np.isin(newly, sent).all()
    assert (newly < half).any() and (newly >= half).any()


def _capped(result) -> np.ndarray:
    d = result.decisions
    return np.unique(d.customer_id[np.char.find(d.reasons.astype(str), "FREQUENCY_CAP") >= 0].astype(str))


def test_a_customers_decisions_are_found_in_the_latest_run_holding_them(demo_shop, engine):
    first = plan(demo_shop, engine, "weekly", WINDOW, as_of=AS_OF)
    customer = str(first.decisions.customer_id[0])
    second = plan(demo_shop, engine, "weekly", "2026-W49", as_of=AS_OF + timedelta(days=7))
    assert customer in set(second.decisions.customer_id.tolist())
    with engine.connect() as conn:
        assert latest_run(conn, DEC, customer) == second.run_id
        assert latest_run(conn, DEC, "nobody") is None
    facts, explanations = explain(engine, customer)
    assert facts["run"] == second.run_id and {e.run_id for e in explanations} == {second.run_id}
    with engine.begin() as conn:
        conn.execute(DEC.delete().where(DEC.c.run_id == second.run_id, DEC.c.customer_id == customer))
    assert explain(engine, customer)[0]["run"] == first.run_id
    with engine.connect() as conn:
        assert conn.execute(select(RUNS.c.id).order_by(RUNS.c.as_of)).scalars().all()[-2:] == [first.run_id, second.run_id]


def test_runs_list_counts_each_action_as_the_rows_do_from_the_indexes(demo_shop, engine):
    first = plan(demo_shop, engine, "weekly", WINDOW, as_of=AS_OF)
    second = plan(demo_shop, engine, "weekly", "2026-W49", as_of=AS_OF + timedelta(days=7))
    listed = {r.id: r.as_dict() for r in list_runs(engine)}
    with engine.connect() as conn:
        rows = conn.execute(select(DEC.c.run_id, DEC.c.action, func.count()).group_by(DEC.c.run_id, DEC.c.action)).all()
    for run in (first, second):
        counted = {a: n for r, a, n in rows if r == run.run_id}
        assert {a: listed[run.run_id][a] for a in ("send", "holdout", "suppress")} == {
            a: counted.get(a, 0) for a in ("send", "holdout", "suppress")}
        assert counted["send"] and counted["holdout"] and counted["suppress"]
    if engine.dialect.name == "sqlite":  # the counts never read a decision row
        with engine.connect() as conn:
            for stmt in (select(func.count()).where(DEC.c.run_id.in_([first.run_id])),
                         select(DEC.c.action, func.count()).where(DEC.c.run_id.in_([first.run_id]),
                                                                  text(f"decisions.{NOT_SUPPRESSED}")).group_by(DEC.c.action)):
                shown = _explain(conn, stmt)
                assert "COVERING INDEX" in shown, shown
