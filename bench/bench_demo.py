"""Benchmark: demo-shop generation against a plain SQLAlchemy Core load of the same rows.

Runs ``relmail.demo.generate`` for ``--customers`` (default 100,000) in a
fresh subprocess per backend (so peak memory is its own) and reports
customers/s, events/s, total events and peak RSS.  The baseline generates
the very same rows but writes them the way a first version would: SQLAlchemy
Core ``insert()`` executemany with per-value type processing (datetimes
through ``UTCDateTime``, JSON through the JSON type) and all indexes kept
during the load.  It runs on ``--baseline-customers`` (default 20,000) and
is extrapolated to ``--customers``.

    python bench/bench_demo.py --customers 20000
    python bench/bench_demo.py --customers 1000000 --backend sqlite --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime

AS_OF = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _child(mode: str, url: str, customers: int) -> None:
    """Runs inside the subprocess: one generation, prints one JSON line."""
    from relmail import demo
    from relmail.store.db import make_engine, upgrade

    engine = make_engine(url)
    upgrade(engine)
    if mode == "baseline":
        _use_core_writer(demo)
    started = time.perf_counter()
    result = demo.generate(engine, customers=customers, seed=7, as_of=AS_OF, replace=True)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"customers": customers, "events": result.total_events, "seconds": seconds, "peak_mb": peak_mb}))


def _use_core_writer(demo) -> None:
    from relmail.store.models import Customer, Event, Preference

    tables = {"customers": Customer.__table__, "preferences": Preference.__table__, "events": Event.__table__}
    times = {"created_at", "updated_at", "occurred_at"}

    def write(conn, table, columns, rows):
        dicts = []
        for row in rows:
            d = dict(zip(columns, row))
            for key in times & d.keys():
                d[key] = datetime.fromisoformat(d[key].replace("+00", "")).replace(tzinfo=UTC)
            if "attributes" in d:
                d["attributes"] = json.loads(d["attributes"])
            dicts.append(d)
        if dicts:
            conn.execute(tables[table].insert(), dicts)

    demo.store.write = write
    demo.store.drop_indexes = lambda conn: None
    demo.store.create_indexes = lambda conn: None


def _run(mode: str, backend: str, customers: int, pg_url: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        if backend == "sqlite":
            url = f"sqlite:///{tmp}/bench.db"
        else:
            from sqlalchemy import create_engine, text

            name = f"relmail_bench_demo_{os.getpid()}_{mode}"
            admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = pg_url.rsplit("/", 1)[0] + "/" + name
        try:
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--url", url, "--customers", str(customers)],
                check=True, capture_output=True, text=True,
            )
        finally:
            if backend == "postgresql":
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--baseline-customers", type=int, default=20_000)
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--pg-url", default=os.environ.get("RELMAIL_BENCH_POSTGRES_URL", PG_DEFAULT))
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.url, args.customers)
        return

    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    report = {"customers": args.customers, "baseline_customers": min(args.baseline_customers, args.customers), "backends": {}}
    for backend in backends:
        ours = _run("relmail", backend, args.customers, args.pg_url)
        base = _run("baseline", backend, report["baseline_customers"], args.pg_url)
        base_seconds = base["seconds"] * args.customers / base["customers"]
        report["backends"][backend] = {
            "relmail": ours,
            "baseline": {**base, "extrapolated_seconds": base_seconds},
            "speedup": base_seconds / ours["seconds"],
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"demo shop generation, {args.customers:,} customers (baseline measured on {report['baseline_customers']:,}, extrapolated)")
    print(f"{'backend':<11} {'writer':<30} {'events':>12} {'seconds':>9} {'events/s':>11} {'peak MB':>8}")
    for backend, r in report["backends"].items():
        o, b = r["relmail"], r["baseline"]
        print(f"{backend:<11} {'relmail (COPY/executemany)':<30} {o['events']:>12,} {o['seconds']:>9.1f} "
              f"{o['events'] / o['seconds']:>11,.0f} {o['peak_mb']:>8.0f}")
        rate = b["events"] / b["seconds"]
        print(f"{'':<11} {'baseline (Core insert)':<30} {b['events'] * args.customers // b['customers']:>12,} "
              f"{b['extrapolated_seconds']:>9.1f} {rate:>11,.0f} {b['peak_mb']:>8.0f}")
        print(f"{'':<11} speed-up x{r['speedup']:.1f}")


if __name__ == "__main__":
    main()
