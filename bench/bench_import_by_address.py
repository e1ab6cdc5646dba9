"""Benchmark: a mailing tool's activity export, naming people by e-mail address, into a store of many customers.

Generates a customers CSV of ``--customers`` (default 100,000; one in fifty
shares its address with another customer, some stored with capitals) and an
activity CSV of ``--rows`` opens and clicks (default 50,000) in the layout
of the importing guide's example mapping: ``Email Address``, ``Timestamp``.
The activity names about a fifth as many people as it has rows; of those,
most are written as stored, a quarter in another case (``Anna.devries@`` for
``anna.devries@``, as mailing tools keep what people typed), and one in a
hundred is no customer at all. The import runs with ``--skip-invalid``, so
those rows go to a rejects file and the rest is imported.

The customers are imported first (not timed); the activity import is timed
inside its own process, as ``relmail import events FILE --map opens.yml
--skip-invalid`` runs it. The output ends with a digest of every stored
(event, customer) pair, so two runs (another version of relmail, another
backend) can be compared for identical results.

    python bench/bench_import_by_address.py --backend both
    python bench/bench_import_by_address.py --customers 20000 --rows 10000 --json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_import import fresh_database, run_child  # noqa: E402 - the sibling benchmark's helpers

MAPPING = """\
kind: events
times: {format: "%Y-%m-%d %H:%M:%S", timezone: UTC}
columns:
  Email Address: email
  Timestamp: {to: occurred_at, parse: time}
  Event: {to: type, parse: lookup, values: {opened: email_opened, clicked: email_clicked}}
drop: [First Name, Last Name]
fields:
  event_id: {template: "{Event} {Email Address} {Timestamp}", parse: slug}
"""

#: One import, timed inside its process; then the digest of what it stored.
IMPORT = r'''
import hashlib, json, sys, time
from sqlalchemy import select
from relmail.importers import import_file
from relmail.store.db import connect
from relmail.store.models import Event
url, kind, path, mapping, skip = sys.argv[1:6]
engine = connect(url)
cpu, wall = time.process_time(), time.perf_counter()
result = import_file(engine, kind, path, mapping=mapping or None, skip_invalid=skip == "1")
seconds, cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
E = Event.__table__
with engine.connect() as conn:
    pairs = conn.execute(select(E.c.event_id, E.c.customer_id).order_by(E.c.event_id)).all()
digest = hashlib.sha256("\n".join(f"{e} {c}" for e, c in pairs).encode()).hexdigest()[:16]
print(json.dumps({**result.as_dict(), "seconds": seconds, "cpu_seconds": cpu_seconds, "events": len(pairs), "digest": digest}))
'''


def recased(address: str, rng: random.Random) -> str:
    """The address in another case, as a person may type it into a sign-up form."""
    local, _, domain = address.rpartition("@")
    how = rng.randrange(3)
    if how == 0:
        local = local[:1].upper() + local[1:]
    elif how == 1:
        local = local.upper()
    else:
        local, domain = local.title(), domain.upper()
    return f"{local}@{domain}"


def generate(folder: Path, customers: int, rows: int, seed: int = 5) -> dict:
    """customers.csv, activity.csv and opens.yml; returns their paths and what the activity holds."""
    rng = random.Random(seed)
    addresses = []
    for i in range(customers):
        if i and i % 50 == 0:
            addresses.append(addresses[rng.randrange(i)])  # a shared mailbox (a couple, a duplicate account)
        elif i % 40 == 1:
            addresses.append(f"Klant.{i}@mail.example")  # stored with a capital, as the source spelled it
        else:
            addresses.append(f"klant.{i}@mail.example")
    path = folder / "customers.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "email", "first_name"])
        w.writerows((f"C{i:07d}", address, f"Klant{i}") for i, address in enumerate(addresses))
    people = max(1, rows // 5)
    spellings = []
    for _ in range(people):
        roll = rng.random()
        if roll < 0.01:
            spellings.append(f"nobody.{rng.randrange(10**9)}@elsewhere.example")
        elif roll < 0.26:
            spellings.append(recased(rng.choice(addresses), rng))
        else:
            spellings.append(rng.choice(addresses))
    activity = folder / "activity.csv"
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with open(activity, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["Email Address", "First Name", "Last Name", "Event", "Timestamp"])
        for n in range(rows):
            when = (start + timedelta(seconds=n * 37 + rng.randrange(30))).strftime("%Y-%m-%d %H:%M:%S")
            w.writerow([rng.choice(spellings), "Klant", "de Vries", rng.choice(["opened", "opened", "clicked"]), when])
    mapping = folder / "opens.yml"
    mapping.write_text(MAPPING, encoding="utf-8")
    return {"customers": path, "activity": activity, "mapping": mapping, "people": people}


def bench_backend(backend: str, folder: Path, files: dict, log) -> dict:
    url, cleanup = fresh_database(backend, folder, f"{backend}-by-address")
    env = dict(os.environ)
    try:
        loaded, _, _ = run_child([IMPORT, url, "customers", str(files["customers"]), "", "0"], env)
        log(f"{backend}: {loaded['rows_imported']:,} customers loaded")
        got, wall, peak = run_child([IMPORT, url, "events", str(files["activity"]), str(files["mapping"]), "1"], env)
        log(f"{backend}: {got['rows_imported']:,} events in {got['seconds']:.1f} s")
    finally:
        cleanup()
    return {"backend": backend, "customers": loaded["rows_imported"], "rows_imported": got["rows_imported"],
            "rows_rejected": got["rows_rejected"], "seconds": round(got["seconds"], 2), "cpu_seconds": round(got["cpu_seconds"], 2),
            "wall_seconds": round(wall, 2), "rows_per_second": got["rows_per_second"], "peak_mb": round(peak),
            "events": got["events"], "digest": got["digest"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000, help="customers in the store (default 100,000)")
    parser.add_argument("--rows", type=int, default=50_000, help="rows of the activity export (default 50,000)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    log = (lambda text: print(text, file=sys.stderr, flush=True)) if not args.json else (lambda text: None)
    with tempfile.TemporaryDirectory(prefix="relmail-bench-") as tmp:
        files = generate(Path(tmp), args.customers, args.rows)
        results = [bench_backend(b, Path(tmp), files, log) for b in backends]
    report = {"customers": args.customers, "rows": args.rows, "people": files["people"], "cpus": os.cpu_count(),
              "load_average": [round(x, 1) for x in os.getloadavg()], "results": results}
    if args.json:
        print(json.dumps(report))
        return
    print(f"Activity export of {args.rows:,} rows naming {files['people']:,} addresses, into {args.customers:,} customers; "
          f"load average at the end {report['load_average']}\n")
    header = f"{'backend':<11} {'imported':>9} {'rejected':>9} {'seconds':>8} {'CPU s':>7} {'rows/s':>9} {'peak MB':>8}  digest"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['backend']:<11} {r['rows_imported']:>9,} {r['rows_rejected']:>9,} {r['seconds']:>8.2f} {r['cpu_seconds']:>7.2f} "
              f"{r['rows_per_second']:>9,} {r['peak_mb']:>8}  {r['digest']}")


if __name__ == "__main__":
    main()
