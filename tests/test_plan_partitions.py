"""A plan split into customer ranges decided by worker processes decides exactly what one process decides."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

import relmail.planning.run as plan_module
from relmail.cli import cli
from relmail.errors import ConfigError
from relmail.features import FeatureContext, compute_features
from relmail.planning.run import partition_ranges, plan
from relmail.store.models import Customer, Decision

AS_OF = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
WINDOW = "2026-W48"


@pytest.fixture
def demo_shop(project, engine):
    from relmail.demo import generate

    generate(engine, customers=1200, seed=7, as_of=AS_OF)
    return project


def _rows(result) -> list[tuple]:
    d = result.decisions.sorted()
    return list(zip(d.customer_id.tolist(), d.message_id.tolist(), d.action.tolist(), np.round(d.score, 6).tolist(),
                    np.round(d.expected_value, 6).tolist(), d.reasons.tolist(), d.features.tolist()))


def test_partition_ranges_cover_every_customer_once_and_keep_small_audiences_whole():
    for n, workers, size, most in [(10, 4, 3, 100), (100_001, 2, 50_000, 250_000), (7, 8, 1, 100), (0, 2, 1, 10),
                                   (1_000_000, 2, 50_000, 250_000), (1_000_000, 1, 50_000, 300_000), (999, 1, 100, 300)]:
        ranges = partition_ranges(n, workers, min_size=size, max_size=most)
        covered = [i for a, b in ranges for i in range(a, b)]
        assert covered == list(range(n))
        assert len(ranges) <= max(1, workers, -(-n // most))
        assert all(size <= b - a <= most for a, b in ranges) or len(ranges) == 1
    assert partition_ranges(99_999, 8) == [(0, 99_999)]  # under two partitions' worth: one process
    assert len(partition_ranges(250_000, 2)) == 2
    # A million customers: eight ranges of 125,000, so no process holds more than that at once.
    assert partition_ranges(1_000_000, 2) == [(i * 125_000, (i + 1) * 125_000) for i in range(8)]
    assert len(partition_ranges(1_000_000, 1)) == 8


def test_two_worker_processes_decide_exactly_what_one_process_decides(demo_shop, engine, monkeypatch):
    single = plan(demo_shop, engine, "weekly", WINDOW, as_of=AS_OF, dry_run=True, workers=1)
    assert single.partitions == 1
    monkeypatch.setattr(plan_module, "MIN_PARTITION", 100)  # the spawned workers do not need it: the parent splits
    split = plan(demo_shop, engine, "weekly", WINDOW, as_of=AS_OF, dry_run=True, workers=2)
    assert split.partitions == 2
    assert _rows(split) == _rows(single)
    assert [m.__dict__ for m in split.messages] == [m.__dict__ for m in single.messages]
    assert "partition overhead" in split.timings


def test_a_partitioned_plan_writes_the_same_ledger_in_one_run(demo_shop, engine, monkeypatch):
    monkeypatch.setattr(plan_module, "MIN_PARTITION", 100)
    result = plan(demo_shop, engine, "weekly", WINDOW, as_of=AS_OF, workers=2, keep_features=False)
    assert result.partitions == 2
    assert set(result.decisions.features.tolist()) == {"{}"}  # written, then let go
    with engine.connect() as conn:
        rows = conn.execute(select(Decision.customer_id, Decision.message_id, Decision.action, Decision.reasons)
                            .where(Decision.run_id == result.run_id).order_by(Decision.id)).all()
    # Inserted customer by customer (each one's messages in campaign order), whatever the split.
    campaign_order = {m: i for i, m in enumerate(dict.fromkeys(result.decisions.message_id.tolist()))}
    keys = [(c, campaign_order[m]) for c, m, _, _ in rows]
    assert keys == sorted(keys) and len({c for c, _ in keys}) > 1000
    single = plan(demo_shop, engine, "weekly", WINDOW, as_of=AS_OF, dry_run=True, workers=1)
    expected = {(c, m, a, r) for c, m, a, r in zip(single.decisions.customer_id, single.decisions.message_id,
                                                   single.decisions.action, single.decisions.reasons)}
    assert set(map(tuple, rows)) == expected and len(rows) == len(expected)


def _ledger_rows(engine, run_id) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(Decision.customer_id, Decision.message_id, Decision.action, Decision.score, Decision.reasons,
                   Decision.features).where(Decision.run_id == run_id).order_by(Decision.id))]


@pytest.mark.parametrize("workers", [1, 2])
def test_more_ranges_than_workers_write_the_same_ledger_as_one_range(demo_shop, engine, monkeypatch, workers):
    whole = plan(demo_shop, engine, "weekly", WINDOW, as_of=AS_OF, workers=1)
    assert whole.partitions == 1
    expected = _ledger_rows(engine, whole.run_id)
    monkeypatch.setattr(plan_module, "MIN_PARTITION", 100)
    monkeypatch.setattr(plan_module, "MAX_PARTITION", 300)  # 1,200 customers: four ranges of 300
    split = plan(demo_shop, engine, "weekly", WINDOW, as_of=AS_OF, workers=workers, replan=True)
    assert split.partitions == 4
    # Row for row in id order: the same decisions, features included, customer by customer.
    assert _ledger_rows(engine, split.run_id) == expected
    assert _rows(split) == _rows(whole)
    assert [m.__dict__ for m in split.messages] == [m.__dict__ for m in whole.messages]


def test_progress_is_reported_once_the_audience_is_known_and_after_every_range(demo_shop, engine, monkeypatch):
    monkeypatch.setattr(plan_module, "MIN_PARTITION", 100)
    monkeypatch.setattr(plan_module, "MAX_PARTITION", 300)
    calls = []
    result = plan(demo_shop, engine, "weekly", WINDOW, as_of=AS_OF, workers=1, progress=lambda *a: calls.append(a))
    audience = len(set(result.decisions.customer_id.tolist()))
    assert calls == [(0, audience)] + [(min(audience, 300 * i), audience) for i in range(1, 5)]


def test_cli_plan_shows_a_progress_bar_on_a_terminal_only(demo_shop, engine, monkeypatch):
    import relmail.cli.plan as cli_plan

    base = ["-p", str(demo_shop.root), "plan", "weekly", "--window", WINDOW, "--as-of", AS_OF.isoformat(), "--dry-run"]
    quiet = CliRunner().invoke(cli, base)
    assert quiet.exit_code == 0 and "Deciding customers" not in quiet.stderr
    monkeypatch.setattr(cli_plan, "show_progress", lambda: True)
    shown = CliRunner().invoke(cli, base)
    assert shown.exit_code == 0, shown.output
    assert "Deciding customers" in shown.stderr and "Deciding customers" not in shown.stdout
    as_json = CliRunner().invoke(cli, base + ["--json"])
    assert "Deciding customers" not in as_json.stderr  # machine output stays clean


def test_a_range_that_fails_after_others_were_written_leaves_no_plan(demo_shop, engine, monkeypatch):
    monkeypatch.setattr(plan_module, "MIN_PARTITION", 100)
    monkeypatch.setattr(plan_module, "MAX_PARTITION", 300)
    real = plan_module.decide_partition
    calls = []

    def third_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the database went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(plan_module, "decide_partition", third_fails)
    with pytest.raises(RuntimeError, match="went away"):
        plan(demo_shop, engine, "weekly", WINDOW, as_of=AS_OF, workers=1)
    assert len(calls) == 3  # two ranges were decided and written before the failure
    run_id = plan_module.run_id_for("weekly", WINDOW)
    with engine.connect() as conn:
        assert conn.execute(select(Decision.id).where(Decision.run_id == run_id).limit(1)).first() is None
        assert conn.execute(select(plan_module.RUNS.c.id).where(plan_module.RUNS.c.id == run_id)).first() is None
    monkeypatch.setattr(plan_module, "decide_partition", real)
    assert plan(demo_shop, engine, "weekly", WINDOW, as_of=AS_OF, workers=1).partitions == 4  # not refused: no run exists


def test_features_of_a_bounded_range_equal_those_rows_of_the_whole_audience(demo_shop, engine):
    with engine.connect() as conn:
        ids = np.array(sorted(conn.execute(select(Customer.id)).scalars()))
    contexts = {"launch": FeatureContext(topic="promotions", categories=("e-bikes",), products=("EB-200",))}
    whole = compute_features(engine, ids, AS_OF, contexts)
    part = ids[300:700]  # a range, 400 of 1,200 customers: served by a BETWEEN, not a temporary table
    bounded = compute_features(engine, part, AS_OF, contexts, bounded=True)
    assert list(bounded.columns) == list(whole.columns)
    for name in whole.columns:
        # PostgreSQL may add up floats (money) in another order for another plan: equal to the last bits.
        np.testing.assert_allclose(bounded[name], whole[name][300:700], rtol=1e-12, atol=0, err_msg=name)


def test_cli_plan_takes_workers_and_refuses_dask_on_sqlite(demo_shop, engine, db_url):
    runner = CliRunner()
    base = ["-p", str(demo_shop.root), "plan", "weekly", "--window", WINDOW, "--as-of", AS_OF.isoformat(), "--dry-run"]
    ok = runner.invoke(cli, base + ["--workers", "2", "--json"])
    assert ok.exit_code == 0, ok.output
    assert '"partitions": 1' in ok.output  # 1,200 customers: not worth a second process
    if db_url.startswith("sqlite"):
        bad = runner.invoke(cli, base + ["--executor", "dask", "--scheduler", "tcp://127.0.0.1:1"])
        assert bad.exit_code == ConfigError.exit_code, bad.output
        assert "PostgreSQL" in bad.output and "Traceback" not in bad.output


@settings(max_examples=200, deadline=None)
# No NUL: NumPy str arrays drop trailing NULs (and the importer refuses NUL in every text field).
@given(st.lists(st.lists(st.text(st.characters(blacklist_characters="\x00"), min_size=1, max_size=4), max_size=12), max_size=5))
def test_the_audience_is_the_sorted_union_of_every_message_audience(audiences):
    """Each message's audience comes sorted and unique; the plan's audience holds every id once, sorted."""
    from relmail.planning.run import _union

    arrays = [np.unique(np.array(a, dtype=str)) for a in audiences]
    got = _union(arrays)
    assert got.tolist() == sorted(set().union(*audiences))
