"""A large build of the columnar copy reads its ranges in worker processes and writes the copy one process would."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import func, insert, select

from relmail.features import FeatureContext, compute_features
from relmail.store import aggregates, columnar
from relmail.store.models import Customer, Event

T = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
CUSTOMERS = [f"C{i:02d}" for i in range(12)]
TYPES = ["purchase", "view", "usage", "email_sent", "email_opened", "email_clicked", "ticket_opened"]
CONTEXTS = {"news": FeatureContext(topic="newsletter", products=("P1",), feature="share")}


def _store(engine) -> None:
    rng = np.random.default_rng(3)
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__), [
            dict(id=c, email=f"{c.lower()}@example.com", locale="en_GB", timezone="UTC", created_at=T - timedelta(days=900),
                 attributes={}) for c in CUSTOMERS])
        conn.execute(insert(Event.__table__), [
            dict(customer_id=str(rng.choice(CUSTOMERS)), type=str(rng.choice(TYPES)),
                 occurred_at=T - timedelta(days=int(rng.integers(0, 400)), seconds=int(rng.integers(0, 86_400))),
                 product_id=str(rng.choice(["P1", "P2"])) if i % 3 else None, value=float(rng.integers(0, 500)) if i % 2 else None,
                 message_id="news" if i % 5 == 0 else None, topic="newsletter" if i % 5 == 0 else None,
                 feature="share" if i % 7 == 0 else None)
            for i in range(300)])
        aggregates.rebuild(conn)


def _rows(root) -> dict[str, np.ndarray]:
    """Every row of the copy at ``root``, by event id, strings decoded."""
    current = columnar._read_current(root)
    copy = columnar._load(root, current)
    parts = [columnar._rows_of(seg) for seg in copy.segments]
    rows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(rows["id"])
    return {k: v[order] for k, v in rows.items()}


_original_task = columnar._build_task


def _pids_task(url, root, lo, hi):
    """The build task, leaving the id of the process that ran it beside the copy."""
    (Path(root) / f"pid-{os.getpid()}-{lo}").touch()
    return _original_task(url, root, lo, hi)


def test_a_large_build_reads_in_worker_processes_and_equals_a_one_process_build(engine, tmp_path, monkeypatch):
    _store(engine)
    monkeypatch.setattr(columnar, "BUILD_ROWS", 40)  # 300 events: 8 ranges
    single = tmp_path / "single"
    columnar.update(engine, single, rebuild=True)  # below PARALLEL_BUILD_ROWS: in this process

    monkeypatch.setattr(columnar, "PARALLEL_BUILD_ROWS", 1)
    monkeypatch.setattr(columnar, "BUILD_WORKERS", 2)
    monkeypatch.setattr(columnar, "_build_task", _pids_task)
    parallel = tmp_path / "parallel"
    out = columnar.update(engine, parallel, rebuild=True)

    pids = {p.name.split("-")[1] for p in parallel.glob("pid-*")}
    assert len(list(parallel.glob("pid-*"))) == 8 and str(os.getpid()) not in pids, "every range read by a worker process"
    with engine.connect() as conn:
        copied_types = conn.execute(select(func.count()).select_from(Event.__table__)
                                    .where(Event.__table__.c.type.in_(columnar.TYPES))).scalar_one()
    assert out.action == "built" and out.events == copied_types and out.segments == 8
    one, many = _rows(single), _rows(parallel)
    assert one.keys() == many.keys()
    for key in one:
        np.testing.assert_array_equal(one[key], many[key], err_msg=key)
    # The copy a plan reads: the same features as the raw events.
    ids = np.array(CUSTOMERS)
    copied = compute_features(engine, ids, T, CONTEXTS, columns=parallel)
    raw = compute_features(engine, ids, T, CONTEXTS, use_aggregates=False)
    assert copied.source == "columns"
    for name, values in raw.columns.items():
        assert np.allclose(values, copied[name], rtol=1e-12, atol=1e-12, equal_nan=True), name
