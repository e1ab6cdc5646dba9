"""The change log of events stays one row per customer, and every reader of it stays exact and incremental."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, text, update
from tests.test_feature_store import CONTEXTS, CUSTOMERS, T, _frames_equal, _import, _reset, _same

from relmail.cli import cli
from relmail.features import compute_features
from relmail.feedback.apply import apply_events
from relmail.feedback.events import FeedbackEvent
from relmail.store import aggregates, changes, columnar
from relmail.store.db import head_revision, make_engine, upgrade
from relmail.store.models import Event

EV = Event.__table__


def _log(engine) -> list[tuple[int, str | None]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT id, customer_id FROM event_changes ORDER BY id"))]


def _named(rows) -> list[str]:
    """The customers the rows name, in order (a PostgreSQL test database starts with the TRUNCATE row of its reset)."""
    return [c for _, c in rows if c is not None]


def _compacted(rows) -> bool:
    """No customer named twice, nothing before the latest TRUNCATE row."""
    named = [c for _, c in rows]
    after_truncate = named[max((i for i, c in enumerate(named) if c is None), default=0):]
    return len(after_truncate) == len(named) and len({c for c in named if c is not None}) == len([c for c in named if c])


def _purchases(days_ago: int) -> list[dict]:
    return [dict(event_id=f"E{i}", customer_id=CUSTOMERS[i % 4], type="purchase", days=days_ago + i, product_id="CB-1",
                 value_cents=1000 * (i + 1), message_id=None) for i in range(12)]


def _ping(engine, n: int) -> None:
    """A relmail writer of events (a webhook's open), which refreshes the aggregates and so consumes the log."""
    apply_events(engine, [FeedbackEvent(type="opened", occurred_at=T - timedelta(days=1), recipient="", provider="test",
                                        provider_event_id=f"ping{n}", customer_id="C4", run_id="r", message_id="news")])


def test_re_imports_leave_one_row_per_changed_customer(engine, tmp_path):
    """Twenty corrected re-imports of twelve events: 20 x 12 changes logged, one row per customer kept, exact features."""
    _reset(engine)
    columns = columnar.location(engine, tmp_path)
    _import(engine, tmp_path, _purchases(10), 0)
    _frames_equal(engine, T, columns)
    for step in range(1, 21):
        _import(engine, tmp_path, _purchases(10 + step), step)  # every event's time moved: 12 updates logged
        rows = _log(engine)
        assert len(_named(rows)) <= len(CUSTOMERS) and len(rows) <= len(CUSTOMERS) + 1, rows
        assert _compacted(rows)
        if step % 5 == 0:
            _frames_equal(engine, T, columns)
    with engine.connect() as conn:
        assert changes.latest(conn) >= 20 * 12, "ids keep counting: the latest row is never compacted away"
        assert aggregates.current(conn, T)


def test_a_copy_that_missed_compacted_rows_patches_to_a_fresh_copys_features(engine, tmp_path):
    """The rows between a stale copy's position and now were compacted: it still re-reads the right customers, no rebuild."""
    _reset(engine)
    stale, fresh = tmp_path / "stale.columns", tmp_path / "fresh.columns"
    _import(engine, tmp_path, _purchases(10), 0)
    assert columnar.update(engine, stale).action == "built"
    with engine.begin() as conn:  # C1's event changed behind relmail's back, then C2's, then C1's again
        conn.execute(update(EV).where(EV.c.event_id == "E0").values(value=1.0))
        conn.execute(update(EV).where(EV.c.event_id == "E1").values(value=2.0))
        conn.execute(update(EV).where(EV.c.event_id == "E4").values(value=3.0))
    before = _log(engine)
    _ping(engine, 0)  # the next relmail writer consumes the log and compacts it
    after = _log(engine)
    assert _named(before) == ["C1", "C2", "C1"]
    assert _named(after) == ["C2", "C1"] and after[-1] == before[-1], "C1's first row went, the latest stayed"
    patched = columnar.update(engine, stale)
    assert (patched.action, patched.customers_changed) == ("patched", 2)
    assert columnar.update(engine, fresh).action == "built"
    ids = np.array(CUSTOMERS)
    a = compute_features(engine, ids, T, CONTEXTS, columns=stale)
    b = compute_features(engine, ids, T, CONTEXTS, columns=fresh)
    assert a.source == b.source == "columns"
    _same(b, a)
    _same(compute_features(engine, ids, T, CONTEXTS, use_aggregates=False), a)
    assert a["monetary_365"][0] == 1.0 + 3.0 + 90.0, "E0 and E4 as changed, E8 as imported"


def test_a_copy_is_written_anew_when_the_changed_customers_hold_most_of_it(engine, tmp_path, monkeypatch):
    """The cost that decides is the rows a patch would read back (the changed customers' rows), not the rows logged."""
    monkeypatch.setattr(columnar, "REBUILD_MIN", 0)
    monkeypatch.setattr(columnar, "REBUILD_SHARE", 0.5)
    _reset(engine)
    columns = columnar.location(engine, tmp_path)
    _import(engine, tmp_path, _purchases(10), 0)
    columnar.update(engine, columns)
    for event_ids, action in ((["E0"], "patched"), (["E1", "E2", "E3", "E5", "E6"], "built")):
        with engine.begin() as conn:  # C1's 3 of the 12 rows, then C2, C3 and C4's 9
            conn.execute(update(EV).where(EV.c.event_id.in_(event_ids)).values(value=5.0))
        _ping(engine, len(event_ids))
        assert columnar.update(engine, columns).action == action
        _frames_equal(engine, T, columns)


def test_a_truncate_row_keeps_its_meaning(engine, tmp_path):
    """PostgreSQL logs a TRUNCATE of events as a row naming no customer: everything before it goes, it stays."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")
    _reset(engine)
    columns = columnar.location(engine, tmp_path)
    _import(engine, tmp_path, _purchases(10), 0)
    _import(engine, tmp_path, _purchases(20), 1)
    assert columnar.update(engine, columns).action == "built"
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE events"))
    _import(engine, tmp_path, _purchases(30)[:3], 2)  # new events, a refresh that finds the TRUNCATE row and rebuilds
    _import(engine, tmp_path, _purchases(40)[:3], 3)  # and changes them: C1..C3 named after it
    rows = _log(engine)
    assert rows[0][1] is None and sorted(c for _, c in rows[1:]) == ["C1", "C2", "C3"], rows
    assert columnar.update(engine, columns).action == "built", "a copy from before the TRUNCATE is written anew"
    _frames_equal(engine, T, columns)


def test_rebuild_features_reports_what_changes_behind_relmails_back_left_wrong_and_compacts_the_log(project, tmp_path):
    engine = make_engine(project.database_url)
    _reset(engine)
    _import(engine, tmp_path, _purchases(10), 0)
    with engine.begin() as conn:  # no relmail writer after these: the aggregates are behind, the log is long
        for value in range(5):
            conn.execute(update(EV).where(EV.c.event_id.in_(["E0", "E1"])).values(value=float(value)))
        conn.execute(delete(EV).where(EV.c.event_id == "E2"))
    assert len(_named(_log(engine))) == 11
    result = CliRunner().invoke(cli, ["--project", str(project.root), "db", "rebuild-features", "--json"])
    assert result.exit_code == 16, result.output
    report = json.loads(result.stdout)
    assert report["tables"]["customer_totals"]["different"] == 3, "C1 and C2's money, C3's lost purchase"
    assert report["tables"]["customer_products"]["different"] == 1, "C3 bought CB-1 once less"
    assert _named(_log(engine)) == ["C1", "C2", "C3"]
    _frames_equal(engine, T, columnar.location(engine, project.root))
    engine.dispose()


def test_upgrading_a_0008_store_with_a_long_log_compacts_it_and_keeps_every_reader_current(empty_db_url, tmp_path):
    engine = make_engine(empty_db_url)
    upgrade(engine, "0008")
    _reset(engine)
    _import(engine, tmp_path, _purchases(10), 0)
    stale, current = tmp_path / "stale.columns", tmp_path / "current.columns"
    columnar.update(engine, stale)
    with engine.begin() as conn:  # changes behind relmail's back: a row each, as 0008 kept them
        for value in range(6):
            conn.execute(update(EV).where(EV.c.customer_id.in_(["C1", "C3"])).values(value=float(value)))
        conn.execute(update(EV).where(EV.c.customer_id == "C2").values(value=9.0))
    columnar.update(engine, current)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM event_changes WHERE customer_id IS NOT NULL")).scalar_one() == 6 * 6 + 3
        latest = changes.latest(conn)
    assert upgrade(engine) == ("0008", head_revision())
    rows = _log(engine)
    assert sorted(_named(rows)) == ["C1", "C2", "C3"] and rows[-1][0] == latest
    with engine.connect() as conn:
        assert columnar.open_copy(current, conn) is not None, "a copy current before the upgrade is current after it"
        assert not aggregates.current(conn, T), "the changes behind relmail's back still need a refresh"
    _ping(engine, 1)
    assert columnar.update(engine, stale).action == "patched"
    _frames_equal(engine, T, stale)
    _frames_equal(engine, T, current)
    engine.dispose()


@st.composite
def _steps(draw):
    return draw(st.lists(st.one_of(
        st.tuples(st.just("import"), st.lists(st.tuples(st.integers(0, 7), st.sampled_from(CUSTOMERS), st.integers(0, 400)),
                                              min_size=1, max_size=6, unique_by=lambda r: r[0])),
        st.tuples(st.just("update"), st.integers(0, 7), st.integers(0, 400)),
        st.tuples(st.just("move"), st.integers(0, 7), st.sampled_from(CUSTOMERS)),
        st.tuples(st.just("delete"), st.integers(0, 7)),
        st.tuples(st.just("refresh"), st.just(None)),
        st.tuples(st.just("copy"), st.sampled_from(["weekly", "monthly"])),
        st.tuples(st.just("prune"), st.just(None)),
    ), min_size=1, max_size=12))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=_steps())
def test_any_mix_of_changes_refreshes_copies_and_compaction_keeps_features_exact(engine, tmp_path, monkeypatch, plan):
    """Imports, changes behind relmail's back, refreshes, two copies updated at their own pace, full compactions:
    the aggregates and both copies (whenever brought in step) give the raw scan's features, and the log stays compact."""
    monkeypatch.setattr(columnar, "BUILD_ROWS", 4)
    _reset(engine)
    copies = {name: tmp_path / f"{name}.columns" for name in ("weekly", "monthly")}
    for step, (kind, arg, *rest) in enumerate(plan):
        if kind == "import":
            _import(engine, tmp_path, [dict(event_id=f"E{i}", customer_id=c, type="purchase", days=d, product_id="CB-1",
                                            value_cents=100 * (i + 1) + step, message_id=None) for i, c, d in arg], step)
        elif kind in ("update", "move", "delete"):
            row = EV.c.event_id == f"E{arg}"
            with engine.begin() as conn:
                if kind == "update":
                    conn.execute(update(EV).where(row).values(occurred_at=T - timedelta(days=rest[0])))
                elif kind == "move":
                    conn.execute(update(EV).where(row).values(customer_id=rest[0]))
                else:
                    conn.execute(delete(EV).where(row))
        elif kind == "refresh":
            with engine.begin() as conn:
                aggregates.refresh(conn)
            assert _compacted(_log(engine))
        elif kind == "copy":
            columnar.update(engine, copies[arg])
            with engine.connect() as conn:
                readable = aggregates.current(conn, T)  # a plan reads a copy only over current aggregates
            copied = compute_features(engine, np.array(CUSTOMERS), T, CONTEXTS, columns=copies[arg])
            assert (copied.source == "columns") == readable
            _same(compute_features(engine, np.array(CUSTOMERS), T, CONTEXTS, use_aggregates=False), copied)
        else:
            with engine.begin() as conn:
                changes.compact(conn)
            assert _compacted(_log(engine))
    with engine.begin() as conn:
        aggregates.refresh(conn)
    assert len(_log(engine)) <= len(CUSTOMERS) + 1
    for root in copies.values():
        _frames_equal(engine, T, root)
        _frames_equal(engine, T + timedelta(days=45), root)
    with engine.begin() as conn:
        assert aggregates.rebuild(conn).total == 0
