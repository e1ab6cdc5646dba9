"""A PostgreSQL database with a language's collation: a plan's customer ranges still read every customer of the range.

A plan splits its customers into ranges of ids sorted by code point. In a
database created with, say, ICU's ``en-US`` collation, ``a1`` sorts before
``B2`` and ``C_1`` before ``C1``, so ``customer_id BETWEEN first AND last``
is not the range: features, consent and pending sends must still be those
of every customer in it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import text

from relmail.features import compute_features
from relmail.features.sql import Scope, code_point_order
from relmail.importers.pipeline import import_file
from relmail.store.db import make_engine, upgrade

AS_OF = datetime(2026, 11, 23, 9, tzinfo=UTC)
#: Ids whose code point order differs from en-US's: upper case before lower, "_" after the digits.
IDS = [f"{p}{k:02d}" for p in ("B", "C_", "C", "a", "c") for k in range(1, 9)]


@pytest.fixture
def icu_engine(pg_databases, tmp_path):
    admin = make_engine(pg_databases.create())
    with admin.connect() as conn:
        icu = conn.execute(text("SELECT 1 FROM pg_collation WHERE collname = 'en-US-x-icu'")).first()
    admin.dispose()
    if icu is None:
        pytest.skip("this PostgreSQL server is built without ICU")
    engine = make_engine(pg_databases.create("LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8' TEMPLATE template0"))
    upgrade(engine)
    customers = tmp_path / "customers.csv"
    customers.write_text("id,email,created_at\n" + "".join(f"{c},{c.lower()}@example.org,2025-01-01T00:00:00Z\n" for c in IDS))
    events = tmp_path / "events.csv"
    events.write_text("event_id,customer_id,type,occurred_at,product_id,feature,value,message_id,run_id,topic\n" + "".join(
        f"E{i},{c},purchase,2026-11-{1 + i % 20:02d}T10:00:00Z,,,{10 + i},,,\n" for i, c in enumerate(IDS)) + "".join(
        f"U{i},{c},email_unsubscribed,2026-11-10T10:00:00Z,,,,,,\n" for i, c in enumerate(IDS) if i % 3 == 0))
    import_file(engine, "customers", customers)
    import_file(engine, "events", events)
    yield engine
    engine.dispose()


def test_the_collation_orders_these_ids_apart_from_code_points(icu_engine):
    with icu_engine.connect() as conn:
        assert conn.execute(text("SELECT 'a01' < 'B01', 'C_01' < 'C01'")).one() == (True, True)
        assert not code_point_order(conn)


def test_a_range_of_sorted_ids_has_the_features_of_those_customers(icu_engine):
    ids = np.array(sorted(IDS))
    part = ids[4:30]  # from "B05" to "a06" by code point: 'B05' > 'a06' in en-US
    with icu_engine.connect() as conn:
        scope = Scope(conn, part, bounded=True)
        assert scope.range is None  # no BETWEEN: the customers are found by id
        scope.close()
    ranged = compute_features(icu_engine, part, AS_OF, bounded=True)
    whole = compute_features(icu_engine, ids, AS_OF)
    rows = np.searchsorted(ids, part)
    for name, values in ranged.columns.items():
        assert np.array_equal(values, whole[name][rows], equal_nan=True), name
    assert ranged["orders_total"].min() == 1  # every customer's purchase was read
    assert np.array_equal(ranged["unsubscribed_event"], np.array([1.0 if IDS.index(c) % 3 == 0 else 0.0 for c in part]))


def test_in_a_code_point_database_a_range_is_read_between_its_first_and_last_id(engine, tmp_path):
    customers = tmp_path / "customers.csv"
    customers.write_text("id,email,created_at\n" + "".join(f"{c},{c.lower()}@example.org,2025-01-01T00:00:00Z\n" for c in IDS))
    import_file(engine, "customers", customers)
    ids = np.array(sorted(IDS))
    with engine.connect() as conn:
        assert code_point_order(conn)
        scope = Scope(conn, ids[4:30], bounded=True)
        assert scope.range == (ids[4], ids[29])  # the fast path: the customer index, from first to last
        scope.close()


def _audience_statements(engine) -> tuple[list[str], list[str]]:
    """Everyone's audience as of AS_OF, and the SQL statements it ran."""
    from pathlib import Path

    from sqlalchemy import event

    from relmail.segments import Segment, audience

    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        everyone = Segment(name="everyone", description="", file=Path("everyone.yml"), root=None)
        ids = audience(engine, [everyone], AS_OF).tolist()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return ids, [s for s in seen if "customers" in s and "ORDER BY" in s]


def test_an_audience_is_in_code_point_order_sorted_by_the_server_only_where_its_collation_differs(icu_engine, engine, tmp_path):
    ids, statements = _audience_statements(icu_engine)
    assert ids == sorted(IDS)
    assert statements and all('COLLATE "C"' in s for s in statements)
    if engine.dialect.name != "postgresql":
        return
    customers = tmp_path / "customers.csv"
    customers.write_text("id,email,created_at\n" + "".join(f"{c},{c.lower()}@example.org,2025-01-01T00:00:00Z\n" for c in IDS))
    import_file(engine, "customers", customers)
    ids, statements = _audience_statements(engine)
    assert ids == sorted(IDS)
    # The database's own collation is code point order: the ids come in the primary key's order, not sorted again.
    assert statements and not any('COLLATE "C"' in s for s in statements)


def test_the_collation_is_asked_once_per_connection(engine):
    """Every range and segment asks whether ids sort by code point; the database is asked once per connection."""
    if engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL question")
    from sqlalchemy import event

    asked: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "pg_database" in statement:
            asked.append(statement)

    with engine.connect() as conn:
        event.listen(conn, "before_cursor_execute", record)
        assert [code_point_order(conn) for _ in range(3)] == [True] * 3
    assert len(asked) <= 1
