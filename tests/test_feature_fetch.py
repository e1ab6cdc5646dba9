"""Feature statements' rows come from PostgreSQL in binary, and hold the values a text fetch gives."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import event, text

from relmail.features import queries as q
from relmail.features.frame import FeatureContext
from relmail.features.sql import Scope, fetch_columns

AS_OF = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
CONTEXTS = {"news": FeatureContext(topic="newsletter", repeat_after_days=14, products=("EB-200",))}


def test_feature_rows_travel_in_binary_and_equal_the_text_results(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("result formats are PostgreSQL's")
    from psycopg.pq import Format

    from relmail.demo import generate

    generate(engine, customers=600, seed=3, as_of=AS_OF)
    with engine.connect() as conn:
        ids = np.array(sorted(r[0] for r in conn.execute(text("SELECT id FROM customers"))))
        scope = Scope(conn, ids[50:550], bounded=True)
        formats: list = []

        def seen(conn, cursor, statement, parameters, context, executemany):
            formats.append(cursor.format)

        event.listen(conn, "after_cursor_execute", seen)
        statements = [q.preferences(scope, AS_OF, "postgresql", CONTEXTS), q.customers(scope, AS_OF, "postgresql"),
                      q.totals(scope, AS_OF, "postgresql"), q.sent(scope, AS_OF, CONTEXTS, "UTC"), q.owned(scope, AS_OF, CONTEXTS)]
        for query in statements:
            formats.clear()
            keys, columns = fetch_columns(conn, query.stmt)
            assert formats == [Format.BINARY]
            rows = conn.execute(query.stmt).fetchall()  # text, through SQLAlchemy as usual
            assert formats[-1] == Format.TEXT, "only the feature fetch asks for binary"
            assert keys.tolist() == [r[0] for r in rows] and len(rows) > 0
            for j, column in enumerate(columns, start=1):
                expected = [r[j] for r in rows]
                if column.dtype == object:
                    assert column.tolist() == expected
                else:
                    want = np.array([np.nan if v is None else float(v) for v in expected])
                    assert np.array_equal(column.astype(float), want, equal_nan=True)
        scope.close()
