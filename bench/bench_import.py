"""Benchmark: relmail's streaming bulk import against a naive ORM import of the same events file.

Generates a customers CSV and an events CSV (``--rows``, default 1,000,000)
into a temporary folder, loads the customers and products, then imports the
events twice into fresh databases, each in its own subprocess so peak
memory (RSS) is measured per importer:

* relmail: ``relmail import events FILE`` (validation, bulk upserts, one
  transaction), then the same file again (every event upserted);
* bare: the same import into a store that does not keep the feature store
  (no per-customer aggregates, no change-log triggers), first and again;
  relmail's time against it is what keeping the feature store costs;
* naive: one ``Event`` ORM object per row, ``session.add``, per-row
  validation (parse, check the customer and product with ``session.get``),
  one commit at the end: what a first version of an importer usually is.

Prints rows/s, peak MB and the ratio; ``--json`` prints one object.

    python bench/bench_import.py --rows 100000 --backend sqlite
    python bench/bench_import.py --backend both --json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

PG_ADMIN_URL = os.environ.get("RELMAIL_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")

PRODUCTS = [
    ("EB-200", "E-bike Stad 200", "e-bikes", 2499.0, "app|gps-tracking|battery-saver"),
    ("LOCK-S1", "SlimSlot S1 smart lock", "accessories", 129.0, "auto-unlock|share-access"),
    ("SERVICE-PLUS", "Onderhoudsbeurt Plus", "maintenance", 89.0, ""),
    ("CITY-7", "Stadsfiets 7", "city-bikes", 649.0, ""),
    ("KIDS-16", "Kinderfiets 16", "kids-bikes", 229.0, ""),
    ("HELMET-A", "Helm Aero", "clothing", 59.0, ""),
]
TYPES = (["view"] * 40 + ["email_sent"] * 20 + ["email_opened"] * 10 + ["usage"] * 15 + ["purchase"] * 5
         + ["email_clicked"] * 6 + ["ticket_opened"] * 2 + ["ticket_closed"] * 2)

#: The naive importer: what a straightforward first version looks like.
NAIVE = r'''
import csv, sys, time
from datetime import datetime
from sqlmodel import Session
from relmail.store.db import make_engine
from relmail.store.models import Customer, Event, Product, EVENT_TYPES

url, path, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
engine = make_engine(url)
started = time.perf_counter()
count = 0
with Session(engine) as session, open(path, newline="", encoding="utf-8") as fh:
    for row in csv.DictReader(fh):
        if count == limit:
            break
        occurred = datetime.fromisoformat(row["occurred_at"])
        if occurred.tzinfo is None:
            raise SystemExit(f"line {count + 2}: occurred_at has no time zone")
        if row["type"] not in EVENT_TYPES:
            raise SystemExit(f"line {count + 2}: unknown type")
        if session.get(Customer, row["customer_id"]) is None:
            raise SystemExit(f"line {count + 2}: unknown customer")
        if row["product_id"] and session.get(Product, row["product_id"]) is None:
            raise SystemExit(f"line {count + 2}: unknown product")
        session.add(Event(
            event_id=row["event_id"] or None, customer_id=row["customer_id"], type=row["type"], occurred_at=occurred,
            product_id=row["product_id"] or None, feature=row["feature"] or None,
            value=float(row["value"]) if row["value"] else None, message_id=row["message_id"] or None,
            run_id=row["run_id"] or None, topic=row["topic"] or None,
        ))
        count += 1
    session.commit()
print(f'{{"rows_imported": {count}, "seconds": {time.perf_counter() - started}}}')
'''

#: relmail's importer, through the real command line.
RELMAIL = "import sys; from relmail.cli import main; sys.argv = ['relmail'] + sys.argv[1:]; main()"


def generate(folder: Path, rows: int, seed: int = 7) -> tuple[Path, Path, Path, int]:
    """customers.csv, products.csv and events.csv; returns the paths and the customer count."""
    rng = random.Random(seed)
    n_customers = max(100, rows // 50)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    amsterdam = timezone(timedelta(hours=1))
    customers = folder / "customers.csv"
    with open(customers, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "email", "first_name", "locale", "timezone", "created_at", "loyalty_tier", "city"])
        for i in range(1, n_customers + 1):
            w.writerow([f"C{i:07d}", f"klant{i}@example.nl", f"Klant{i}", "nl_NL", "Europe/Amsterdam",
                        (start - timedelta(days=i % 900)).isoformat(), rng.choice(["new", "regular", "loyal"]), "Utrecht"])
    products = folder / "products.csv"
    with open(products, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "name", "category", "price", "features"])
        w.writerows(PRODUCTS)
    events = folder / "events.csv"
    with open(events, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["event_id", "customer_id", "type", "occurred_at", "product_id", "feature", "value", "message_id", "run_id", "topic"])
        for i in range(rows):
            kind = rng.choice(TYPES)
            when = (start + timedelta(seconds=rng.randrange(300 * 86400))).astimezone(amsterdam).isoformat()
            product = feature = value = message = run = topic = ""
            if kind in ("view", "purchase", "usage"):
                product = rng.choice(PRODUCTS)[0]
            if kind == "purchase":
                value = f"{rng.choice(PRODUCTS)[3]:.2f}"
            if kind == "usage":
                product, feature, value = "LOCK-S1", rng.choice(["auto-unlock", "share-access"]), str(rng.randint(1, 9))
            if kind.startswith("ticket"):
                feature = f"T{rng.randint(1, 9999)}"
            if kind.startswith("email"):
                message, run, topic = rng.choice(["newsletter", "ebike-launch"]), "weekly-2025-W10", rng.choice(["newsletter", "promotions"])
            w.writerow([f"E{i:09d}", f"C{rng.randint(1, n_customers):07d}", kind, when, product, feature, value, message, run, topic])
    return customers, products, events, n_customers


def fresh_database(backend: str, folder: Path, label: str, feature_store: bool = True) -> tuple[str, callable]:
    """An upgraded, empty database; returns its URL and a cleanup function.

    ``feature_store=False``: without what keeps the feature store in step
    (the per-customer aggregates are never built, the change log's triggers
    are dropped), to measure what keeping it costs an import.
    """
    from sqlalchemy import create_engine, text

    from relmail.store.db import make_engine, upgrade

    if backend == "sqlite":
        url = f"sqlite:///{folder / f'{label}.db'}"
        cleanup = lambda: None  # noqa: E731 - the temp folder goes as a whole
    else:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        name = f"relmail_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

        def cleanup() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

    engine = make_engine(url)
    upgrade(engine)
    if not feature_store:
        on = " ON events" if backend == "postgresql" else ""
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM meta WHERE key = 'feature_store'"))
            for trigger in ("events_changed", "events_deleted"):
                conn.execute(text(f"DROP TRIGGER {trigger}{on}"))
    engine.dispose()
    return url, cleanup


def run_child(args: list[str], env: dict[str, str]) -> tuple[dict, float, float]:
    """Run a child, return (its JSON output, wall seconds, its own peak RSS in MB)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.PIPE, stderr=err, env=env)
        out = proc.stdout.read()
        # wait4 gives this child's own rusage; RUSAGE_CHILDREN would be the
        # maximum over all children so far, hiding a smaller second one.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"child {args[0][:40]!r} failed ({proc.returncode}): {err.read().decode()[-2000:]}")
    peak_mb = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2**20
    return json.loads(out), wall, peak_mb


def bench_backend(backend: str, rows: int, folder: Path, files, naive_rows: int, log) -> dict:
    from relmail.project import init_project

    customers, products, events, _ = files
    result: dict = {"backend": backend, "rows": rows}
    for label in ("relmail", "bare", "naive"):
        url, cleanup = fresh_database(backend, folder, f"{backend}-{label}", feature_store=label != "bare")
        try:
            env = {**os.environ, "RELMAIL_DATABASE_URL": url, "RELMAIL_SIGNING_KEY": "bench"}
            project = folder / f"project-{backend}-{label}"
            if not project.exists():
                os.environ["RELMAIL_DATABASE_URL"] = url
                init_project(project)
            base = [RELMAIL, "--project", str(project), "import"]
            run_child([*base, "customers", str(customers), "--json"], env)
            run_child([*base, "products", str(products), "--json"], env)
            if label != "naive":
                out, wall, peak = run_child([*base, "events", str(events), "--json"], env)
                # The same file again: every event is looked up and upserted, every customer's aggregates redone.
                again, _, _ = run_child([*base, "events", str(events), "--json"], env)
                result[f"{label}_again_seconds"] = round(again["seconds"], 2)
            else:
                out, wall, peak = run_child([NAIVE, url, str(events), str(naive_rows)], env)
            # rows/s over the importer's own clock (file open to commit), so
            # interpreter start-up, the same for both, does not blur small runs.
            result[label] = {
                "rows_imported": out["rows_imported"],
                "seconds": round(out["seconds"], 2),
                "wall_seconds": round(wall, 2),
                "rows_per_second": round(out["rows_imported"] / out["seconds"]),
                "peak_mb": round(peak, 1),
            }
            log(f"{backend} {label}: {result[label]}")
        finally:
            cleanup()
    result["speedup"] = round(result["relmail"]["rows_per_second"] / result["naive"]["rows_per_second"], 1)
    # What keeping the feature store in step costs an import (target: at most 1.3x), first import and re-import.
    result["feature_store_cost"] = round(result["relmail"]["seconds"] / result["bare"]["seconds"], 2)
    result["feature_store_cost_again"] = round(result["relmail_again_seconds"] / result["bare_again_seconds"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="events in the generated file (default 1,000,000)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument(
        "--naive-rows",
        type=int,
        default=None,
        help="rows of the same file the naive importer gets (default: all; it runs at a few hundred rows/s, "
        "and its per-row cost only grows with the table, so a prefix flatters it)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    with tempfile.TemporaryDirectory(prefix="relmail-bench-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        files = generate(folder, args.rows)
        generated = time.perf_counter() - t0
        file_mb = round(files[2].stat().st_size / 2**20, 1)
        naive_rows = min(args.naive_rows or args.rows, args.rows)
        log = (lambda text: print(text, file=sys.stderr, flush=True)) if not args.json else (lambda text: None)
        results = [bench_backend(b, args.rows, folder, files, naive_rows, log) for b in backends]
    report = {
        "rows": args.rows,
        "customers": files[3],
        "file_mb": file_mb,
        "generate_seconds": round(generated, 1),
        "naive_rows": naive_rows,
        "cpus": os.cpu_count(),
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "results": results,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"Import of {args.rows:,} events ({file_mb} MB CSV, {files[3]:,} customers), {os.cpu_count()} CPUs; file generated in {generated:.1f} s")
    note = "" if naive_rows == args.rows else f"; the naive importer got the first {naive_rows:,} rows of the same file"
    print(f"load average at the end {report['load_average']}{note}\n")
    header = f"{'backend':<11} {'importer':<8} {'rows':>10} {'seconds':>8} {'wall s':>8} {'rows/s':>9} {'peak MB':>8}"
    print(header)
    print("-" * len(header))
    for r in results:
        for label in ("relmail", "bare", "naive"):
            x = r[label]
            print(f"{r['backend']:<11} {label:<8} {x['rows_imported']:>10,} {x['seconds']:>8.1f} {x['wall_seconds']:>8.1f} "
                  f"{x['rows_per_second']:>9,} {x['peak_mb']:>8.0f}")
    print()
    for r in results:
        verdict = "ok" if r["speedup"] >= 10 and r["relmail"]["peak_mb"] < 500 else "BELOW TARGET"
        print(f"{r['backend']}: relmail is {r['speedup']}x faster than the naive ORM import, "
              f"peak {r['relmail']['peak_mb']:.0f} MB ({verdict}: >= 10x, < 500 MB)")
        kept = "ok" if max(r["feature_store_cost"], r["feature_store_cost_again"]) <= 1.3 else "ABOVE TARGET"
        print(f"{r['backend']}: keeping the feature store in step costs {r['feature_store_cost']}x the import without it, "
              f"{r['feature_store_cost_again']}x on a re-import of the same file ({r['relmail_again_seconds']} s against "
              f"{r['bare_again_seconds']} s) ({kept}: <= 1.3x)")


if __name__ == "__main__":
    main()
