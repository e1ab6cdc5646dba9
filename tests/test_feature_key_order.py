"""A plan range's consent and message-history statements group rows in the order of the key they read (PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import text

import relmail.features.compute as compute
from relmail.features import queries as q
from relmail.features.frame import FeatureContext
from relmail.features.sql import Scope, key_order

AS_OF = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
CONTEXTS = {"news": FeatureContext(topic="newsletter", repeat_after_days=14), "promo": FeatureContext(topic="promotions")}


@pytest.fixture
def shop_ids(engine):
    from relmail.demo import generate

    generate(engine, customers=1200, seed=7, as_of=AS_OF)
    with engine.connect() as conn:
        return np.array(sorted(r[0] for r in conn.execute(text("SELECT id FROM customers"))))


def test_the_consent_and_sent_statements_of_a_range_group_in_key_order(engine, shop_ids):
    if engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL planner setting")
    with engine.begin() as conn:
        scope = Scope(conn, shop_ids[100:900], bounded=True)
        assert scope.range is not None
        for query in (q.preferences(scope, AS_OF, "postgresql", CONTEXTS), q.sent(scope, AS_OF, CONTEXTS, "UTC")):
            assert query.key_order
            sql = str(query.stmt.compile(conn, compile_kwargs={"literal_binds": True}))
            key_order(conn)
            shown = " ".join(r[0] for r in conn.execute(text("EXPLAIN " + sql)))
            assert "GroupAggregate" in shown and "HashAggregate" not in shown and "Bitmap" not in shown, shown


def test_a_range_reads_consent_and_sent_messages_in_key_order_with_the_same_features(engine, shop_ids, monkeypatch):
    part = shop_ids[100:900]
    real_order, real_fetch = compute.key_order, compute.fetch_columns
    monkeypatch.setattr(compute, "key_order", lambda conn: conn)
    plain = compute.compute_features(engine, part, AS_OF, CONTEXTS, bounded=True, use_aggregates=True)
    marked: set[int] = set()
    runs: list[tuple[str, bool]] = []

    def order_spy(conn):
        marked.add(id(conn))
        return real_order(conn)

    def fetch_spy(conn, stmt, *args, **kwargs):
        runs.append((getattr(stmt.get_final_froms()[0], "name", "?"), id(conn) in marked))
        marked.discard(id(conn))
        return real_fetch(conn, stmt, *args, **kwargs)

    monkeypatch.setattr(compute, "key_order", order_spy)
    monkeypatch.setattr(compute, "fetch_columns", fetch_spy)
    again = compute.compute_features(engine, part, AS_OF, CONTEXTS, bounded=True, use_aggregates=True)
    assert sorted(table for table, ordered in runs if ordered) == ["customer_messages", "preferences"], runs
    for name in plain.columns:
        np.testing.assert_array_equal(plain.columns[name], again.columns[name], err_msg=name)
