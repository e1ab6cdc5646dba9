"""The unknown-name check of ``relmail segments show``: the newest events only, against every event.

A segment naming a topic, a message and a campaign that nothing knows makes
the check look for each among the events, which have no index on those
columns. The bounded look reads the newest ``relmail.store.mailed.LATEST``
events; the baseline reads them all (the same statements with a bound
above the store's size), which grows with the history. Median of
``--repeat`` calls of ``unknown_names``, on the demo shop that
``bench_plan.py`` generates and caches::

    python bench/bench_unknown_names.py --customers 100000 --backend sqlite
    python bench/bench_unknown_names.py --customers 100000 --backend postgresql --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_plan import database_url, ensure_demo, project_dir  # noqa: E402  (bench/ is not a package)

SEGMENT = """\
name: bench-typos
any:
  - consent: {topic: gift-guide}
  - received_email: {message: ebike-lanch, within_days: 30}
  - opened_email: {campaign: sping}
"""


def timed(engine, project, segment, repeat: int) -> float:
    from relmail.campaigns import declared_messages
    from relmail.segments.describe import unknown_names

    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        found = unknown_names(engine, segment, project.settings.section("topics"), declared_messages(project))
        seconds.append(time.perf_counter() - started)
        assert len(found) == 3, found
    return statistics.median(seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "relmail-bench"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--db-prefix", default="relmail_bench", help="PostgreSQL: the demo database's name before _<customers>")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    from sqlalchemy import func, select

    from relmail.project import Project
    from relmail.segments import load_segments
    from relmail.store import mailed
    from relmail.store.db import make_engine
    from relmail.store.models import Event

    url = database_url(args.backend, args.customers, Path(args.cache), prefix=args.db_prefix)
    ensure_demo(url, args.backend, args.customers)
    root = project_dir(Path(args.cache), url)
    (root / "segments" / "bench-typos.yml").write_text(SEGMENT)
    project = Project.load(root)
    segment = load_segments(project)["bench-typos"]
    engine = make_engine(url)
    with engine.connect() as conn:
        events = conn.execute(select(func.count()).select_from(Event.__table__)).scalar_one()
    bound = mailed.LATEST
    bounded = timed(engine, project, segment, args.repeat)
    mailed.LATEST = events + 1  # the same statements over every event: what the check costs without a bound
    everything = timed(engine, project, segment, args.repeat)
    result = {"benchmark": "unknown_names", "backend": args.backend, "customers": args.customers, "events": events,
              "latest": bound, "bounded_s": round(bounded, 3),
              "every_event_s": round(everything, 3)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.backend}: {events:,} events; three unknown names: newest {bound:,} events {bounded:.2f} s, "
              f"every event {everything:.2f} s (median of {args.repeat})")


if __name__ == "__main__":
    main()
