"""Benchmark: the change log (``event_changes``) over rounds of corrected events, compacted or kept whole.

Fills a demo shop (``--customers``, one year of history) and builds the
columnar copy. Then ``--rounds`` times a relmail writer corrects ``--share``
of the events (a new value, as a re-import of corrected orders does) and
refreshes the aggregates in its transaction; a "weekly" copy is brought in
step after every round, a "monthly" one after every fourth, and both are
timed against writing a copy anew; in CPU seconds of this process (which
a busy or paused machine does not distort; on PostgreSQL they leave out
the server's work) and in wall seconds. Two fresh databases get the same
corrections round by round: one compacts its log (relmail's behaviour), the
other keeps it whole (as migration 0008 did: every row, no customer index).

    python bench/bench_change_log.py --customers 5000 --backend sqlite --json
    python bench/bench_change_log.py --customers 5000 --backend postgresql --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import bindparam, text

from relmail import demo
from relmail.store import aggregates, changes, columnar
from relmail.store.db import make_engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_import import fresh_database  # noqa: E402 - the sibling benchmark's helper

AS_OF = datetime(2026, 11, 30, 9, tzinfo=UTC)


class Store:
    """One of the two databases: compacting its log or keeping it whole, with its copies and timings."""

    def __init__(self, backend: str, folder: Path, customers: int, compact: bool):
        self.compact, self.folder = compact, folder
        self.url, self.cleanup = fresh_database(backend, folder, f"log-{compact}")
        self.engine = make_engine(self.url)
        if not compact:
            with self.engine.begin() as conn:
                conn.execute(text("DROP INDEX ix_event_changes_customer_id_id"))
        demo.generate(self.engine, customers=customers, seed=3, as_of=AS_OF)
        with self.engine.connect() as conn:
            self.ids = np.array(conn.execute(text("SELECT id FROM events ORDER BY id")).scalars().all())
        self.copies = {name: folder / f"{name}-{compact}.columns" for name in ("weekly", "monthly")}
        for root in self.copies.values():
            columnar.update(self.engine, root)
        self.cpu = {"refresh": 0.0, "compaction": 0.0, "weekly": 0.0, "monthly": 0.0, "build": 0.0}
        self.wall = dict(self.cpu)
        self.actions: dict[str, dict[str, int]] = {"weekly": {}, "monthly": {}}

    @contextlib.contextmanager
    def timing(self, name: str):
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.cpu[name] += time.process_time() - cpu
            self.wall[name] += time.perf_counter() - wall

    def correct(self, picked: list[int], week: int) -> None:
        """A writer's corrections and its refresh, then the copies whose turn it is."""
        real = changes.compact

        def timed(conn, customer_ids=None):
            with self.timing("compaction"):
                return real(conn, customer_ids) if self.compact else 0

        changes.compact = timed
        try:
            with self.engine.begin() as conn:
                for start in range(0, len(picked), 500):
                    conn.execute(_update(picked[start:start + 500]))
                with self.timing("refresh"):
                    aggregates.refresh(conn)
        finally:
            changes.compact = real
        for name, root in self.copies.items():
            if name == "weekly" or week % 4 == 0:
                with self.timing(name):
                    done = columnar.update(self.engine, root)
                self.actions[name][done.action] = self.actions[name].get(done.action, 0) + 1

    def summary(self, rounds: int, share: float) -> dict:
        with self.timing("build"):
            columnar.update(self.engine, self.folder / f"fresh-{self.compact}.columns", rebuild=True)
        with self.engine.connect() as conn:
            kept = conn.execute(text("SELECT count(*) FROM event_changes")).scalar_one()
            logged = changes.latest(conn)
        return {"compaction": self.compact, "events": len(self.ids), "changed_per_round": int(share * len(self.ids)),
                "rounds": rounds, "rows_logged": logged, "rows_kept": kept,
                "cpu_s": {k: round(v, 3) for k, v in self.cpu.items()},
                "wall_s": {k: round(v, 3) for k, v in self.wall.items()},
                "copy_updates": self.actions}

    def close(self) -> None:
        self.engine.dispose()
        self.cleanup()


def run(backend: str, folder: Path, customers: int, rounds: int, share: float) -> list[dict]:
    """Both stores, round by round in step (so a busy machine slows both alike), the same events corrected in each."""
    stores = [Store(backend, folder, customers, compact) for compact in (True, False)]
    try:
        rng = np.random.default_rng(11)
        for week in range(1, rounds + 1):
            picked = rng.choice(stores[0].ids, size=int(share * len(stores[0].ids)), replace=False).tolist()
            for store in stores:
                store.correct(picked, week)
        return [store.summary(rounds, share) for store in stores]
    finally:
        for store in stores:
            store.close()


def _update(ids: list[int]):
    """A correction of these events' values, as a re-import of corrected orders writes it."""
    return text("UPDATE events SET value = coalesce(value, 0) + 1 WHERE id IN :ids").bindparams(
        bindparam("ids", value=ids, expanding=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=104, help="rounds of corrections (default 104: two years of weekly ones)")
    parser.add_argument("--share", type=float, default=0.002, help="share of the events corrected per round (default 0.002)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = {"backend": args.backend, "customers": args.customers,
               "runs": run(args.backend, Path(tmp), args.customers, args.rounds, args.share)}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for r in out["runs"]:
        cpu = r["cpu_s"]
        copies = "; ".join(f"{name} copy {cpu[name]} s {r['copy_updates'][name]}" for name in ("weekly", "monthly"))
        print(f"{'compacted' if r['compaction'] else 'kept whole'}: {r['rows_kept']:,} of {r['rows_logged']:,} rows kept; "
              f"CPU seconds: refreshes {cpu['refresh']} (compaction {cpu['compaction']}); {copies}; a build {cpu['build']}")


if __name__ == "__main__":
    main()
