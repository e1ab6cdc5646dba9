"""The logged-features JSON of decisions, built column by column (relmail.planning.decisions.JsonRows)."""

from __future__ import annotations

import math
import pickle
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from relmail.planning import decisions as dec
from relmail.planning.decisions import Decisions, JsonRows

VALUES = st.sampled_from([0.0, 1.0, -2.0, 0.5, 0.12345, 1e-6, 123456.0, float("nan"), float("inf")])
#: Counts, flags and days: whole numbers in a narrow span (their texts are made once and shared), now and then unknown.
WHOLE = st.one_of(st.integers(-3, 40).map(float), st.just(float("nan")), st.just(5000.0), st.just(2.0**60))


@st.composite
def columns(draw):
    n = draw(st.integers(0, 150))
    cols = []
    for _ in range(draw(st.integers(0, 6))):
        key = draw(st.text(min_size=1, max_size=6))
        rows = sorted(draw(st.sets(st.integers(0, max(n - 1, 0)), max_size=n)) if n else [])
        kind = draw(st.sampled_from(["text", "values", "whole", "one value"]))
        if kind == "text":
            cols.append((key, rows, draw(st.text(max_size=5)), False))
        elif kind == "one value":
            cols.append((key, rows, [draw(st.one_of(VALUES, WHOLE))] * len(rows), draw(st.booleans())))
        else:
            values = VALUES if kind == "values" else WHOLE
            cols.append((key, rows, [draw(values) for _ in rows], draw(st.booleans())))
    return n, cols


def _expected(value: float):
    if not math.isfinite(value):
        return None
    value = float(np.round(value, 4))  # NumPy's rounding (half to even on the scaled value), as logged
    return int(value) if value == int(value) else value


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(columns(), st.integers(1, 50))
def test_every_row_holds_the_constants_and_exactly_its_own_keys_in_the_order_added(data, block):
    n, cols = data
    js = JsonRows(n, {"topic": "news"})
    for key, rows, values, keep_zero in cols:
        js.add(key, values if isinstance(values, str) else np.array(values, dtype=float), np.array(rows, dtype=np.int64),
               keep_zero=keep_zero)
    texts = js.finish(block=block)
    assert len(texts) == n
    for i, text in enumerate(texts):
        pairs = [("topic", "news")]
        for key, rows, values, keep_zero in cols:
            if i not in rows:
                continue
            value = values if isinstance(values, str) else values[rows.index(i)]
            if isinstance(value, str):
                pairs.append((key, value))
            elif keep_zero or value != 0:
                pairs.append((key, _expected(value)))
        # Keys in the order added (a key added twice: its first place, its last value, as JSON readers do).
        assert list(orjson.loads(text).items()) == list(dict(pairs).items())


TEXTS = st.text(alphabet=st.sampled_from(["a", "Z", "1", " ", "\x00", "é", "{", '"', "\n"]), max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(TEXTS, st.sampled_from(["m1", "m2"]), st.sampled_from(["send", "suppress"]), TEXTS, TEXTS),
                max_size=30))
def test_decisions_come_back_from_another_process_unchanged(rows):
    """A worker's decisions pickled for the planner: every column equal, whatever its strings hold (a NUL too)."""
    cols = list(zip(*rows)) or [(), (), (), (), ()]

    def obj(values) -> np.ndarray:
        out = np.empty(len(values), dtype=object)  # an object array, even of equal-length texts
        out[:] = list(values)
        return out

    d = Decisions(obj(cols[0]), obj(cols[1]), obj(cols[2]), np.arange(len(rows), dtype=float), np.zeros(len(rows)),
                  obj(cols[3]), obj(cols[4]))
    back = pickle.loads(pickle.dumps(d))
    for name in ("customer_id", "message_id", "action", "reasons", "features"):
        assert getattr(back, name).dtype == object
        assert getattr(back, name).tolist() == getattr(d, name).tolist()
    assert back.score.tolist() == d.score.tolist()


def test_a_ledger_write_the_database_refuses_half_way_raises_and_leaves_no_row(engine, monkeypatch):
    # Blocks of 3 rows: the refused row (a second decision for the same customer and message) comes
    # after two blocks went to the database (PostgreSQL: handed over by the COPY's writer thread).
    monkeypatch.setattr(dec, "CHUNK", 3)
    ids = np.array([f"C{i}" for i in range(8)] + ["C3"], dtype=object)
    n = len(ids)
    rows = Decisions(ids, np.full(n, "m", dtype=object), np.full(n, "send", dtype=object), np.full(n, 0.5), np.zeros(n),
                     np.full(n, "", dtype=object), np.full(n, "{}", dtype=object))
    with pytest.raises(Exception, match="(?i)unique"), engine.begin() as conn:
        dec.write(conn, "run-1", rows, datetime(2026, 11, 23, tzinfo=UTC))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(dec.DEC)).scalar_one() == 0
    # The same rows without the second decision are written whole.
    with engine.begin() as conn:
        assert dec.write(conn, "run-1", rows.take(np.arange(n - 1)), datetime(2026, 11, 23, tzinfo=UTC)) == n - 1
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(dec.DEC)).scalar_one() == n - 1
