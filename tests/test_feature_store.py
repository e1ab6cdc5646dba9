"""The per-customer aggregates (feature store): same features as the raw events, kept by every writer, rebuilt on demand."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, insert, select, text, update

from relmail.cli import cli
from relmail.features import FeatureContext, FeatureSettings, compute_features
from relmail.feedback.apply import apply_events
from relmail.feedback.events import FeedbackEvent
from relmail.importers import import_file
from relmail.sending import ledger
from relmail.store import aggregates, changes, columnar
from relmail.store.erasure import forget
from relmail.store.models import (
    Customer,
    CustomerMessage,
    CustomerProduct,
    CustomerTotals,
    Decision,
    Delivery,
    Event,
    Meta,
    Product,
    Run,
)

#: The plans' as-of time: 00:30 on Wednesday 1 April 2026 in Amsterdam, three days after Europe's spring clock change,
#: so the caps' 7-day window there (26 March to 1 April) is a DST week of 167 hours.
T = datetime(2026, 3, 31, 22, 30, tzinfo=UTC)
CUSTOMERS = ["C1", "C2", "C3", "C4"]
PRODUCTS = [
    dict(id="EB-200", name="E-bike", category="e-bikes", price=2499.0, url=None, features=["app"]),
    dict(id="CB-1", name="City bike", category="city-bikes", price=799.0, url=None, features=[]),
    dict(id="LOCK-S1", name="Lock", category="accessories", price=129.0, url=None, features=["share-access"]),
]
MESSAGES = ["ebike", "lock", "news"]
CONTEXTS = {
    "ebike": FeatureContext(topic="promotions", categories=("e-bikes",), products=("EB-200",)),
    "lock": FeatureContext(topic="product-tips", products=("LOCK-S1",), feature="share-access"),
    "news": FeatureContext(topic="newsletter", repeat_after_days=14),
}
TOPICS = {"ebike": "promotions", "lock": "product-tips", "news": "newsletter"}


#: Time zones the calendar-day windows of the caps are tried in: UTC, and two with clock changes on
#: other dates and far apart in offset.
ZONES = ["UTC", "Europe/Amsterdam", "Pacific/Auckland"]


def _frames_equal(engine, as_of, columns=None, tz="UTC"):
    """The aggregates (and, with ``columns``, the columnar copy brought in step) give the raw scan's features: the raw
    scan's, returned."""
    ids = np.array(CUSTOMERS)
    settings = FeatureSettings(timezone=tz)
    maintained = compute_features(engine, ids, as_of, CONTEXTS, settings, use_aggregates=True)
    raw = compute_features(engine, ids, as_of, CONTEXTS, settings, use_aggregates=False)
    # Money summed per customer at refresh and summed again by the raw scan: another order of addition.
    _same(raw, maintained)
    if columns is None:
        return raw
    columnar.update(engine, columns)
    copied = compute_features(engine, ids, as_of, CONTEXTS, settings, columns=columns)
    with engine.connect() as conn:
        assert (copied.source == "columns") == aggregates.current(conn, as_of), copied.source
    _same(raw, copied)
    return raw


def _same(raw, copied):
    """Counts identical; sums (money, affinity, CLV) equal up to the order of addition."""
    for name, values in raw.columns.items():
        assert np.allclose(values, copied[name], rtol=1e-12, atol=1e-12, equal_nan=True), (name, values, copied[name])


def _reset(engine):
    with engine.begin() as conn:
        for model in (Delivery, Decision, Run, Event, CustomerTotals, CustomerProduct, CustomerMessage, Customer, Product):
            conn.execute(delete(model.__table__))
        conn.execute(insert(Product.__table__), PRODUCTS)
        conn.execute(insert(Customer.__table__), [
            dict(id=c, email=f"{c.lower()}@example.com", locale="en_GB", timezone="UTC", created_at=T - timedelta(days=900),
                 attributes={}) for c in CUSTOMERS])
        aggregates.rebuild(conn)


event_rows = st.lists(st.fixed_dictionaries({
    # A small pool of event ids: later imports update (and move) earlier events.
    "event_id": st.one_of(st.none(), st.sampled_from([f"E{i}" for i in range(6)])),
    "customer_id": st.sampled_from(CUSTOMERS),
    "type": st.sampled_from(["purchase", "view", "usage", "email_sent", "email_opened", "email_clicked"]),
    # Anywhere in the history; often within the caps' windows, whose edges are local midnights.
    "days": st.one_of(st.integers(0, 1200), st.integers(0, 35)),
    # The time of day: sends just before and after a local midnight (a cap window's edge) in every zone.
    "minutes": st.integers(0, 24 * 60 - 1),
    "product_id": st.sampled_from([None, "EB-200", "CB-1", "LOCK-S1"]),
    "value_cents": st.one_of(st.none(), st.integers(0, 300_000)),
    "message_id": st.sampled_from([None, *MESSAGES]),
}), min_size=1, max_size=12)

steps = st.lists(st.one_of(
    st.tuples(st.just("import"), event_rows),
    st.tuples(st.just("feedback"), st.lists(st.tuples(st.sampled_from(CUSTOMERS), st.sampled_from(["opened", "clicked", "delivered"]),
                                                      st.integers(0, 200)), min_size=1, max_size=4)),
    st.tuples(st.just("send"), st.lists(st.tuples(st.sampled_from(CUSTOMERS), st.sampled_from(MESSAGES)), min_size=1, max_size=4,
                                        unique=True)),
    st.tuples(st.just("forget"), st.sampled_from(CUSTOMERS)),
), min_size=1, max_size=5)


def _import(engine, tmp_path, rows, step):
    path = tmp_path / f"events-{step}.jsonl"
    seen, lines = set(), []
    for r in rows:
        if r["event_id"] is not None and r["event_id"] in seen:
            continue  # one file may not repeat an id
        seen.add(r["event_id"])
        lines.append(json.dumps({
            "event_id": r["event_id"], "customer_id": r["customer_id"], "type": r["type"],
            "occurred_at": (T - timedelta(days=r["days"], hours=step, minutes=r.get("minutes", 0))).isoformat(),
            "product_id": r["product_id"], "value": None if r["value_cents"] is None else r["value_cents"] / 100,
            "message_id": r["message_id"], "topic": TOPICS.get(r["message_id"]),
            "feature": "share-access" if r["type"] == "usage" else None,
        }))
    path.write_text("\n".join(lines) + "\n")
    import_file(engine, "events", path)


#: A purchase of C1 and an e-mail to C2: the events most copy tests start from.
PURCHASE_AND_SEND = [
    dict(event_id="E1", customer_id="C1", type="purchase", days=10, product_id="EB-200", value_cents=10000, message_id=None),
    dict(event_id="E2", customer_id="C2", type="email_sent", days=3, product_id=None, value_cents=None, message_id="news"),
]


def _copy_of(engine, tmp_path, extra=()):
    """An emptied store given :data:`PURCHASE_AND_SEND` (and ``extra`` rows), and its columnar copy, built: the copy's root."""
    _reset(engine)
    columns = columnar.location(engine, tmp_path)
    _import(engine, tmp_path, [*PURCHASE_AND_SEND, *extra], 0)
    columnar.update(engine, columns)
    return columns


def _send(engine, pairs, step):
    run_id = f"weekly:step{step}"
    now = T - timedelta(hours=step)
    with engine.begin() as conn:
        conn.execute(insert(Run.__table__).values(id=run_id, campaign="weekly", window=f"w{step}", as_of=now, seed=1,
                                                  status="planned", config_hash="", created_at=now, updated_at=now))
        conn.execute(insert(Decision.__table__), [
            dict(run_id=run_id, customer_id=c, message_id=m, action="send", score=1.0, expected_value=1.0, reasons="",
                 features={}, created_at=now) for c, m in pairs])
    ledger.prepare(engine, run_id, now)
    with engine.connect() as conn:
        ids = conn.execute(select(Delivery.__table__.c.id).where(Delivery.__table__.c.run_id == run_id)).scalars().all()
    ledger.record(engine, [ledger.Settlement(i, "accepted", provider_id=f"p{i}") for i in ids], now, TOPICS)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steps, tz=st.sampled_from(ZONES))
def test_maintained_features_equal_the_raw_scan(engine, tmp_path, monkeypatch, plan, tz):
    """After any mix of imports (with updates that move events), feedback, sends and erasures, the aggregates and the
    columnar copy (kept across examples: every reset is a change it must follow) agree with the raw scan at every as_of,
    with the caps' calendar days in any time zone."""
    # Tiny segments: builds write several, appends pile up and get merged.
    monkeypatch.setattr(columnar, "BUILD_ROWS", 4)
    monkeypatch.setattr(columnar, "MAX_SEGMENTS", 2)
    _reset(engine)
    columns = columnar.location(engine, tmp_path)
    for step, (kind, payload) in enumerate(plan):
        if kind == "forget":
            with engine.connect() as conn:
                known = conn.execute(select(Customer.__table__.c.id).where(Customer.__table__.c.id == payload)).first()
            if known is not None:
                forget(engine, payload, columns)
                with engine.begin() as conn:  # the person comes back: later steps may import their events again
                    conn.execute(insert(Customer.__table__).values(
                        id=payload, email=f"{payload.lower()}-again@example.com", locale="en_GB", timezone="UTC",
                        created_at=T - timedelta(days=10), attributes={}))
        elif kind == "import":
            _import(engine, tmp_path, payload, step)
        elif kind == "feedback":
            apply_events(engine, [FeedbackEvent(type=t, occurred_at=T - timedelta(days=d), recipient="", provider="test",
                                                provider_event_id=f"fb{step}-{i}", customer_id=c, run_id="r", message_id="news")
                                  for i, (c, t, d) in enumerate(payload)])
        else:
            _send(engine, payload, step)
        with engine.connect() as conn:
            assert aggregates.current(conn, T), "every writer keeps the aggregates current"
            assert not aggregates.current(conn, T - timedelta(days=2000)) or conn.execute(
                select(func.count()).select_from(Event.__table__)).scalar_one() == 0
        for as_of in (T, T + timedelta(hours=1), T + timedelta(days=45), T - timedelta(days=30)):
            _frames_equal(engine, as_of, columns, tz)
    with engine.begin() as conn:
        assert aggregates.rebuild(conn).total == 0, "nothing to correct after maintained writes"


def _sends_at(engine, tmp_path, sends):
    """Import ``email_sent`` events of (customer, message, local time in Amsterdam)."""
    zone = ZoneInfo("Europe/Amsterdam")
    path = tmp_path / "sends.jsonl"
    path.write_text("".join(json.dumps({
        "customer_id": c, "type": "email_sent", "message_id": m, "topic": TOPICS[m],
        "occurred_at": datetime(*moment, tzinfo=zone).isoformat()}) + "\n" for c, m, moment in sends))
    import_file(engine, "events", path)


def test_cap_windows_are_local_calendar_days_on_every_path(engine, tmp_path):
    """Sends at 23:30 and 00:30 on either side of the first midnight of the 7- and 30-day windows, and of the 14 days of
    a recurring message, count by their day in the project's time zone, in a DST week, alike through the raw scan, the
    aggregates and the columnar copy (T is 00:30 on Wednesday 1 April in Amsterdam: D-6 is 26 March, D-29 is 3 March)."""
    _reset(engine)
    columns = columnar.location(engine, tmp_path)
    _sends_at(engine, tmp_path, [
        ("C1", "ebike", (2026, 3, 2, 23, 30)), ("C1", "ebike", (2026, 3, 3, 0, 30)),  # D-30 and D-29
        ("C1", "ebike", (2026, 3, 25, 0, 32)),  # a week ago, two minutes after the plan's hour: D-7
        ("C1", "ebike", (2026, 3, 25, 23, 30)), ("C1", "ebike", (2026, 3, 26, 0, 30)),  # D-7 and D-6
        ("C2", "news", (2026, 3, 18, 23, 30)),  # D-14: a recurring message's issue of 14 days ago may go again
        ("C3", "news", (2026, 3, 19, 0, 30)),  # D-13
    ])
    amsterdam = _frames_equal(engine, T, columns, "Europe/Amsterdam")
    assert amsterdam["sends_7"].tolist() == [1, 0, 0, 0]
    assert amsterdam["sends_30"].tolist() == [4, 1, 1, 0]
    assert amsterdam["ebike.topic_sends_7"].tolist() == [1, 0, 0, 0]
    assert amsterdam["ebike.topic_sends_30"].tolist() == [4, 0, 0, 0]
    assert amsterdam["news.already_sent"].tolist() == [0, 0, 1, 0]
    # In UTC the plan's day is 31 March, and each of those sends lies an hour earlier (or two, in summer time).
    utc = _frames_equal(engine, T, columns, "UTC")
    assert utc["sends_7"].tolist() == [2, 0, 0, 0]
    assert utc["sends_30"].tolist() == [5, 1, 1, 0]
    assert utc["news.already_sent"].tolist() == [0, 1, 1, 0]


def test_writes_behind_relmails_back_fall_back_to_the_raw_scan(engine):
    _reset(engine)
    with engine.begin() as conn:
        conn.execute(insert(Event.__table__).values(customer_id="C1", type="purchase", occurred_at=T - timedelta(days=3),
                                                    product_id="EB-200", value=10.0))
    with engine.connect() as conn:
        assert not aggregates.current(conn, T)
    frame = compute_features(engine, np.array(CUSTOMERS), T, CONTEXTS)
    assert frame["orders_total"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert frame["ebike.owns_product"].tolist() == [1.0, 0.0, 0.0, 0.0]
    # The next relmail writer catches up with the events appended without it.
    apply_events(engine, [FeedbackEvent(type="opened", occurred_at=T - timedelta(days=1), recipient="", provider="test",
                                        provider_event_id="x", customer_id="C2", run_id="r", message_id="news")])
    with engine.connect() as conn:
        assert aggregates.current(conn, T)
        assert conn.execute(select(CustomerTotals.__table__.c.purchases).where(CustomerTotals.__table__.c.customer_id == "C1")).scalar_one() == 1
    _frames_equal(engine, T)


def test_a_delete_behind_relmails_back_that_keeps_the_highest_id_falls_back_to_the_raw_scan(engine):
    """The highest event id alone would not notice: the change log does, and the next writer recomputes the customer."""
    _reset(engine)
    with engine.begin() as conn:
        conn.execute(insert(Event.__table__), [
            dict(customer_id=c, type="purchase", occurred_at=T - timedelta(days=3), product_id="EB-200", value=10.0)
            for c in ("C1", "C2")])
        aggregates.refresh(conn, ["C1", "C2"])
        first = conn.execute(select(func.min(Event.__table__.c.id))).scalar_one()
        conn.execute(delete(Event.__table__).where(Event.__table__.c.id == first))  # C1's purchase, not the highest id
    with engine.connect() as conn:
        assert not aggregates.current(conn, T)
    frame = compute_features(engine, np.array(CUSTOMERS), T, CONTEXTS)
    assert frame["orders_total"].tolist() == [0.0, 1.0, 0.0, 0.0]
    apply_events(engine, [FeedbackEvent(type="opened", occurred_at=T - timedelta(days=1), recipient="", provider="test",
                                        provider_event_id="y", customer_id="C3", run_id="r", message_id="news")])
    with engine.connect() as conn:
        assert aggregates.current(conn, T)
        totals = CustomerTotals.__table__
        assert conn.execute(select(totals.c.purchases).where(totals.c.customer_id == "C1")).scalar() is None
    _frames_equal(engine, T)


def test_a_plan_before_the_latest_event_reads_raw_events(engine, tmp_path):
    _reset(engine)
    _import(engine, tmp_path, [dict(event_id="E1", customer_id="C1", type="purchase", days=0, product_id="EB-200",
                                    value_cents=100, message_id=None)], 0)
    with engine.connect() as conn:
        assert aggregates.current(conn, T)
        assert not aggregates.current(conn, T - timedelta(hours=1))
    frame = compute_features(engine, np.array(CUSTOMERS), T - timedelta(hours=1), CONTEXTS)
    assert frame["orders_total"][0] == 0.0, "no leakage of the later purchase through the aggregates"


def test_erasure_removes_the_customers_aggregates(engine, tmp_path):
    _reset(engine)
    _import(engine, tmp_path, [dict(event_id=None, customer_id="C2", type="purchase", days=5, product_id="CB-1",
                                    value_cents=79900, message_id=None)], 0)
    forget(engine, "C2")
    with engine.connect() as conn:
        for table in (CustomerTotals, CustomerProduct):
            assert conn.execute(select(func.count()).select_from(table.__table__)).scalar_one() == 0
        assert aggregates.current(conn, T)


def test_rebuild_features_corrects_a_corrupted_store_and_exits_16(project, tmp_path):
    from relmail.store.db import make_engine

    engine = make_engine(project.database_url)
    _reset(engine)
    _import(engine, tmp_path, [
        dict(event_id="E1", customer_id="C1", type="purchase", days=3, product_id="EB-200", value_cents=249900, message_id=None),
        dict(event_id="E2", customer_id="C2", type="email_sent", days=2, product_id=None, value_cents=None, message_id="news"),
        dict(event_id="E3", customer_id="C3", type="email_opened", days=1, product_id=None, value_cents=None, message_id="news"),
    ], 0)
    with engine.begin() as conn:  # corrupt on purpose: a wrong count, a lost row, a made-up row
        conn.execute(update(CustomerTotals.__table__).where(CustomerTotals.__table__.c.customer_id == "C1").values(purchases=7))
        conn.execute(delete(CustomerMessage.__table__))
        conn.execute(insert(CustomerProduct.__table__).values(customer_id="C4", product_id="CB-1", purchases=1))
    before = compute_features(engine, np.array(CUSTOMERS), T, CONTEXTS, use_aggregates=True)
    assert before["orders_total"][0] == 7.0, "the plan trusts the aggregates: why a corrupted store matters"
    runner = CliRunner()
    result = runner.invoke(cli, ["--project", str(project.root), "db", "rebuild-features", "--json"])
    assert result.exit_code == 16, result.output
    report = json.loads(result.stdout)
    assert report["tables"]["customer_totals"]["different"] == 1
    assert report["tables"]["customer_messages"]["missing"] == 1
    assert report["tables"]["customer_products"]["extra"] == 1
    assert report["corrected"] == 3
    assert report["columnar_copy"]["events"] == 3, "the columnar copy is written anew too"
    assert (Path(report["columnar_copy"]["path"]) / "current.json").exists()
    _frames_equal(engine, T)
    again = runner.invoke(cli, ["--project", str(project.root), "db", "rebuild-features"])
    assert again.exit_code == 0, again.output
    assert "matched the raw events" in again.output
    engine.dispose()


def test_the_aggregates_are_read_only_when_history_reaches_beyond_the_windows(engine, tmp_path):
    """A corrupted aggregate row shows which path a plan took: raw while all history fits the windows."""
    _reset(engine)
    total = CustomerTotals.__table__

    def corrupt():
        with engine.begin() as conn:
            conn.execute(update(total).where(total.c.customer_id == "C1").values(purchases=7))

    _import(engine, tmp_path, [dict(event_id=None, customer_id="C1", type="purchase", days=3, product_id="CB-1",
                                    value_cents=100, message_id=None)], 0)
    corrupt()
    assert compute_features(engine, np.array(CUSTOMERS), T, CONTEXTS)["orders_total"][0] == 1.0
    _import(engine, tmp_path, [dict(event_id=None, customer_id="C2", type="view", days=800, product_id="CB-1",
                                    value_cents=None, message_id=None)], 1)
    corrupt()
    assert compute_features(engine, np.array(CUSTOMERS), T, CONTEXTS)["orders_total"][0] == 7.0


def _copy_holds(columns, customer_id: str) -> bool:
    """Whether any file of the copy names ``customer_id`` (its customer dictionaries hold the ids)."""
    return any(customer_id in np.load(path).tolist() for path in columns.glob("*/customer.words.npy"))


def test_the_columnar_copy_follows_changes_to_older_events(engine, tmp_path):
    """An older event changed or deleted behind relmail's back, and an erasure, reach the copy (through the change log)."""
    _reset(engine)
    columns = columnar.location(engine, tmp_path)
    _import(engine, tmp_path, [
        dict(event_id="E1", customer_id="C1", type="purchase", days=10, product_id="EB-200", value_cents=10000, message_id=None),
        dict(event_id="E2", customer_id="C2", type="email_sent", days=3, product_id=None, value_cents=None, message_id="news"),
        dict(event_id="E3", customer_id="C3", type="view", days=20, product_id="EB-200", value_cents=None, message_id=None),
    ], 0)
    assert columnar.update(engine, columns).action == "built"
    assert compute_features(engine, np.array(CUSTOMERS), T, CONTEXTS, columns=columns).source == "columns"
    ev = Event.__table__
    with engine.begin() as conn:  # not through relmail: no aggregate refresh, no new event id
        conn.execute(update(ev).where(ev.c.event_id == "E1").values(value=250.0))
        conn.execute(delete(ev).where(ev.c.event_id == "E3"))
        aggregates.rebuild(conn)  # the aggregates are right again; only the copy is behind
    stale = compute_features(engine, np.array(CUSTOMERS), T, CONTEXTS, columns=columns)
    assert stale.source != "columns", "a copy that missed a change is not read"
    assert stale["monetary_365"][0] == 250.0
    done = columnar.update(engine, columns)
    assert (done.action, done.customers_changed) == ("patched", 2)
    fresh = compute_features(engine, np.array(CUSTOMERS), T, CONTEXTS, columns=columns)
    assert fresh.source == "columns" and fresh["monetary_365"][0] == 250.0 and fresh["ebike.category_affinity"][2] == 0.0
    _same(compute_features(engine, np.array(CUSTOMERS), T, CONTEXTS, use_aggregates=False), fresh)

    assert _copy_holds(columns, "C2")
    assert forget(engine, "C2", columns)["columnar_copy"] == "patched"
    assert not _copy_holds(columns, "C2"), "an erased customer's events leave the copy's files"
    assert compute_features(engine, np.array(CUSTOMERS), T, CONTEXTS, columns=columns)["sends_7"].tolist() == [0.0] * 4


def test_a_process_reads_a_copys_segments_once_and_lets_go_of_those_an_update_replaced(engine, tmp_path):
    """A plan's worker opens the copy once per range: the segments are opened once; after an erasure
    rewrote the copy, the next read holds only the current segments (the erased customer's are let go)."""
    columns = _copy_of(engine, tmp_path)
    with engine.connect() as conn:
        first, again = columnar.open_copy(columns, conn), columnar.open_copy(columns, conn)
    assert first.segments and all(a is b for a, b in zip(first.segments, again.segments, strict=True))
    forget(engine, "C2", columns)
    with engine.connect() as conn:
        after = columnar.open_copy(columns, conn)
    replaced = [s for s in first.segments if not s.path.exists()]
    assert replaced, "the erasure rewrote the segment holding the customer"
    held = [segment for _, segment in columnar._open[Path(columns)].values()]
    assert [s.path for s in held] == [s.path for s in after.segments]
    assert all(s.path.exists() for s in held), "a segment the erasure replaced is no longer held open"


def test_the_columnar_copy_reads_event_ids_a_deletion_freed(engine, tmp_path):
    """SQLite gives a new event the highest id + 1: once the latest events are deleted, ids the copy had come back."""
    _reset(engine)
    columns = columnar.location(engine, tmp_path)
    ev = Event.__table__

    def purchase(customer):
        return dict(customer_id=customer, type="purchase", occurred_at=T - timedelta(days=2), product_id="CB-1", value=1.0)

    with engine.begin() as conn:
        conn.execute(insert(ev), [purchase("C1"), purchase("C2")])
        aggregates.rebuild(conn)
    columnar.update(engine, columns)
    with engine.begin() as conn:  # the first event goes; the copy follows
        conn.execute(delete(ev).where(ev.c.customer_id == "C1"))
        aggregates.rebuild(conn)
    columnar.update(engine, columns)
    with engine.begin() as conn:  # the second goes too, and two new events take ids the copy knew
        conn.execute(delete(ev).where(ev.c.customer_id == "C2"))
        conn.execute(insert(ev), [purchase("C3"), purchase("C3")])
        aggregates.rebuild(conn)
    columnar.update(engine, columns)
    frame = compute_features(engine, np.array(CUSTOMERS), T, CONTEXTS, columns=columns)
    assert frame.source == "columns" and frame["frequency_365"].tolist() == [0.0, 0.0, 2.0, 0.0]



def test_each_postgresql_test_starts_with_the_aggregates_state_of_a_fresh_upgrade(db_url, reset_pg):
    """The fixture truncates tables with RESTART IDENTITY; a previous test's aggregates state, if kept,
    matched the restarted event ids by chance and made a stale store look current (a flaky feature test)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("each SQLite test gets a fresh copy of the upgraded template file")
    from relmail.store.db import make_engine

    eng = make_engine(db_url)
    with eng.begin() as conn:
        fresh = aggregates._state(conn)
        conn.execute(update(Meta.__table__).where(Meta.__table__.c.key == aggregates.STATE_KEY)
                     .values(value=json.dumps({"max_event_id": 7, "change_id": 3})))
        assert aggregates._state(conn) == (7, 3)
    reset_pg(db_url)
    with eng.connect() as conn:
        assert aggregates._state(conn) == fresh
    eng.dispose()


def _restore(engine, max_event_id: int, change_id: int) -> None:
    """What restoring a backup made at (``max_event_id``, ``change_id``) does to the store: later events and
    change-log rows are gone, and the ids after them are handed out again."""
    ev = Event.__table__
    with engine.begin() as conn:
        conn.execute(delete(ev).where(ev.c.id > max_event_id))
        conn.execute(text("DELETE FROM event_changes WHERE id > :c"), {"c": change_id})
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT setval('events_id_seq', :m)"), {"m": max_event_id})
            conn.execute(text("SELECT setval('event_changes_id_seq', greatest(:c, 1), :c > 0)"), {"c": change_id})
        aggregates.rebuild(conn)


@pytest.mark.parametrize("written_after", [1, 2, 3])
def test_a_copy_made_before_a_backup_was_restored_is_written_anew(engine, tmp_path, written_after):
    """A backup restored over the store keeps its identity; events written after the restore take the ids the
    copy holds for events the restore removed (as many, fewer or more of them). The copy must not be read as
    if it covered them."""
    _reset(engine)
    columns = columnar.location(engine, tmp_path)
    ev = Event.__table__

    def purchase(customer, days):
        return dict(customer_id=customer, type="purchase", occurred_at=T - timedelta(days=days), product_id="CB-1", value=1.0)

    with engine.begin() as conn:
        conn.execute(insert(ev), [purchase("C1", 9)])
        aggregates.rebuild(conn)
        backup = (aggregates.max_event_id(conn), changes.latest(conn))
    with engine.begin() as conn:  # written after the backup, and copied
        conn.execute(insert(ev), [purchase("C2", 3), purchase("C2", 2)])
        aggregates.rebuild(conn)
    columnar.update(engine, columns)
    _restore(engine, *backup)
    with engine.begin() as conn:
        conn.execute(insert(ev), [purchase("C3", 4 + n) for n in range(written_after)])
        aggregates.rebuild(conn)
    assert columnar.update(engine, columns).action == "built"
    frame = compute_features(engine, np.array(CUSTOMERS), T, CONTEXTS, columns=columns)
    assert frame.source == "columns" and frame["frequency_365"].tolist() == [1.0, 0.0, float(written_after), 0.0]


def test_a_copy_that_followed_a_deletion_a_restored_backup_undid_is_written_anew(engine, tmp_path):
    """An erasure after the backup, followed by the copy, then the backup restored (the customer's events back)
    and another change taking the change-log id the copy has seen: the copy must not stay without her events."""
    _reset(engine)
    columns = columnar.location(engine, tmp_path)
    ev = Event.__table__
    with engine.begin() as conn:
        conn.execute(insert(ev), [dict(customer_id=c, type="purchase", occurred_at=T - timedelta(days=d), product_id="CB-1",
                                       value=1.0) for c, d in (("C1", 9), ("C2", 5))])
        aggregates.rebuild(conn)
        backup = (aggregates.max_event_id(conn), changes.latest(conn))
    with engine.begin() as conn:
        conn.execute(delete(ev).where(ev.c.customer_id == "C1"))
        aggregates.rebuild(conn)
    columnar.update(engine, columns)
    with engine.begin() as conn:  # the restore brings C1's event back under its id, and the change log as it was
        conn.execute(insert(ev), [dict(id=1, customer_id="C1", type="purchase", occurred_at=T - timedelta(days=9),
                                       product_id="CB-1", value=1.0)])
    _restore(engine, *backup)
    with engine.begin() as conn:  # a change after the restore takes the change-log id the copy has seen
        conn.execute(update(ev).where(ev.c.customer_id == "C2").values(value=2.0))
        aggregates.rebuild(conn)
    assert columnar.update(engine, columns).action == "built"
    frame = compute_features(engine, np.array(CUSTOMERS), T, CONTEXTS, columns=columns)
    assert frame.source == "columns" and frame["frequency_365"].tolist() == [1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("damage", ["emptied", "cut short", "removed"])
def test_a_damaged_copy_is_read_through_sql_and_written_anew_by_the_next_update(engine, tmp_path, damage):
    """A file of the copy emptied, cut short or removed behind relmail's back (a disk error, a partial restore
    of the project folder): the features read the store instead of stopping the plan, and the next update
    (every plan runs one first) writes the copy anew although the store did not change."""
    columns = _copy_of(engine, tmp_path)
    victim = next(columns.glob("seg-*/at.npy"))
    if damage == "removed":
        victim.unlink()
    else:
        victim.write_bytes(b"" if damage == "emptied" else victim.read_bytes()[:20])
    columnar._open.clear()  # another process: nothing of the copy is open yet
    raw = compute_features(engine, np.array(CUSTOMERS), T, CONTEXTS, use_aggregates=False)
    _same(raw, compute_features(engine, np.array(CUSTOMERS), T, CONTEXTS, columns=columns))
    assert columnar.update(engine, columns).action == "built"
    again = compute_features(engine, np.array(CUSTOMERS), T, CONTEXTS, columns=columns)
    assert again.source == "columns"
    _same(raw, again)


def test_an_erasure_deletes_a_copy_it_cannot_rewrite(engine, tmp_path, monkeypatch):
    """The disk holding the copy is full when a customer is erased: the erasure is committed, and the copy,
    which cannot be written anew without her events, is deleted rather than left holding them."""
    import errno

    from relmail.errors import RelmailError

    columns = _copy_of(engine, tmp_path, [
        dict(event_id="E3", customer_id="C3", type="view", days=2, product_id="EB-200", value_cents=None, message_id=None)])

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    done = forget(engine, "C2", columns)
    assert done["columnar_copy"] == "removed" and "No space left" in done["columnar_copy_error"]
    assert not columns.exists(), "the copy holding the erased customer's events is gone"

    monkeypatch.setattr("shutil.rmtree", full)
    columns.mkdir(parents=True)
    (columns / "current.json").write_text("{}")
    with pytest.raises(RelmailError, match=r"customer 'C3' is erased from the store, .* delete that folder"):
        forget(engine, "C3", columns)
    monkeypatch.undo()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Customer.__table__)).scalar() == 2
