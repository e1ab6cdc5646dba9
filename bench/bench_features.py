"""Benchmark: the bulk features stage against a per-customer ORM baseline.

Builds (or reuses) a store of N customers with the demo shop generator
(``relmail.demo``; ``RELMAIL_BENCH_SYNTHETIC=1`` uses a simpler built-in
one with about E events per customer), then
times ``compute_features`` for the whole audience with the five demo
messages as contexts, in a fresh subprocess so its peak memory is its own.
The baseline loads each customer's events through the ORM and computes a
subset of the same features in Python; it runs on a sample and is
extrapolated to N (running it on everyone would take hours at 1M).

    python bench/bench_features.py --customers 100000
    python bench/bench_features.py --customers 1000000 --backend postgresql --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

AS_OF = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PRODUCTS = [
    ("EB-200", "E-bike Stad 200", "e-bikes", 2499.0, ["app", "gps-tracking", "battery-saver"]),
    ("LOCK-S1", "SlimSlot S1 smart lock", "accessories", 129.0, ["auto-unlock", "share-access"]),
    ("SERVICE-PLUS", "Onderhoudsbeurt Plus", "maintenance", 89.0, []),
    ("CB-100", "Stadsfiets 100", "city-bikes", 799.0, []),
    ("KB-16", "Kinderfiets 16", "kids-bikes", 299.0, []),
    ("HELMET-1", "Helm", "clothing", 59.0, []),
]
TYPES = np.array(["purchase", "view", "usage", "ticket_opened", "ticket_closed", "email_sent", "email_delivered",
                  "email_opened", "email_clicked", "email_bounced_hard", "email_complained", "email_unsubscribed"])
TYPE_P = np.array([0.06, 0.25, 0.10, 0.01, 0.008, 0.25, 0.14, 0.12, 0.05, 0.002, 0.002, 0.008])
TOPICS = np.array(["newsletter", "promotions", "product-tips", "service"])
MESSAGES = np.array(["ebike-launch", "lock-tip", "welcome-offer", "service-reminder", "newsletter"])


def contexts():
    from relmail.features import FeatureContext

    return {
        "ebike-launch": FeatureContext(topic="promotions", categories=("e-bikes",), products=("EB-200",)),
        "lock-tip": FeatureContext(topic="product-tips", products=("LOCK-S1",), feature="share-access"),
        "welcome-offer": FeatureContext(topic="promotions"),
        "service-reminder": FeatureContext(topic="service", categories=("city-bikes", "e-bikes", "kids-bikes")),
        "newsletter": FeatureContext(topic="newsletter"),
    }


def _ts(seconds: np.ndarray) -> np.ndarray:
    """UTC times (seconds before AS_OF) as SQLite's stored text."""
    base = np.datetime64(AS_OF.replace(tzinfo=None), "us")
    stamps = base - (seconds * 1_000_000).astype("timedelta64[us]")
    return np.char.replace(np.datetime_as_string(stamps, unit="us"), "T", " ")


def build_synthetic(engine, n: int, per_customer: float, seed: int) -> int:
    """A store of ``n`` customers and ~n*per_customer events, inserted in bulk; returns the event count."""
    from sqlalchemy import insert

    from relmail.store import aggregates
    from relmail.store.db import upgrade
    from relmail.store.models import Product

    upgrade(engine)
    rng = np.random.default_rng(seed)
    ids = np.char.add("C", np.char.zfill(np.arange(1, n + 1).astype(str), 7))
    created = _ts(rng.uniform(0, 5 * 365 * 86400, n))
    sqlite = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        conn.execute(insert(Product.__table__), [dict(id=p, name=nm, category=c, price=pr, url=None, features=f)
                                                 for p, nm, c, pr, f in PRODUCTS])
        cust = [(i, f"{i.lower()}@example.com", "nl_NL", "Europe/Amsterdam", c + ("" if sqlite else "+00"), "{}")
                for i, c in zip(ids.tolist(), created.tolist())]
        _bulk(conn, "customers", ("id", "email", "locale", "timezone", "created_at", "attributes"), cust)
        now = _ts(np.zeros(1))[0] + ("" if sqlite else "+00")
        pref_rows = [(i, "promotions", bool(k % 7), None if k % 5 else 3, now, "import")
                     for k, i in enumerate(ids[::3].tolist())]
        _bulk(conn, "preferences", ("customer_id", "topic", "opted_in", "max_per_week", "updated_at", "source"), pref_rows)
    total = int(n * per_customer)
    chunk = 2_000_000
    done = 0
    while done < total:
        m = min(chunk, total - done)
        cust_ix = rng.integers(0, n, m)
        types = TYPES[rng.choice(len(TYPES), m, p=TYPE_P / TYPE_P.sum())]
        ages = rng.exponential(200 * 86400, m)
        when = _ts(ages)
        prod = np.array([p[0] for p in PRODUCTS])[rng.integers(0, len(PRODUCTS), m)]
        email = np.char.startswith(types, "email")
        product = np.where(np.isin(types, ["purchase", "view", "usage"]), prod, None)
        feature = np.where(types == "usage", np.array(["share-access", "app", "auto-unlock"])[rng.integers(0, 3, m)],
                           np.where(np.char.startswith(types, "ticket"), np.char.add("T", rng.integers(0, 3, m).astype(str)), None))
        value = np.where(types == "purchase", rng.choice([129.0, 799.0, 2499.0, 59.0], m),
                         np.where(types == "usage", 1.0, np.nan))
        topic = np.where(email, TOPICS[rng.integers(0, 4, m)], None)
        message = np.where(types == "email_sent", MESSAGES[rng.integers(0, 5, m)], None)
        rows = list(zip(ids[cust_ix].tolist(), types.tolist(), [w + ("" if sqlite else "+00") for w in when.tolist()],
                        product.tolist(), feature.tolist(), [None if np.isnan(v) else v for v in value.tolist()],
                        message.tolist(), topic.tolist()))
        with engine.begin() as conn:
            _bulk(conn, "events", ("customer_id", "type", "occurred_at", "product_id", "feature", "value", "message_id", "topic"), rows)
        done += m
    with engine.begin() as conn:
        aggregates.rebuild(conn)  # the per-customer aggregates every relmail writer keeps
    return total


def _bulk(conn, table: str, cols: tuple[str, ...], rows: list[tuple]) -> None:
    raw = conn.connection.driver_connection
    if conn.dialect.name == "sqlite":
        raw.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)
        return
    with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def stage(url: str) -> dict:
    """The features stage alone, as a plan would run it; in its own process for a clean peak RSS."""
    from relmail.features import compute_features
    from relmail.segments import Segment, audience
    from relmail.store.db import make_engine

    engine = make_engine(url)
    everyone = Segment(name="everyone", description="", file=Path("everyone.yml"), root=None)
    t0 = time.perf_counter()
    ids = audience(engine, [everyone], AS_OF)
    t1 = time.perf_counter()
    frame = compute_features(engine, ids, AS_OF, contexts())
    t2 = time.perf_counter()
    return {"customers": len(frame), "columns": len(frame.columns), "audience_s": round(t1 - t0, 2),
            "features_s": round(t2 - t1, 2), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "mean_opens_90": float(np.mean(frame["opens_90"]))}


def baseline(url: str, sample: int) -> dict:
    """Per-customer ORM: load each customer's events and compute a few features in Python."""
    from sqlmodel import Session, select

    from relmail.store.db import make_engine
    from relmail.store.models import Customer, Event

    engine = make_engine(url)
    with Session(engine) as session:
        ids = session.exec(select(Customer.id).order_by(Customer.id).limit(sample)).all()
        t0 = time.perf_counter()
        for cid in ids:
            evs = session.exec(select(Event).where(Event.customer_id == cid, Event.occurred_at <= AS_OF)).all()
            cut30, cut90 = AS_OF - timedelta(days=30), AS_OF - timedelta(days=90)
            purchases = [e for e in evs if e.type == "purchase"]
            _ = (max((e.occurred_at for e in purchases), default=None), sum(e.value or 0 for e in purchases),
                 sum(1 for e in evs if e.type == "email_opened" and e.occurred_at > cut30),
                 sum(1 for e in evs if e.type == "email_opened" and e.occurred_at > cut90),
                 sum(1 for e in evs if e.type == "email_sent" and e.occurred_at > cut30))
        elapsed = time.perf_counter() - t0
    return {"sample": len(ids), "seconds": round(elapsed, 2), "per_customer_ms": round(1000 * elapsed / max(len(ids), 1), 3)}


def prepare(backend: str, n: int, per_customer: float, seed: int, workdir: Path) -> tuple[str, int, float]:
    from sqlalchemy import create_engine, func, select, text

    from relmail.store.db import make_engine
    from relmail.store.models import Event

    name = f"relmail_bench_{n}_{int(per_customer)}_{seed}"
    if backend == "sqlite":
        url = f"sqlite:///{workdir / (name + '.db')}"
        fresh = not (workdir / (name + ".db")).exists()
    else:
        admin = create_engine(os.environ.get("RELMAIL_BENCH_POSTGRES_URL", PG_DEFAULT), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            fresh = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is None
            if fresh:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = admin.url.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    t0 = time.perf_counter()
    if fresh:
        demo = None
        try:
            from relmail import demo  # noqa: F401  (the demo shop, once it exists)
        except ImportError:
            demo = None
        if demo is not None and hasattr(demo, "generate") and os.environ.get("RELMAIL_BENCH_SYNTHETIC") != "1":
            from relmail.store.db import upgrade

            upgrade(engine)
            demo.generate(engine, customers=n, seed=seed, as_of=AS_OF)
        else:
            build_synthetic(engine, n, per_customer, seed)
        if backend == "postgresql":
            with engine.begin() as conn:
                conn.execute(text("ANALYZE"))
    build_s = time.perf_counter() - t0
    with engine.connect() as conn:
        events = conn.execute(select(func.count()).select_from(Event.__table__)).scalar_one()
    engine.dispose()
    return url, events, build_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--events-per-customer", type=float, default=20.0)
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    ap.add_argument("--baseline-sample", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default=os.environ.get("TMPDIR", "/tmp"))
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        print(json.dumps(stage(args.stage)))
        return
    results = []
    for backend in (["sqlite", "postgresql"] if args.backend == "both" else [args.backend]):
        url, events, build_s = prepare(backend, args.customers, args.events_per_customer, args.seed, Path(args.workdir))
        out = subprocess.run([sys.executable, __file__, "--stage", url], capture_output=True, text=True, check=True)
        bulk = json.loads(out.stdout.strip().splitlines()[-1])
        base = baseline(url, min(args.baseline_sample, args.customers))
        extrapolated = base["per_customer_ms"] * args.customers / 1000
        results.append({"backend": backend, "customers": args.customers, "events": events, "build_s": round(build_s, 1),
                        **bulk, "baseline": base, "baseline_extrapolated_s": round(extrapolated, 1),
                        "speedup": round(extrapolated / max(bulk["features_s"], 1e-9), 1)})
    if args.json:
        print(json.dumps({"benchmark": "features", "as_of": AS_OF.isoformat(), "results": results}))
        return
    head = f"{'backend':<11}{'customers':>11}{'events':>12}{'audience s':>12}{'features s':>12}{'peak MB':>10}{'ORM s (extrap.)':>17}{'speedup':>9}"
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['backend']:<11}{r['customers']:>11,}{r['events']:>12,}{r['audience_s']:>12.2f}{r['features_s']:>12.2f}"
              f"{r['peak_rss_mb']:>10.0f}{r['baseline_extrapolated_s']:>17.1f}{r['speedup']:>8.0f}x")
    print(f"\nORM baseline: {results[0]['baseline']['sample']} customers timed, extrapolated linearly; "
          f"features stage in a fresh process (peak RSS includes Python and libraries).")


if __name__ == "__main__":
    main()
