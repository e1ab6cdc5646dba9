"""The demo shop: deterministic, realistic, the same on both backends, and safe to run."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from click.testing import CliRunner
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import inspect, select, text

from relmail import demo as demo_mod
from relmail.cli import cli
from relmail.demo import ROLES, generate, parse_as_of
from relmail.demo.catalog import CATEGORIES, PRODUCTS, TOPICS
from relmail.errors import Conflict, ValidationError
from relmail.project import init_project
from relmail.render.contexts import load_catalog
from relmail.store.db import make_engine, upgrade
from relmail.store.models import Customer, Event, Preference
from relmail.store.summary import store_summary

AS_OF = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
SHOP_TYPES = ("purchase", "view", "usage", "ticket_opened", "ticket_closed")


def _rows(engine, sql: str, **params) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def _fingerprint(engine) -> str:
    """A hash of every customer, preference and event, with times as datetimes (backend-neutral)."""
    h = hashlib.sha256()
    with engine.connect() as conn:
        for table, order in ((Customer.__table__, "id"), (Preference.__table__, "customer_id"), (Event.__table__, "id")):
            cols = [c for c in table.c]
            stmt = select(*cols).order_by(*([table.c[order], table.c.topic] if table.name == "preferences" else [table.c[order]]))
            for row in conn.execute(stmt):
                h.update(repr(tuple(v if not isinstance(v, float) else round(v, 2) for v in row)).encode())
    return h.hexdigest()


@pytest.fixture
def demo_store(engine):
    result = generate(engine, customers=700, seed=11, as_of=AS_OF)
    return engine, result


def test_same_seed_same_shop_and_other_seed_another(demo_store):
    engine, first = demo_store
    fp = _fingerprint(engine)
    again = generate(engine, customers=700, seed=11, as_of=AS_OF, replace=True)
    assert again.events == first.events and again.preferences == first.preferences
    assert _fingerprint(engine) == fp
    other = generate(engine, customers=700, seed=12, as_of=AS_OF, replace=True)
    assert other.events != first.events
    assert _fingerprint(engine) != fp


def test_counts_and_identifiers_follow_the_architecture(demo_store):
    engine, result = demo_store
    summary = store_summary(engine)
    assert summary["customers"]["total"] == 700 == result.customers
    assert summary["events"]["total"] == result.total_events
    assert summary["events"]["by_type"] == result.events
    assert set(summary["products"]["by_category"]) == set(CATEGORIES)
    assert summary["products"]["total"] == len(PRODUCTS) >= 40
    ids = [r[0] for r in _rows(engine, "SELECT id FROM customers ORDER BY id")]
    assert ids[0] == "C0000001" and ids[-1] == "C0000700"
    locales = dict(_rows(engine, "SELECT locale, COUNT(*) FROM customers GROUP BY locale"))
    assert set(locales) == {"nl_NL", "en_GB"} and 0.5 < locales["nl_NL"] / 700 < 0.7
    zones = {r[0] for r in _rows(engine, "SELECT DISTINCT timezone FROM customers")}
    assert zones == {"Europe/Amsterdam", "Europe/London"}
    assert {r[0] for r in _rows(engine, "SELECT DISTINCT topic FROM preferences")} == set(TOPICS) | {"*"}
    products = {r[0]: r[1:] for r in _rows(engine, "SELECT id, category, price, url FROM products")}
    assert products["EB-200"] == ("e-bikes", 2499.0, "https://fietsenwinkel.example/p/EB-200")
    assert products["LOCK-S1"][:2] == ("accessories", 129.0)
    assert products["SERVICE-PLUS"][:2] == ("maintenance", 89.0)
    with engine.connect() as conn:
        feats = dict(conn.execute(select(text("id"), text("features")).select_from(text("products"))).all())
    as_list = lambda v: json.loads(v) if isinstance(v, str) else v  # noqa: E731
    assert as_list(feats["EB-200"]) == ["app", "gps-tracking", "battery-saver"]
    assert as_list(feats["LOCK-S1"]) == ["auto-unlock", "share-access"]
    tiers = {json.loads(a)["loyalty_tier"] if isinstance(a, str) else a["loyalty_tier"] for (a,) in _rows(engine, "SELECT attributes FROM customers")}
    assert tiers == {"new", "regular", "loyal"}
    runs = _rows(engine, "SELECT campaign, status FROM runs")
    assert len(runs) == 6 and set(runs) == {("weekly-history", "done")}
    # Past runs are named as relmail names its own (campaign:window) and their e-mails carry those ids.
    run_ids = {r for (r,) in _rows(engine, "SELECT id FROM runs")}
    assert all(r == f"weekly-history:{r.split(':')[1]}" for r in run_ids)
    assert {r for (r,) in _rows(engine, "SELECT DISTINCT run_id FROM events WHERE type = 'email_sent'")} == run_ids
    assert summary["demo"]["special_customers"] == ROLES
    assert summary["demo"]["featured_owners"]["EB-200"] >= 1
    assert summary["events"]["open_tickets"] >= 1


def test_a_segment_finds_the_demo_s_past_sends_by_their_campaign(demo_store, tmp_path):
    from relmail.segments import audience, load_segments

    engine, _ = demo_store
    (tmp_path / "history.yml").write_text("name: history\nreceived_email: {campaign: weekly-history, within_days: 60}\n")
    members = audience(engine, [load_segments(tmp_path)["history"]], AS_OF)
    mailed = {c for (c,) in _rows(engine, "SELECT DISTINCT customer_id FROM events WHERE type = 'email_sent'")}
    assert len(mailed) > 100 and set(members.tolist()) == mailed


def test_special_customers_have_their_story(demo_store):
    engine, _ = demo_store
    c = {role: cid for role, cid in ROLES.items()}

    def types(cid):
        return [r[0] for r in _rows(engine, "SELECT type FROM events WHERE customer_id = :c ORDER BY occurred_at, id", c=cid)]

    def attrs(cid):
        (a,) = _rows(engine, "SELECT attributes FROM customers WHERE id = :c", c=cid)[0]
        return json.loads(a) if isinstance(a, str) else a

    with engine.connect() as conn:
        created = dict(conn.execute(select(Customer.__table__.c.id, Customer.__table__.c.created_at)).all())

    assert types(c["hard_bounce"]) == ["email_sent", "email_bounced_hard"]
    complainer = types(c["complainer"])
    assert complainer[-1] == "email_complained" and "email_sent" not in complainer[complainer.index("email_complained"):]
    star = _rows(engine, "SELECT opted_in, source FROM preferences WHERE customer_id = :c AND topic = '*'", c=c["unsubscribed"])
    assert [(bool(star[0][0]), star[0][1])] == [(False, "unsubscribe-link")]
    assert "email_unsubscribed" in types(c["unsubscribed"])
    tickets = _rows(engine, "SELECT type, feature FROM events WHERE customer_id = :c AND type LIKE 'ticket%'", c=c["open_ticket"])
    opened = {f for t, f in tickets if t == "ticket_opened"}
    closed = {f for t, f in tickets if t == "ticket_closed"}
    assert opened - closed == {"T0000006-2"}
    eb = _rows(engine, "SELECT type, product_id, feature FROM events WHERE customer_id = :c AND product_id = 'EB-200'", c=c["owns_eb200"])
    assert ("purchase", "EB-200", None) in eb and ("usage", "EB-200", "app") in eb
    lock = {r[0] for r in _rows(engine, "SELECT feature FROM events WHERE customer_id = :c AND type = 'usage'", c=c["lock_unused_feature"])}
    assert lock == {"auto-unlock"}
    assert attrs(c["loyal"])["loyalty_tier"] == "loyal" and AS_OF - created[c["loyal"]] > timedelta(days=5 * 365)
    assert attrs(c["new"])["loyalty_tier"] == "new" and AS_OF - created[c["new"]] < timedelta(days=3)
    assert not any(t.startswith("email") for t in types(c["new"]))
    (bad,) = _rows(engine, "SELECT email FROM customers WHERE id = :c", c=c["invalid_email"])[0]
    with pytest.raises(EmailNotValidError):
        validate_email(bad, check_deliverability=False)
    assert not any(t.startswith("email") for t in types(c["invalid_email"]))


def test_behaviour_is_skewed_and_consistent(demo_store):
    engine, _ = demo_store
    per = dict(_rows(engine, f"SELECT customer_id, COUNT(*) FROM events WHERE type IN {SHOP_TYPES} GROUP BY customer_id"))
    counts = np.sort(np.array(list(per.values()) + [0] * (700 - len(per))))[::-1]
    assert counts[:70].sum() / counts.sum() > 0.5, "the top 10% of customers hold most shop events"
    assert (counts == 0).mean() > 0.3, "many customers did nothing in the shop this year"
    # Every purchase was preceded by a view of the same product by the same customer.
    orphan = _rows(engine, """
        SELECT COUNT(*) FROM events p WHERE p.type = 'purchase' AND NOT EXISTS (
          SELECT 1 FROM events v WHERE v.type = 'view' AND v.customer_id = p.customer_id
            AND v.product_id = p.product_id AND v.occurred_at < p.occurred_at)""")
    assert orphan == [(0,)]
    # Usage only by owners, only of the product's own features, after buying it.
    bad_usage = _rows(engine, """
        SELECT COUNT(*) FROM events u WHERE u.type = 'usage' AND NOT EXISTS (
          SELECT 1 FROM events p WHERE p.type = 'purchase' AND p.customer_id = u.customer_id
            AND p.product_id = u.product_id AND p.occurred_at <= u.occurred_at)""")
    assert bad_usage == [(0,)]
    feats = {pid: set(f) for pid, *_x, f in PRODUCTS}
    for pid, feature in _rows(engine, "SELECT DISTINCT product_id, feature FROM events WHERE type = 'usage'"):
        assert feature in feats[pid]
    with engine.connect() as conn:
        E, C = Event.__table__, Customer.__table__
        before_signup = conn.execute(
            select(E.c.id).join(C, C.c.id == E.c.customer_id).where(E.c.occurred_at < C.c.created_at).limit(1)
        ).first()
        latest = conn.execute(select(text("MAX(occurred_at)")).select_from(E)).scalar()
        assert before_signup is None
        assert conn.execute(select(E.c.id).where(E.c.occurred_at > AS_OF).limit(1)).first() is None, latest
    # E-mail events carry message, run and topic; the run exists.
    untagged = _rows(engine, "SELECT COUNT(*) FROM events WHERE type LIKE 'email%' AND (message_id IS NULL OR run_id IS NULL OR topic IS NULL)")
    assert untagged == [(0,)]
    unknown_run = _rows(engine, "SELECT COUNT(*) FROM events e WHERE e.run_id IS NOT NULL AND e.run_id NOT IN (SELECT id FROM runs)")
    assert unknown_run == [(0,)]
    # Nobody is mailed again after a hard bounce or a complaint.
    after = _rows(engine, """
        SELECT COUNT(*) FROM events s JOIN events b ON b.customer_id = s.customer_id
        WHERE s.type = 'email_sent' AND b.type IN ('email_bounced_hard', 'email_complained') AND s.occurred_at > b.occurred_at""")
    assert after == [(0,)]
    # An unsubscribe from a topic's mail leaves that topic opted out.
    mismatched = _rows(engine, """
        SELECT COUNT(*) FROM events u JOIN preferences p ON p.customer_id = u.customer_id AND p.topic = u.topic
        WHERE u.type = 'email_unsubscribed' AND p.opted_in = :yes AND u.customer_id <> :special""",
        yes=True, special=ROLES["unsubscribed"])
    assert mismatched == [(0,)]
    invalid = [e for (e,) in _rows(engine, "SELECT email FROM customers") if not _valid(e)]
    assert 1 <= len(invalid) <= 0.02 * 700


def _valid(address: str) -> bool:
    try:
        validate_email(address, check_deliverability=False)
        return True
    except EmailNotValidError:
        return False


def test_refuses_a_store_with_data_unless_replace(demo_store):
    engine, result = demo_store
    with pytest.raises(Conflict, match="--replace"):
        generate(engine, customers=50, seed=1, as_of=AS_OF)
    assert store_summary(engine)["customers"]["total"] == 700
    small = generate(engine, customers=50, seed=1, as_of=AS_OF, replace=True)
    assert store_summary(engine)["customers"]["total"] == 50 == small.customers
    assert store_summary(engine)["events"]["total"] == small.total_events


def test_failure_halfway_leaves_the_store_empty_with_its_indexes(engine, monkeypatch):
    monkeypatch.setattr(demo_mod, "CHUNK", 100)
    calls = []
    real = demo_mod.store.write

    def failing(conn, table, columns, rows):
        calls.append(table)
        if calls.count("events") == 2:
            raise RuntimeError("disk full")
        real(conn, table, columns, rows)

    monkeypatch.setattr(demo_mod.store, "write", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        generate(engine, customers=300, seed=1, as_of=AS_OF)
    summary = store_summary(engine)
    assert summary["customers"]["total"] == 0 and summary["events"]["total"] == 0 and summary["demo"] is None
    names = {i["name"] for i in inspect(engine).get_indexes("events")}
    assert {"ix_events_customer_time", "ix_events_type_time_customer"} <= names


def test_invalid_arguments_are_user_errors(engine):
    with pytest.raises(ValidationError, match="--customers"):
        generate(engine, customers=3, as_of=AS_OF)
    with pytest.raises(ValidationError, match="timezone"):
        generate(engine, customers=100, as_of=datetime(2026, 1, 1))
    with pytest.raises(ValidationError, match="time zone"):
        parse_as_of("2026-11-23T09:00:00")
    with pytest.raises(ValidationError, match="ISO 8601"):
        parse_as_of("next tuesday")
    assert parse_as_of("2026-11-23T10:00:00+01:00") == datetime(2026, 11, 23, 9, tzinfo=UTC)


@pytest.mark.skipif("postgresql" not in os.environ.get("RELMAIL_TEST_BACKENDS", "sqlite,postgresql"), reason="needs both backends")
def test_sqlite_and_postgresql_hold_the_same_shop(tmp_path, pg_databases):
    lite = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    pg = make_engine(pg_databases.create())
    for engine in (lite, pg):
        upgrade(engine)
        generate(engine, customers=400, seed=5, as_of=AS_OF)
    a, b = store_summary(lite), store_summary(pg)
    assert a == b
    assert _fingerprint(lite) == _fingerprint(pg)
    with pg.connect() as conn:  # a plan straight after the demo is planned from the shop's real size
        sizes = conn.exec_driver_sql("SELECT relname, reltuples FROM pg_class WHERE relname IN "
                                     "('customers', 'preferences', 'events')").all()
        assert {name: conn.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar() for name, _ in sizes} == dict(sizes)
    pg.dispose()


def test_cli_demo_prints_the_summary_and_refuses_a_second_run(project):
    runner = CliRunner()
    args = ["--project", str(project.root), "demo", "--customers", "300", "--as-of", "2026-11-23T11:00:00Z"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Generated the demo shop" in out and "300 customers" in out
    for needle in ("nl_NL", "e-bikes", "email_opened", "* (all e-mail)", "weekly-history:2026-W47", "C0000003", "hard_bounce", "EB-200"):
        assert needle in out
    again = runner.invoke(cli, args)
    assert again.exit_code == 9 and "--replace" in again.output
    as_json = runner.invoke(cli, [*args, "--replace", "--seed", "8", "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["generated"]["seed"] == 8 and data["summary"]["customers"]["total"] == 300
    assert data["summary"]["events"]["by_type"] == data["generated"]["events"]
    summary = runner.invoke(cli, ["--project", str(project.root), "summary", "--json"])
    assert json.loads(summary.output)["customers"]["total"] == 300
    bad = runner.invoke(cli, ["--project", str(project.root), "demo", "--as-of", "2026-11-23 11:00"])
    assert bad.exit_code == 4 and "time zone" in bad.output


def test_cli_demo_creates_the_schema_of_a_fresh_database(tmp_path, empty_db_url, monkeypatch):
    monkeypatch.setenv("RELMAIL_DATABASE_URL", empty_db_url)
    project = init_project(tmp_path / "fresh")
    result = CliRunner().invoke(cli, ["--project", str(project.root), "demo", "-n", "120", "--as-of", "2026-11-23T11:00:00Z", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["summary"]["customers"]["total"] == 120


def test_english_customers_read_the_english_product_names(demo_store):
    engine, _ = demo_store
    with engine.connect() as conn:
        catalog = load_catalog(conn, datetime(2026, 11, 23, 11, tzinfo=UTC))
    assert catalog["EB-200"]["name"] == "E-bike Stad 200"  # the shop is Dutch
    assert catalog.for_locale("en_GB")["EB-200"]["name"] == "E-bike City 200"
    assert catalog.for_locale("nl_NL")["EB-200"]["name"] == "E-bike Stad 200"
    # A name that is the same in both languages has no translation to keep.
    assert catalog.for_locale("en_GB")["EB-400"]["name"] == "Speed pedelec 400"
