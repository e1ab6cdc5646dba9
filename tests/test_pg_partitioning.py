"""The partitioning SQL of docs/operations/postgresql.md, run on a throw-away PostgreSQL database that relmail then plans on."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import text

from relmail import demo
from relmail.features import compute_features
from relmail.planning.run import plan
from relmail.project import init_project
from relmail.store import aggregates
from relmail.store.db import make_engine, upgrade

DOC = Path(__file__).resolve().parents[1] / "docs" / "operations" / "postgresql.md"
AS_OF = datetime(2026, 11, 30, 9, tzinfo=UTC)


def documented_sql() -> list[str]:
    """The ```sql blocks of the page's Partitioning section, in order."""
    section = DOC.read_text().split("## Partitioning", 1)[1]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.S)


def test_the_page_documents_partitioning_of_the_aggregates_and_the_decisions():
    blocks = documented_sql()
    assert len(blocks) == 3
    assert "PARTITION BY RANGE (customer_id)" in blocks[0] and "PARTITION BY LIST (run_id)" in blocks[1]


def test_relmail_plans_on_the_partitioned_tables(pg_databases, tmp_path, monkeypatch):
    url = pg_databases.create()
    engine = make_engine(url)
    upgrade(engine)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for block in documented_sql():
            conn.exec_driver_sql(block)
    monkeypatch.setenv("RELMAIL_DATABASE_URL", url)
    monkeypatch.setenv("RELMAIL_SIGNING_KEY", "test-signing-key-not-secret")
    project = init_project(tmp_path / "shop")
    demo.generate(engine, customers=600, seed=3, as_of=AS_OF)
    result = plan(project, engine, "weekly", "2026-W49", as_of=AS_OF, workers=2)
    with engine.connect() as conn:
        per_partition = dict(conn.execute(text(
            "SELECT c.relname, count(d.*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "LEFT JOIN decisions d ON d.tableoid = c.oid WHERE i.inhparent = 'decisions'::regclass GROUP BY c.relname")).all())
        assert per_partition == {"decisions_default": 0, "decisions_weekly_2026_w49": len(result.decisions)}
        first, second = (conn.execute(text(f"SELECT count(*) FROM customer_totals_{k}")).scalar_one() for k in (0, 1))
        assert first > 0 and second == 0, "the demo's 600 ids all fall in the first range"
        assert aggregates.current(conn, AS_OF)
        ids = np.array(conn.execute(text("SELECT id FROM customers ORDER BY id")).scalars().all())
    maintained = compute_features(engine, ids, AS_OF, use_aggregates=True)
    raw = compute_features(engine, ids, AS_OF, use_aggregates=False)
    for name, values in raw.columns.items():
        assert np.array_equal(values, maintained[name], equal_nan=True), name
    with engine.begin() as conn:
        assert aggregates.rebuild(conn).total == 0
    engine.dispose()
