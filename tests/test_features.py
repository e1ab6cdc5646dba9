"""Bulk features: exact values for hand-built customers, no leakage, SQL = a Python reference."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert

from relmail.errors import ConfigError
from relmail.features import CONTEXT_COLUMNS, GENERIC_COLUMNS, FeatureContext, FeatureSettings, compute_features
from relmail.features.derived import email_valid
from relmail.features.queries import AFFINITY_EDGES, DELIVERY_TYPES, affinity_horizon, affinity_weights
from relmail.store.addresses import address_hash, salt
from relmail.store.models import EVENT_TYPES, Customer, Event, Preference, Product, Suppression

T = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
EVENT_KEYS = dict(product_id=None, feature=None, value=None, message_id=None, run_id=None, topic=None, event_id=None)
PRODUCTS = [
    dict(id="EB-200", name="E-bike", category="e-bikes", price=2499.0, url=None, features=["app"]),
    dict(id="CB-1", name="City bike", category="city-bikes", price=799.0, url=None, features=[]),
    dict(id="LOCK-S1", name="Lock", category="accessories", price=129.0, url=None, features=["share-access"]),
]
CONTEXTS = {
    "ebike": FeatureContext(topic="promotions", categories=("e-bikes",), products=("EB-200",)),
    "lock": FeatureContext(topic="product-tips", products=("LOCK-S1",), feature="share-access"),
    # A recurring message: an issue older than 14 days does not count as already sent.
    "news": FeatureContext(topic="newsletter", repeat_after_days=14),
    "bare": FeatureContext(),
}


def ago(days: float) -> datetime:
    return T - timedelta(days=days)


def customers(conn, *rows):
    conn.execute(insert(Customer.__table__), [
        dict(id=cid, email=email or f"{cid.lower()}@example.com", first_name=None, last_name=None, locale="en_GB",
             timezone="UTC", created_at=ago(age), attributes={})
        for cid, age, email in rows
    ])


def events(conn, *rows):
    conn.execute(insert(Event.__table__), [{**EVENT_KEYS, "customer_id": c, "type": t, "occurred_at": ago(d), **kw}
                                           for c, t, d, kw in rows])


def prefs(conn, *rows):
    conn.execute(insert(Preference.__table__), [
        dict(customer_id=c, topic=topic, opted_in=opted, max_per_week=mpw, updated_at=ago(d), source="import")
        for c, topic, opted, mpw, d in rows
    ])


def ev(c, t, d, **kw):
    return (c, t, d, kw)


@pytest.fixture
def product_store(engine):
    with engine.begin() as conn:
        conn.execute(insert(Product.__table__), PRODUCTS)
    return engine


def test_an_unsubscribe_from_one_topic_is_that_topics_opt_out_not_a_global_one(product_store):
    with product_store.begin() as conn:
        customers(conn, ("E", 300, None), ("F", 300, None), ("G", 300, None), ("H", 300, None), ("I", 300, None),
                  ("J", 300, None))
        events(
            conn,
            # I opted in to the newsletter long ago; an events import says she left it since: the
            # preference does not know of the unsubscribe, so nothing goes to her.
            ev("I", "email_unsubscribed", 3, topic="newsletter"),
            # J had left the newsletter before and used another newsletter's link: still that topic only.
            ev("J", "email_unsubscribed", 3, topic="newsletter"),
            # E left the newsletter through the link's "this list only": the link wrote the topic's opt-out.
            ev("E", "email_unsubscribed", 3, topic="newsletter"),
            # F unsubscribed without a topic (an events import): everything.
            ev("F", "email_unsubscribed", 3),
            # G: a provider's global unsubscribe, stored with the topic of the message it came from.
            ev("G", "email_unsubscribed", 3, topic="promotions"),
            # H left the newsletter, then subscribed to it again.
            ev("H", "email_unsubscribed", 9, topic="newsletter"),
        )
        prefs(conn, ("E", "*", True, None, 100), ("E", "newsletter", False, None, 3),
              ("F", "*", True, None, 100), ("G", "*", False, None, 3),
              ("H", "*", True, None, 100), ("H", "newsletter", True, None, 1),
              ("I", "*", True, None, 100), ("I", "newsletter", True, None, 100),
              ("J", "*", True, None, 100), ("J", "newsletter", False, None, 100))
    f = compute_features(product_store, ["E", "F", "G", "H", "I", "J"], T, CONTEXTS)
    e, fr, g, h, i, j = (f.row(k) for k in range(6))
    assert [r["unsubscribed_event"] for r in (e, fr, g, h, i, j)] == [0, 1, 1, 0, 1, 0]
    # NO_CONSENT for E's newsletter only; H is back on it.
    assert (f.row(0, "news")["consent_topic"], f.row(0, "ebike")["consent_topic"], f.row(3, "news")["consent_topic"]) == (0, None, 1)


def test_generic_features_of_hand_built_customers(product_store):
    with product_store.begin() as conn:
        customers(conn, ("A", 800, None), ("B", 30, None), ("C", 400, "not-an-address"), ("D", 50, None))
        events(
            conn,
            # A: loyal buyer; three purchases, one older than a year.
            ev("A", "purchase", 10, product_id="EB-200", value=2499.0),
            ev("A", "purchase", 100, product_id="LOCK-S1", value=129.0),
            ev("A", "purchase", 500, product_id="CB-1", value=799.0),
            ev("A", "email_sent", 3, topic="promotions", message_id="m1"),
            ev("A", "email_sent", 20, topic="newsletter", message_id="m2"),
            ev("A", "email_sent", 60, topic="newsletter", message_id="m3"),
            ev("A", "email_opened", 2), ev("A", "email_opened", 45), ev("A", "email_opened", 200),
            ev("A", "email_clicked", 25),
            ev("A", "email_complained", 100), ev("A", "email_complained", 400),
            # B: new, bounced hard after the last delivery, unsubscribed then opted back in.
            ev("B", "email_delivered", 20), ev("B", "email_bounced_hard", 5),
            ev("B", "email_unsubscribed", 10),
            # C: bounced, then a later delivery (the address works again); unsubscribed for good.
            ev("C", "email_bounced_hard", 50), ev("C", "email_opened", 40), ev("C", "email_unsubscribed", 30),
            # D: new account, but bought long before it was created (imported history).
            ev("D", "purchase", 120, product_id="CB-1", value=799.0),
        )
        prefs(conn, ("B", "*", True, 2, 1), ("B", "promotions", True, 5, 1), ("C", "*", False, None, 30))
    f = compute_features(product_store, ["D", "C", "B", "A", "B"], T, {})
    assert list(f.customer_ids) == ["A", "B", "C", "D"]
    assert list(f.columns) == list(GENERIC_COLUMNS)
    a, b, c, d = (f.row(i) for i in range(4))
    assert a["recency_days"] == pytest.approx(10) and b["recency_days"] is None
    assert (a["frequency_365"], a["monetary_365"], a["orders_total"], a["monetary_total"]) == (2, 2628.0, 3, 3427.0)
    assert a["tenure_days"] == pytest.approx(800) and b["tenure_days"] == pytest.approx(30)
    assert (a["opens_30"], a["opens_90"], a["clicks_30"], a["clicks_90"]) == (1, 2, 1, 1)
    assert a["days_since_open"] == pytest.approx(2) and a["days_since_click"] == pytest.approx(25)
    assert b["days_since_open"] is None
    assert (a["sends_7"], a["sends_30"], a["sends_90"]) == (1, 2, 3)
    assert (a["complaints_90"], a["complained_ever"]) == (0, 1)
    assert (b["hard_bounced"], c["hard_bounced"], a["hard_bounced"]) == (1, 0, 0)
    # B opted back in (global) after the unsubscribe event; C did not.
    assert (b["unsubscribed_event"], c["unsubscribed_event"]) == (0, 1)
    assert (a["consent_global"], b["consent_global"], c["consent_global"]) == (1, 1, 0)
    assert (a["frequency_wish"], b["frequency_wish"]) == (None, 2)
    assert (a["email_valid"], c["email_valid"]) == (1, 0)
    assert (a["loyal"], c["loyal"], d["loyal"]) == (1, 0, 0)
    assert (b["is_new"], d["is_new"], a["is_new"]) == (1, 0, 0)
    # CLV: AOV 3427/3, 3 orders over 800 days, margin 0.3, 3 years, retention 0.5**(10/365).
    expected = 3427 / 3 * (3 / (800 / 365)) * 0.3 * 3 * 0.5 ** (10 / 365)
    assert a["clv"] == pytest.approx(expected, rel=1e-6)
    assert b["clv"] == 0


@pytest.mark.parametrize("sqlite_version", [None, (3, 34, 1)])
def test_soft_bounces_count_emails_since_the_last_delivery_in_90_days(product_store, sqlite_version, monkeypatch):
    """REPEATED_SOFT_BOUNCE's feature: e-mails (not events) that soft-bounced after the last delivery, open or
    click, in the last 90 days; a delivery resets the count; the window's edge is the e-mail statement's."""
    ids = ["DEAD", "RESET", "EDGE_IN", "EDGE_OUT", "TWICE", "OLD", "HARD", "NONE"]
    with product_store.begin() as conn:
        customers(conn, *[(cid, 400, None) for cid in ids])

        def soft(cid, days, run="r", message=None):
            return ev(cid, "email_bounced_soft", days, run_id=run, message_id=message or f"m{days}")

        events(
            conn,
            # Mailed weekly, never arrived since an open 200 days ago.
            ev("DEAD", "email_opened", 200), soft("DEAD", 21), soft("DEAD", 14), soft("DEAD", 7),
            # Two soft bounces, then an open resets the count; one more after it.
            soft("RESET", 50), soft("RESET", 40), ev("RESET", "email_opened", 30), soft("RESET", 20),
            # Just inside and just outside the 90 days.
            soft("EDGE_IN", 89.99), soft("EDGE_IN", 60), soft("EDGE_IN", 30),
            soft("EDGE_OUT", 90.01), soft("EDGE_OUT", 60), soft("EDGE_OUT", 30),
            # One e-mail deferred, then given up: one soft bounce. An event without its run counts alone.
            soft("TWICE", 10.5, message="m"), soft("TWICE", 10, message="m"), soft("TWICE", 5, run=None, message="x"),
            # Long ago, and not mailed since: another try.
            soft("OLD", 300), soft("OLD", 200), soft("OLD", 100),
            # A hard bounce (the delivery is computed for these too), no soft ones.
            ev("HARD", "email_delivered", 12), ev("HARD", "email_bounced_hard", 3),
            ev("NONE", "email_delivered", 5),
            # After as_of: never read.
            soft("DEAD", -1), soft("OLD", -2),
        )
    if sqlite_version is not None:  # an SQLite older than 3.35 (Debian 11's) knows no MATERIALIZED hint
        monkeypatch.setattr("relmail.features.queries.sqlite3.sqlite_version_info", sqlite_version)
    f = compute_features(product_store, ids, T, {})
    got = {cid: f.row(f.index(cid)) for cid in ids}
    counts = {cid: row["soft_bounces"] for cid, row in got.items()}
    assert counts == {"DEAD": 3, "RESET": 1, "EDGE_IN": 3, "EDGE_OUT": 2, "TWICE": 2, "OLD": 0, "HARD": 0, "NONE": 0}
    assert got["DEAD"]["days_since_delivery"] == pytest.approx(200)
    assert got["RESET"]["days_since_delivery"] == pytest.approx(30)
    assert got["HARD"]["days_since_delivery"] == pytest.approx(12)
    # No delivery on record; and customers without a recent bounce are not looked up.
    assert got["EDGE_IN"]["days_since_delivery"] is None
    assert got["OLD"]["days_since_delivery"] is None and got["NONE"]["days_since_delivery"] is None
    # The same through a temporary audience table (one customer) and a bounded range of ids.
    assert compute_features(product_store, ["RESET"], T, {})["soft_bounces"].tolist() == [1]
    bounded = compute_features(product_store, ["EDGE_IN", "EDGE_OUT", "HARD"], T, {}, bounded=True)
    assert bounded["soft_bounces"].tolist() == [3, 2, 0]


def test_fatigue_rises_when_opens_fall_under_steady_sends(product_store):
    with product_store.begin() as conn:
        customers(conn, ("F", 400, None), ("G", 400, None), ("H", 400, None))
        sends = [ev(c, "email_sent", d) for c in "FGH" for d in (5, 15, 25, 35, 45, 55, 65, 75, 85)]
        # F opened every earlier mail, none recently; G opens steadily; H fewer mails now, no opens now.
        opens = [ev("F", "email_opened", d) for d in (35, 45, 55, 65, 75, 85)]
        opens += [ev("G", "email_opened", d) for d in (5, 15, 25, 35, 45, 55, 65, 75, 85)]
        opens += [ev("H", "email_opened", d) for d in (35, 45, 55, 65, 75, 85)]
        events(conn, *sends, *opens)
        events(conn, *[ev("H", "email_sent", d) for d in (36, 46, 56)])
    f = compute_features(product_store, ["F", "G", "H"], T, {})
    assert f["fatigue"][0] == pytest.approx(1.0)
    assert f["fatigue"][1] == 0.0
    # H: 3 sends now vs 4.5 per 30 days before (open rate before 6/9): scaled by 3/4.5.
    assert f["fatigue"][2] == pytest.approx(3 / 4.5)


def test_context_features(product_store):
    with product_store.begin() as conn:
        customers(conn, ("A", 500, None), ("B", 500, None), ("C", 500, None))
        events(
            conn,
            ev("A", "purchase", 10, product_id="EB-200", value=2499.0),
            ev("A", "view", 100, product_id="EB-200"),
            ev("A", "view", 2000, product_id="EB-200"),  # beyond the affinity horizon
            ev("A", "view", 1, product_id="CB-1"),  # another category
            ev("B", "purchase", 40, product_id="LOCK-S1", value=129.0),
            ev("B", "usage", 5, product_id="LOCK-S1", feature="share-access", value=3.0),
            ev("B", "usage", 6, product_id="LOCK-S1", feature="share-access"),  # no value: counts 1
            ev("B", "usage", 40, product_id="LOCK-S1", feature="share-access", value=7.0),  # too old
            ev("B", "usage", 4, product_id="LOCK-S1", feature="auto-unlock", value=9.0),  # other feature
            ev("B", "email_sent", 3, topic="product-tips", message_id="lock"),
            ev("B", "email_sent", 12, topic="product-tips", message_id="other"),
            ev("B", "email_sent", 400, topic="promotions", message_id="ebike"),
        )
        prefs(conn, ("A", "promotions", True, None, 5), ("B", "promotions", False, None, 5))
    f = compute_features(product_store, ["A", "B", "C"], T, CONTEXTS)
    assert list(f.columns) == list(GENERIC_COLUMNS) + [f"{k}.{s}" for k in CONTEXTS for s in CONTEXT_COLUMNS]
    a, b, c = (f.row(i, "ebike") for i in range(3))
    assert (a["consent_topic"], b["consent_topic"], c["consent_topic"]) == (1, 0, None)
    assert (a["owns_product"], b["owns_product"]) == (1, 0)
    steps = dict(affinity_weights(90.0))
    assert a["category_affinity"] == pytest.approx(3 * steps[14] + 1 * steps[120], abs=1e-4)
    assert b["category_affinity"] == 0 and a["feature_usage_30"] is None
    assert (b["already_sent"], b["topic_sends_30"]) == (1, 0)
    lock = f.row(1, "lock")
    assert (lock["owns_product"], lock["feature_usage_30"], lock["topic_sends_7"], lock["topic_sends_30"]) == (1, 4, 1, 2)
    assert lock["already_sent"] == 1 and f.row(0, "lock")["already_sent"] == 0
    assert lock["category_affinity"] == pytest.approx(3 * steps[60], abs=1e-4)
    bare = f.row(1, "bare")
    assert (bare["consent_topic"], bare["category_affinity"], bare["topic_sends_7"], bare["owns_product"]) == (None, None, None, 0)


def test_global_topic_context(product_store):
    with product_store.begin() as conn:
        customers(conn, ("X", 10, None), ("Y", 10, None), ("Z", 10, None))
        prefs(conn, ("X", "*", False, None, 1), ("Y", "*", True, None, 1), ("Y", "promotions", False, None, 1))
    f = compute_features(product_store, ["X", "Y", "Z"], T, {"all": FeatureContext(topic="*"), "promo": FeatureContext(topic="promotions")})
    np.testing.assert_array_equal(f["all.consent_topic"], [0, 1, np.nan])
    np.testing.assert_array_equal(f["promo.consent_topic"], [np.nan, 0, np.nan])
    np.testing.assert_array_equal(f["consent_global"], [0, 1, 1])


def test_open_tickets(product_store):
    with product_store.begin() as conn:
        customers(conn, ("A", 100, None), ("B", 100, None), ("C", 100, None))
        events(
            conn,
            ev("A", "ticket_opened", 30, feature="T1"), ev("A", "ticket_closed", 20, feature="T1"),
            ev("A", "ticket_opened", 10, feature="T1"),  # re-opened
            ev("A", "ticket_opened", 9, feature="T2"), ev("A", "ticket_closed", 8, feature="T2"),
            ev("B", "ticket_opened", 9), ev("B", "ticket_opened", 8), ev("B", "ticket_closed", 7),
            ev("C", "ticket_opened", 9, feature="T3"), ev("C", "ticket_closed", -1, feature="T3"),  # closed after T
        )
    f = compute_features(product_store, ["A", "B", "C"], T, {})
    assert list(f["open_tickets"]) == [1, 1, 1]


def test_address_suppressed(product_store):
    with product_store.begin() as conn:
        customers(conn, ("A", 10, "Gone@Example.com"), ("B", 10, None))
        conn.execute(insert(Suppression.__table__).values(email_hash=address_hash("gone@example.com", salt(conn)),
                                                          reason="erased", created_at=ago(1)))
    f = compute_features(product_store, ["A", "B"], T, {})
    assert list(f["address_suppressed"]) == [1, 0]


def test_ids_that_are_not_customers_and_customers_created_later(product_store):
    with product_store.begin() as conn:
        customers(conn, ("A", -5, None))
    f = compute_features(product_store, ["A", "ZZ"], T, CONTEXTS)
    assert np.isnan(f["tenure_days"]).all()
    assert list(f["orders_total"]) == [0, 0] and list(f["ebike.already_sent"]) == [0, 0]
    assert len(compute_features(product_store, [], T, CONTEXTS)) == 0


def test_small_audience_through_temp_table_matches_full_scan(product_store):
    """A small share of the customers is joined to a temporary id table; values are the same."""
    with product_store.begin() as conn:
        customers(conn, *[(f"C{i:02d}", 100 + i, None) for i in range(30)])
        events(conn, *[ev(f"C{i:02d}", t, (i * 7 + j) % 200, product_id="EB-200", value=float(i), topic="promotions",
                          message_id="ebike", feature="T1")
                       for i in range(30) for j, t in enumerate(EVENT_TYPES)])
    full = compute_features(product_store, [f"C{i:02d}" for i in range(30)], T, CONTEXTS)
    few = compute_features(product_store, ["C03", "C17"], T, CONTEXTS)
    rows = [full.index("C03"), full.index("C17")]
    for name in full.columns:
        np.testing.assert_array_equal(few[name], full[name][rows], err_msg=name)


def test_row_and_index():
    from relmail.features import FeatureFrame

    f = FeatureFrame(np.array(["A", "B"]), T, {"x": np.array([1.23456789, np.nan]), "m.y": np.array([0.0, 2.0]),
                                               "n.y": np.array([5.0, 6.0])})
    assert f.index("B") == 1 and f.row(0) == {"x": 1.2346}
    assert f.row(1, "m") == {"x": None, "y": 2.0}
    assert f.records("m") == [f.row(0, "m"), f.row(1, "m")]
    assert f.records(rows=[1]) == [{"x": None}]
    with pytest.raises(KeyError):
        f.index("C")
    with pytest.raises(KeyError, match="no feature column 'z'"):
        f["z"]


def test_naive_as_of_is_refused(product_store):
    with pytest.raises(ValueError, match="timezone-aware"):
        compute_features(product_store, ["A"], datetime(2026, 1, 1), {})


def test_settings_from_project(project):
    assert FeatureSettings.from_project(project) == FeatureSettings(timezone=project.settings.timezone)
    config = project.root / "relmail.toml"
    config.write_text(config.read_text() + "\n[features]\naffinity_half_life_days = 30\nmrgin = 0.2\n")
    from relmail.project import Project

    with pytest.raises(ConfigError, match="unknown key 'mrgin'"):
        FeatureSettings.from_project(Project.load(project.root))


def test_email_syntax():
    ok = ["a@b.nl", "first.last+tag@sub.example.co.uk", "jose@exämple.es"]
    # "jöhn@": a non-ASCII local part needs SMTPUTF8, which relmail's e-mails never use.
    bad = ["", "a@b", "a b@c.nl", "a@@b.nl", ".a@b.nl", "a.@b.nl", "a..b@c.nl", "a@-b.nl", "a@b.c1", "jöhn@example.nl"]
    assert list(email_valid(np.array(ok + bad, dtype=object))) == [1.0] * len(ok) + [0.0] * len(bad)


def test_affinity_horizon_is_a_step_edge():
    assert affinity_horizon(90) == 540 and affinity_horizon(1000) == AFFINITY_EDGES[-1] and affinity_horizon(0.1) == 1


# --------------------------------------------------------------------------- no leakage


def _random_store(conn, rng: np.random.Generator, n: int, after: bool) -> None:
    """Events of every type for n customers; with ``after`` only events later than T."""
    rows = []
    for i in range(n):
        for t in EVENT_TYPES:
            for _ in range(int(rng.integers(0, 3))):
                days = -float(rng.uniform(0.001, 100)) if after else float(rng.uniform(0, 700))
                rows.append(ev(f"C{i:03d}", t, days, product_id=str(rng.choice(["EB-200", "CB-1", "LOCK-S1"])),
                               feature=str(rng.choice(["share-access", "T1", "T2"])), value=float(rng.integers(1, 500)),
                               topic=str(rng.choice(["promotions", "product-tips", "newsletter"])),
                               message_id=str(rng.choice(list(CONTEXTS)))))
    events(conn, *rows)


def test_no_leakage_from_events_after_as_of(product_store):
    rng = np.random.default_rng(7)
    with product_store.begin() as conn:
        customers(conn, *[(f"C{i:03d}", float(rng.uniform(1, 900)), None) for i in range(40)])
        _random_store(conn, rng, 40, after=False)
    ids = [f"C{i:03d}" for i in range(40)]
    before = compute_features(product_store, ids, T, CONTEXTS)
    small_before = compute_features(product_store, ids[:3], T, CONTEXTS)
    with product_store.begin() as conn:
        _random_store(conn, rng, 40, after=True)
        customers(conn, ("LATE", -3, None))
        events(conn, ev("LATE", "purchase", -2, product_id="EB-200", value=10.0))
    after = compute_features(product_store, ids, T, CONTEXTS)
    small_after = compute_features(product_store, ids[:3], T, CONTEXTS)
    assert before.columns.keys() == after.columns.keys()
    for name in before.columns:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)
        np.testing.assert_array_equal(small_before[name], small_after[name], err_msg=name)
    assert before["orders_total"].sum() > 0 and before["opens_90"].sum() > 0  # the store was not empty


# --------------------------------------------------------------------------- SQL = Python reference

KINDS = ["purchase", "view", "usage", "email_sent", "email_opened", "email_clicked", "email_delivered",
         "email_bounced_hard", "email_bounced_soft", "email_complained", "ticket_opened", "ticket_closed"]
event_strategy = st.tuples(
    st.sampled_from(["A", "B", "C"]),
    st.sampled_from(KINDS),
    st.one_of(
        st.floats(min_value=-20, max_value=900, allow_nan=False).map(lambda d: round(d, 3)),
        # Just inside and just outside every window edge the definitions use.
        st.sampled_from(sorted({0, 7, 14, 30, 90, 365, *AFFINITY_EDGES})).flatmap(lambda w: st.sampled_from([w - 0.01, w + 0.01])),
    ),
    st.sampled_from(["EB-200", "CB-1", "LOCK-S1"]),
    st.sampled_from(["share-access", "app", "T1"]),
    st.one_of(st.none(), st.integers(1, 3000).map(float)),
    st.sampled_from(["promotions", "product-tips", "newsletter"]),
    st.sampled_from(["ebike", "lock", "news", "other"]),
)


def reference(cid: str, rows: list[tuple], tenure: float) -> dict[str, float]:
    """The feature definitions, written the slow and obvious way."""
    mine = [r for r in rows if r[0] == cid and r[2] >= 0]  # age >= 0: not after T

    def of(kind, within=math.inf):
        return [r for r in mine if r[1] == kind and r[2] < within]

    def on_days(kind, days):
        # The caps' windows: the as-of day and the days - 1 before it, as calendar days (T's zone is UTC).
        return [r for r in of(kind) if ago(r[2]).date() > T.date() - timedelta(days=days)]

    def last(kind):
        return min((r[2] for r in of(kind)), default=math.nan)

    purchases = of("purchase")
    money = sum(r[5] or 0 for r in purchases)
    out = {
        "recency_days": last("purchase"), "orders_total": len(purchases), "monetary_total": money,
        "frequency_365": len(of("purchase", 365)), "monetary_365": sum(r[5] or 0 for r in of("purchase", 365)),
        "opens_30": len(of("email_opened", 30)), "opens_90": len(of("email_opened", 90)),
        "clicks_90": len(of("email_clicked", 90)), "days_since_click": last("email_clicked"),
        "sends_7": len(on_days("email_sent", 7)), "sends_30": len(on_days("email_sent", 30)),
        "sends_90": len(of("email_sent", 90)),
        "complaints_90": len(of("email_complained", 90)),
    }
    bounce = last("email_bounced_hard")
    delivery = min([r[2] for r in mine if r[1] in ("email_delivered", "email_opened", "email_clicked")], default=math.nan)
    out["hard_bounced"] = float(not math.isnan(bounce) and (math.isnan(delivery) or bounce < delivery))
    # The reference's events carry no run: each soft bounce is one e-mail.
    soft = of("email_bounced_soft", 90)
    out["soft_bounces"] = len([r for r in soft if math.isnan(delivery) or r[2] < delivery])
    out["days_since_delivery"] = delivery if not math.isnan(bounce) or soft else math.nan
    opened_ids = {r[4] for r in of("ticket_opened")}
    out["open_tickets"] = sum(
        1 for t in opened_ids
        if min(r[2] for r in of("ticket_opened") if r[4] == t)
        < min((r[2] for r in of("ticket_closed") if r[4] == t), default=math.inf)
    )
    first = max((r[2] for r in purchases), default=math.nan)
    out["is_new"] = float(tenure < 90 and (math.isnan(first) or first < 90))
    weights = dict(affinity_weights(90.0))
    edges = [e for e in AFFINITY_EDGES if e <= affinity_horizon(90.0)]

    def decay(age):
        return next((weights[e] for e in edges if age < e), 0.0)

    ebike_items = {"EB-200"}
    out["ebike.category_affinity"] = sum((3.0 if r[1] == "purchase" else 1.0) * decay(r[2])
                                         for r in mine if r[1] in ("purchase", "view") and r[3] in ebike_items)
    out["lock.owns_product"] = float(any(r[3] == "LOCK-S1" for r in purchases))
    out["lock.feature_usage_30"] = sum(r[5] if r[5] is not None else 1.0 for r in of("usage", 30)
                                       if r[4] == "share-access" and r[3] == "LOCK-S1")
    out["lock.topic_sends_7"] = len([r for r in on_days("email_sent", 7) if r[6] == "product-tips"])
    out["news.topic_sends_30"] = len([r for r in on_days("email_sent", 30) if r[6] == "newsletter"])
    out["news.already_sent"] = float(any(r[7] == "news" for r in on_days("email_sent", 14)))
    return out


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(event_strategy, max_size=40))
def test_sql_features_equal_python_reference(product_store, rows):
    with product_store.begin() as conn:
        conn.execute(delete(Event.__table__))
        conn.execute(delete(Customer.__table__))
        customers(conn, ("A", 50, None), ("B", 400, None), ("C", 1000, None))
        if rows:
            events(conn, *[ev(c, t, d, product_id=p, feature=f, value=v, topic=tp, message_id=m)
                           for c, t, d, p, f, v, tp, m in rows])
    frame = compute_features(product_store, ["A", "B", "C"], T, CONTEXTS)
    for i, (cid, tenure) in enumerate([("A", 50), ("B", 400), ("C", 1000)]):
        for name, want in reference(cid, rows, tenure).items():
            got = frame[name][i]
            if math.isnan(want):
                assert math.isnan(got), (cid, name, got)
            else:
                assert got == pytest.approx(want, abs=1e-6), (cid, name, got, want)


def test_window_edges_equal_python_reference(product_store):
    """Events just inside and just outside every window edge, for every kind: SQL agrees with the reference.

    T is at noon: the calendar-day windows (caps, ``repeat_after_days``) start at the midnights 6.5, 13.5 and 29.5 days back."""
    edges = sorted({0, 6.5, 7, 13.5, 14, 29.5, 30, 90, 365, *AFFINITY_EDGES})
    rows = [("A", kind, w + delta, product, "share-access", 10.0, topic, "news")
            for kind in KINDS for w in edges for delta in (-0.01, 0, 0.01)
            for product, topic in (("EB-200", "newsletter"), ("LOCK-S1", "product-tips"))]
    with product_store.begin() as conn:
        customers(conn, ("A", 60, None))
        events(conn, *[ev(c, t, d, product_id=p, feature=f, value=v, topic=tp, message_id=m)
                       for c, t, d, p, f, v, tp, m in rows])
    frame = compute_features(product_store, ["A"], T, CONTEXTS)
    for name, want in reference("A", rows, 60).items():
        assert frame[name][0] == pytest.approx(want, abs=1e-6, nan_ok=True), name


_MINUTES = st.one_of(st.none(), st.integers(1, 6).map(lambda m: m * 10))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(histories=st.lists(st.tuples(_MINUTES, _MINUTES, _MINUTES, st.sampled_from(DELIVERY_TYPES)), min_size=1, max_size=6))
def test_a_send_blocks_exactly_whom_the_plans_hard_rules_block(engine, histories):
    """COMPLAINED and HARD_BOUNCE have one definition (features.derived): the send's last check before handing an
    e-mail over (events recorded since the plan) blocks the same customers, ties of bounce and delivery included."""
    from relmail.sending.loop import _blocked_now

    with engine.begin() as conn:
        conn.execute(delete(Event.__table__))
        conn.execute(delete(Customer.__table__))
        ids = [f"C{i}" for i in range(len(histories))]
        customers(conn, *[(cid, 400, None) for cid in ids])
        rows = [ev(cid, kind, minutes / 1440) for cid, (bounce, delivery, complaint, shown) in zip(ids, histories, strict=True)
                for kind, minutes in (("email_bounced_hard", bounce), (shown, delivery), ("email_complained", complaint))
                if minutes is not None]
        if rows:
            events(conn, *rows)
    frame = compute_features(engine, ids, T, {})
    rule = {cid: "email_complained" if frame["complained_ever"][i] else "email_bounced_hard"
            for i, cid in enumerate(ids) if frame["complained_ever"][i] or frame["hard_bounced"][i]}
    sent = _blocked_now(engine, [(cid, "m") for cid in ids], {"m": None})
    assert sent == {(cid, "m"): f"SUPPRESSED: {kind} after the plan" for cid, kind in rule.items()}, histories
