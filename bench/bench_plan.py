"""Benchmark: ``relmail plan`` for the demo campaign (5 messages) on the demo shop.

Prints seconds per stage and peak memory for the bulk plan over every
customer, and the same decisions made the naive way (per customer, ORM
objects, one query per customer) on a slice, as customers per second.

    python bench/bench_plan.py --customers 100000 --backend sqlite
    python bench/bench_plan.py --customers 1000000 --backend postgresql --json
    python bench/bench_plan.py --customers 100000 --history-years 4

``--history-years`` is the demo shop's years of purchases, views, usage and
tickets (default 1): a plan's cost should grow with customers, not with the
years of history a shop has. ``--raw-features`` makes the plan ignore the
feature store (per-customer aggregates) and read every customer's raw events,
as a plan as of a past time does: the same decisions, the cost of the scan
the store replaces. ``--columns`` chooses what the plan does with the
columnar copy of the events (``<store>.columns`` beside the SQLite file, or
the project's ``.relmail/columns`` for PostgreSQL): ``keep`` (default) uses
it as the last run left it (building it when there is none), ``rebuild``
deletes it first (the cost of a store's first plan), ``off`` plans with SQL
alone. The output says whether the copy was read, what bringing it in step
cost and what its NumPy pass cost. ``cpu_seconds`` (the planning process and its workers)
is the figure to compare on a busy machine, where wall time is mostly other
people's work. On PostgreSQL ``server_cpu_seconds`` adds the server's CPU
seconds over the plan (its statements, the ``COPY`` of the decisions), read
from /proc when the server runs on the same machine (else null).
``machine_probe_cpu_seconds`` is how fast the machine was just before the
plan (:func:`machine_probe`): compare plans run at similar probe values.

``--past-runs N`` gives the ledger the N weeks before the measured window
(their decisions, their sends delivered; :mod:`past_runs`), as a store in
its N+1st week holds them: the plan reads that ledger and writes into its
indexes, and its cost should not grow with the weeks it holds either.

``--feature-range N`` times the feature stage alone instead, for one range of
the first N customers (a plan partition's work), with the columnar copy and
with SQL only, twice each, in CPU seconds of this process (its threads
included).

The demo shop is generated once per size and backend and cached (a SQLite
file under ``--cache``, a PostgreSQL database ``relmail_bench_<n>``), in a
child process, so the peak memory reported is the plan's own.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import past_runs  # noqa: E402  (bench/ is not a package)

AS_OF = datetime(2026, 11, 23, 9, tzinfo=UTC)
WINDOW = "2026-W48"
PG_SERVER = os.environ.get("RELMAIL_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def database_url(backend: str, customers: int, cache: Path, years: int = 1, prefix: str = "relmail_bench") -> str:
    suffix = "" if years == 1 else f"-{years}y"
    if backend == "sqlite":
        cache.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{cache / f'demo-{customers}{suffix}.db'}"
    return PG_SERVER.rsplit("/", 1)[0] + f"/{prefix}_{customers}{suffix.replace('-', '_')}"


def ensure_demo(url: str, backend: str, customers: int, years: int = 1) -> float | None:
    """Generate the demo shop at ``url`` unless it is there; returns seconds spent or None if cached."""
    from sqlalchemy import create_engine, select, text

    from relmail.store.db import make_engine, upgrade
    from relmail.store.models import Meta

    if backend == "postgresql":
        admin = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
        name = url.rsplit("/", 1)[1]
        with admin.connect() as conn:
            if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    engine = make_engine(url)
    upgrade(engine)
    with engine.connect() as conn:
        done = conn.execute(select(Meta.__table__.c.value).where(Meta.__table__.c.key == "demo")).first()
    info = json.loads(done[0]) if done else {}
    if info.get("customers") == customers and info.get("history_years", 1) == years:
        if backend == "postgresql":
            _vacuum(engine, "VACUUM")  # a no-op unless an older bench left the store unvacuumed
        return None
    from relmail import demo

    started = time.perf_counter()
    demo.generate(engine, customers=customers, seed=7, as_of=AS_OF, replace=True, history_years=years)
    if backend == "postgresql":
        # What autovacuum does to a freshly loaded store (this machine's server runs with it off;
        # generate() ANALYZEs by itself): without it no page is all-visible, index-only scans read
        # the heap, and every first read of a row sets its hint bits (the 1M demo's audience
        # statements: 11.5 machine CPU-seconds unvacuumed, 7.6 vacuumed).
        _vacuum(engine, "VACUUM")
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    return time.perf_counter() - started


def _vacuum(engine, statement: str) -> None:
    from sqlalchemy import text

    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(statement))


def project_dir(cache: Path, url: str) -> Path:
    """The bench's project folder: one per store under ``cache``, kept, so a PostgreSQL store's columnar copy
    (in the project's ``.relmail/``) outlives the run as a SQLite store's (beside the file) does."""
    from relmail.project import init_project

    root = cache / "projects" / url.rsplit("/", 1)[1]
    if not (root / "relmail.toml").exists():
        init_project(root)
    return root


def clear_run(engine, run_id: str) -> None:
    from relmail.store.models import Decision, Run

    with engine.begin() as conn:
        conn.execute(Decision.__table__.delete().where(Decision.__table__.c.run_id == run_id))
        conn.execute(Run.__table__.delete().where(Run.__table__.c.id == run_id))
    if engine.dialect.name == "postgresql":
        # Vacuum the 2.5M deleted rows now, before anything is timed: a server with autovacuum
        # would do it during the next measured plan, on the same two cores; one without it
        # (this machine's) would have the plan write among dead rows and bloated indexes.
        _vacuum(engine, "VACUUM decisions")
        # And flush what the last plan and the vacuum dirtied: otherwise the next measured plan shares
        # the two cores with the server's checkpoint of the previous one (run to run: 24.7 s, then 34.8 s).
        _vacuum(engine, "CHECKPOINT")


def bulk(url: str, root: Path, workers: int | None, raw_features: bool = False, columns: str = "keep",
         past: int = 0) -> dict:
    from relmail.planning.run import plan
    from relmail.project import Project
    from relmail.store import aggregates, columnar
    from relmail.store.db import make_engine

    if raw_features:
        # Workers are forked from this process (Linux), so they see this too.
        aggregates.current = lambda conn, as_of: False

    engine = make_engine(url)
    project = Project.load(root)
    copy_root = columnar.location(engine, root)
    if columns == "off":
        columnar.for_plan = lambda engine, project_root, as_of: columnar.Updated("none")
    elif columns == "rebuild":
        columnar.remove(copy_root)
    copy_before = copy_root is not None and (copy_root / "current.json").exists()
    clear_run(engine, f"weekly:{WINDOW}")
    history = past_runs.ensure(engine, "weekly", WINDOW, AS_OF, past, lambda: plan(
        project, engine, "weekly", WINDOW, as_of=AS_OF, workers=workers, keep_features=False))
    if history is not None:
        clear_run(engine, f"weekly:{WINDOW}")
        if engine.dialect.name == "postgresql":
            _vacuum(engine, "ANALYZE decisions")
            _vacuum(engine, "ANALYZE deliveries")
    written: list[tuple[float, int]] = []
    cores = CoreMeter()
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        written.append((time.perf_counter() - started, done))

    # As `relmail plan` without --out: the logged features are let go once written.
    used, server = _cpu_seconds(), server_cpu(engine)
    server_before = server() if server else None
    with cores:
        result = plan(project, engine, "weekly", WINDOW, as_of=AS_OF, workers=workers, keep_features=False, progress=progress)
    total = time.perf_counter() - started
    used = _cpu_seconds() - used
    server_used = round(server() - server_before, 2) if server else None
    stages = {
        "audience": result.timings.get("setup", 0) + result.timings.get("audience", 0),
        "columnar copy (brought in step)": result.timings.get("columnar copy", 0),
        "features": result.timings.get("features", 0),
        "ledger context (pending sends, recent tickets)": result.timings.get("ledger context", 0),
        "shared mailboxes (their customers once, their facts per range)": (result.timings.get("mailbox customers", 0)
                                                                           + result.timings.get("shared mailboxes", 0)),
        "features: NumPy over the columnar copy": result.timings.get("features (columnar)", 0),
        "score": result.timings.get("score", 0),
        "rules": result.timings.get("rules", 0),
        "arbitration": result.timings.get("arbitration", 0),
        "decisions (reasons, logged features)": result.timings.get("decisions", 0),
        "ledger write": result.timings.get("ledger write", 0),
        "one e-mail per address": result.timings.get("shared addresses", 0),
    }
    if result.partitions > 1:
        stages["partition overhead (start, transfer, waits)"] = result.timings.get("partition overhead", 0)
    clear_run(engine, f"weekly:{WINDOW}")
    # progress() is called once the audience is known, then after each range is written.
    audience_end, last_write = written[0][0], written[-1][0]
    timeline = {
        "audience_known": round(audience_end, 1),
        "ranges_written": [round(t, 1) for t, _ in written[1:]],
        "committed": round(total, 1),
        "busy_cores": {
            "audience": cores.mean(0, audience_end),
            "deciding and writing": cores.mean(audience_end, last_write),
            "commit": cores.mean(last_write, total),
        },
        "machine_cores": os.cpu_count(),
    }
    read = "features (columnar)" in result.timings
    copy = {"read": read, "copy_seconds": round(result.timings.get("columnar copy", 0), 2),
            "numpy_seconds": round(result.timings.get("features (columnar)", 0), 2),
            "brought_in_step": "none" if copy_root is None or columns == "off" or raw_features
            else "current or appended" if copy_before else "built",
            "events": _copy_events(copy_root)}
    return {"seconds": total, "cpu_seconds": used, "server_cpu_seconds": server_used, "stages": stages,
            "decisions": len(result.decisions), "totals": result.totals,
            "partitions": result.partitions, "timeline": timeline, "columnar": copy,
            "past_runs": {"runs": past, "decisions": _decisions(engine), "created_seconds": history}}


def _decisions(engine) -> int:
    """Decision rows in the ledger (the past runs'; the measured run is cleared by now)."""
    from sqlalchemy import func, select

    from relmail.store.models import Decision

    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Decision.__table__)).scalar_one()


def feature_range(url: str, root: Path, n: int) -> dict:
    """CPU seconds of ``compute_features`` for the first ``n`` customers as one bounded range, with and without the copy."""
    from sqlalchemy import select

    from relmail.campaigns import load_campaign
    from relmail.features import FeatureContext, FeatureSettings, compute_features
    from relmail.planning.run import _categories
    from relmail.project import Project
    from relmail.store import columnar
    from relmail.store.db import make_engine
    from relmail.store.models import Customer

    engine = make_engine(url)
    project = Project.load(root)
    camp = load_campaign(project, "weekly")
    customers = Customer.__table__
    with engine.connect() as conn:
        contexts = {m.id: FeatureContext(topic=m.topic, categories=_categories(conn, m), products=m.products, feature=m.feature,
                                         repeat_after_days=m.repeat_after_days) for m in camp.messages}
        ids = np.array(conn.execute(select(customers.c.id).order_by(customers.c.id).limit(n)).scalars().all())
    copy = columnar.update(engine, columnar.location(engine, root))
    runs = []
    for label, where in (("columns", copy.root), ("sql", None)) * 2:
        cpu, wall = time.process_time(), time.perf_counter()
        with engine.connect() as conn:
            frame = compute_features(conn, ids, AS_OF, contexts, FeatureSettings.from_project(project), bounded=True,
                                     columns=where)
        runs.append({"path": label, "source": frame.source, "cpu_seconds": round(time.process_time() - cpu, 2),
                     "seconds": round(time.perf_counter() - wall, 2), "numpy_seconds": round(frame.seconds.get("columns", 0), 2)})
    engine.dispose()
    return {"customers": len(ids), "copy": copy.action, "runs": runs}


def _copy_events(root: Path | None) -> int:
    """Event rows in the columnar copy at ``root`` (0 when there is none)."""
    current = None if root is None else root / "current.json"
    if current is None or not current.exists():
        return 0
    names = json.loads(current.read_text())["segments"]
    return int(sum(len(np.load(root / name / "id.npy", mmap_mode="r")) for name in names))


def server_cpu(engine):
    """A function giving the CPU seconds the PostgreSQL server has used so far, or None.

    Only for a server on this machine whose processes /proc shows (the
    postmaster's own, its ended backends' and its live ones'): the whole
    server's work while the plan runs, the plan's statements and its COPY
    included, and anything else it serves meanwhile.
    """
    if engine.dialect.name != "postgresql":
        return None
    from sqlalchemy import text

    try:
        with engine.connect() as conn:
            data = conn.execute(text("SELECT setting FROM pg_settings WHERE name = 'data_directory'")).scalar_one()
        pid = int((Path(data) / "postmaster.pid").read_text().split()[0])
        tick = os.sysconf("SC_CLK_TCK")

        def fields(p: int | str) -> list[str]:
            return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()

        fields(pid)
    except (OSError, ValueError, IndexError):
        return None

    def used() -> float:
        own = fields(pid)
        ticks = sum(int(v) for v in own[11:15])  # utime, stime, and those of its ended children
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    f = fields(entry.name)
                except OSError:
                    continue
                if f[1] == str(pid):
                    ticks += int(f[11]) + int(f[12])
        return ticks / tick

    return used


def machine_probe(engine) -> dict:
    """How fast this machine is right now, in CPU seconds of three fixed jobs (smaller is faster).

    The virtual machine's speed changes by the hour and from one machine to the
    next; a plan's figures are comparable with another run's only at similar
    probe values. ``python``: a 10M-step interpreter loop; ``numpy``: sorting
    5M seeded floats; ``server`` (PostgreSQL on this machine): counting 5M
    generated rows, the server backend's CPU.
    """
    t = time.process_time()
    total = 0
    for i in range(10_000_000):
        total += i
    python = time.process_time() - t
    values = np.random.default_rng(0).random(5_000_000)
    t = time.process_time()
    np.sort(values)
    out = {"python": round(python, 3), "numpy": round(time.process_time() - t, 3), "server": None}
    if engine.dialect.name == "postgresql":
        from sqlalchemy import text

        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            stat = Path(f"/proc/{pid}/stat")
            if stat.exists():
                def used() -> float:
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

                before = used()
                conn.execute(text("SELECT count(*) FROM generate_series(1, 5000000)")).scalar_one()
                out["server"] = round(used() - before, 3)
    return out


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the plan's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class CoreMeter:
    """Cores busy (all processes, from /proc/stat) sampled every half second while in use.

    The plan is CPU-bound on every core it is given, so the time it leaves
    cores idle (a phase running on one core while the other waits) is what
    better overlap could win; the rest only less work can.
    """

    def __init__(self, every: float = 0.5):
        self.every, self.samples = every, []
        self._stop = None

    @staticmethod
    def _busy_ticks() -> int:
        """Clock ticks all cores spent on user, nice, system, irq and softirq work since boot."""
        try:
            with open("/proc/stat") as fh:
                f = [int(x) for x in fh.readline().split()[1:8]]
        except OSError:  # not Linux: no figures
            return 0
        return f[0] + f[1] + f[2] + f[5] + f[6]

    def __enter__(self):
        import threading

        self._stop = threading.Event()
        t0 = time.perf_counter()

        hz = os.sysconf("SC_CLK_TCK")

        def sample():
            prev, clock = self._busy_ticks(), time.perf_counter()
            while not self._stop.wait(self.every):
                now, at = self._busy_ticks(), time.perf_counter()
                self.samples.append((at - t0, (now - prev) / hz / max(at - clock, 1e-9)))
                prev, clock = now, at

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def mean(self, start: float, end: float) -> float | None:
        inside = [busy for t, busy in self.samples if start < t <= end]
        return round(sum(inside) / len(inside), 2) if inside else None


def baseline(url: str, root: Path, limit: int) -> dict:
    """The naive way: per customer, ORM objects and one query per customer, one decision object per message."""
    from sqlalchemy import select
    from sqlmodel import Session

    from relmail.campaigns import load_campaign
    from relmail.project import Project
    from relmail.store.db import make_engine
    from relmail.store.models import Customer, Decision, Event, Preference, Product

    engine = make_engine(url)
    camp = load_campaign(Project.load(root), "weekly")
    run_id = "baseline:" + WINDOW
    clear_run(engine, run_id)
    started = time.perf_counter()
    decided = 0
    with Session(engine) as session:
        categories = {p.id: p.category for p in session.exec(select(Product)).scalars()}
        ids = session.exec(select(Customer.id).order_by(Customer.id).limit(limit)).scalars().all()
        for cid in ids:
            customer = session.get(Customer, cid)
            events = session.exec(select(Event).where(Event.customer_id == cid, Event.occurred_at <= AS_OF)).scalars().all()
            prefs = {p.topic: p for p in session.exec(select(Preference).where(Preference.customer_id == cid)).scalars()}
            sent = [e for e in events if e.type == "email_sent"]
            week, month = AS_OF - timedelta(days=7), AS_OF - timedelta(days=30)
            sends_7 = sum(e.occurred_at > week for e in sent)
            sends_30 = sum(e.occurred_at > month for e in sent)
            bought = {e.product_id for e in events if e.type == "purchase"}
            bounced = any(e.type == "email_bounced_hard" for e in events)
            complained = any(e.type == "email_complained" for e in events)
            opened = {e.feature for e in events if e.type == "ticket_opened"} - {e.feature for e in events if e.type == "ticket_closed"}
            unsub = "*" in prefs and not prefs["*"].opted_in
            tenure = (AS_OF - customer.created_at).days
            best, best_ev = None, -1e9
            rows = []
            for m in camp.messages:
                reasons = []
                pref = prefs.get(m.topic)
                if (pref is None and m.policy.consent == "opt-in") or (pref is not None and not pref.opted_in):
                    reasons.append("NO_CONSENT")
                if unsub:
                    reasons.append("UNSUBSCRIBED")
                if bounced:
                    reasons.append("HARD_BOUNCE")
                if complained:
                    reasons.append("COMPLAINED")
                if sends_7 >= 2 or sends_30 >= 6:
                    reasons.append("FREQUENCY_CAP")
                if sum(e.topic == m.topic and e.occurred_at > week for e in sent) >= 1:
                    reasons.append("TOPIC_FREQUENCY_CAP")
                if any(e.message_id == m.id for e in sent):
                    reasons.append("ALREADY_SENT")
                if opened and m.offer != "service":
                    reasons.append("OPEN_TICKET")
                if m.products and m.offer not in ("usage-tip", "service") and bought & set(m.products):
                    reasons.append("OWNS_PRODUCT")
                if m.offer == "new-customers-only" and tenure >= 90:
                    reasons.append("NOT_NEW_CUSTOMER")
                cats = set(m.categories) or {categories.get(p) for p in m.products}
                affinity = sum(1 for e in events if e.type in ("purchase", "view") and categories.get(e.product_id) in cats)
                score = min(1.0, 0.3 + 0.1 * affinity)
                if score < m.policy.min_relevance:
                    reasons.append("LOW_RELEVANCE")
                ev = score * m.value - m.policy.contact_cost
                decision = Decision(run_id=run_id, customer_id=cid, message_id=m.id, action="suppress", score=score,
                                    expected_value=ev, reasons=" ".join(reasons), features={"sends_7": sends_7, "affinity": affinity},
                                    created_at=AS_OF)
                rows.append(decision)
                if not reasons and ev > best_ev:
                    best, best_ev = decision, ev
            for d in rows:
                if d is best:
                    d.action = "send"
                elif not d.reasons:
                    d.reasons = "ARBITRATION_LOST"
                session.add(d)
                decided += 1
        session.commit()
    seconds = time.perf_counter() - started
    clear_run(engine, run_id)
    return {"customers": len(ids), "decisions": decided, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--baseline-customers", type=int, default=20_000, help="Size of the per-customer ORM slice.")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "relmail-bench")
    ap.add_argument("--workers", type=int, default=None, help="Plan worker processes (default: one per core).")
    ap.add_argument("--history-years", type=int, default=1, help="Years of shop history the demo store holds.")
    ap.add_argument("--raw-features", action="store_true", help="Ignore the feature store: read every customer's raw events.")
    ap.add_argument("--columns", choices=["keep", "rebuild", "off"], default="keep",
                    help="The columnar copy of the events: use it as it is, rebuild it first, or plan without it.")
    ap.add_argument("--feature-range", type=int, default=None, metavar="N",
                    help="Time the feature stage alone for the first N customers, with and without the copy.")
    ap.add_argument("--past-runs", type=int, default=0, metavar="N",
                    help="Weeks of ledger before the measured window: N earlier runs' decisions, their sends delivered.")
    ap.add_argument("--pg-prefix", default="relmail_bench", help="Name prefix of the PostgreSQL demo databases.")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    url = database_url(args.backend, args.customers, args.cache, args.history_years, args.pg_prefix)
    if args.generate_only:
        print(json.dumps({"generated_seconds": ensure_demo(url, args.backend, args.customers, args.history_years)}))
        return
    # Generate (or find) the shop in a child, so this process's peak memory is the plan's.
    child = subprocess.run([sys.executable, __file__, "--customers", str(args.customers), "--backend", args.backend,
                            "--pg-prefix", args.pg_prefix,
                            "--cache", str(args.cache), "--history-years", str(args.history_years), "--generate-only"],
                           capture_output=True, text=True)
    if child.returncode:
        sys.exit(child.stderr)
    generated = json.loads(child.stdout.strip().splitlines()[-1])["generated_seconds"]
    root = project_dir(args.cache, url)
    if args.feature_range:
        print(json.dumps(feature_range(url, root, args.feature_range)))
        return
    from relmail.store.db import make_engine

    probe_engine = make_engine(url)
    probe = machine_probe(probe_engine)
    probe_engine.dispose()
    result = bulk(url, root, args.workers, args.raw_features, args.columns, args.past_runs)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # The largest child: a plan worker (the shop check above is a child too: small once the shop is cached).
    worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if result["partitions"] > 1 else 0.0
    base = baseline(url, root, min(args.baseline_customers, args.customers))
    bulk_rate = args.customers / result["seconds"]
    base_rate = base["customers"] / base["seconds"]
    out = {
        "backend": args.backend, "customers": args.customers, "history_years": args.history_years, "messages": 5, "decisions": result["decisions"],
        "demo_generated_seconds": generated, "plan_seconds": round(result["seconds"], 2),
        "cpu_seconds": round(result["cpu_seconds"], 2), "server_cpu_seconds": result["server_cpu_seconds"],
        "raw_features": args.raw_features, "columnar": result["columnar"],
        "stages": {k: round(v, 2) for k, v in result["stages"].items()}, "peak_memory_mb": round(peak_mb),
        "partitions": result["partitions"], "peak_worker_memory_mb": round(worker_mb),
        "totals": result["totals"], "timeline": result["timeline"], "past_runs": result["past_runs"],
        "baseline": {"customers": base["customers"], "seconds": round(base["seconds"], 2), "customers_per_second": round(base_rate)},
        "bulk_customers_per_second": round(bulk_rate), "speedup": round(bulk_rate / base_rate, 1),
        "machine_probe_cpu_seconds": probe,
    }
    if args.json:
        print(json.dumps(out))
        return
    print(f"relmail plan, demo campaign (5 messages), {args.customers:,} customers, {args.history_years} year(s) of history,"
          f" on {args.backend}")
    past = result["past_runs"]
    print(f"ledger before the plan: {past['runs']} past run(s), {past['decisions']:,} decisions"
          + (f" (created in {past['created_seconds']:.1f} s, kept for the next run)" if past["created_seconds"] else ""))
    if generated:
        print(f"(demo shop generated in {generated:.1f} s, cached for the next run)")
    print(f"{'stage':<40}{'seconds':>10}")
    for k, v in result["stages"].items():
        print(f"{k:<42}{v:>10.2f}")
    print(f"{'total (end to end)':<40}{result['seconds']:>10.2f}")
    col = result["columnar"]
    print(f"columnar copy: {'read' if col['read'] else 'not read'} ({col['events']:,} events, {col['brought_in_step']});"
          f" bringing it in step {col['copy_seconds']:.2f} s, its NumPy pass {col['numpy_seconds']:.2f} s")
    print(f"{'CPU seconds (planner and workers)':<40}{result['cpu_seconds']:>10.2f}")
    if result["server_cpu_seconds"] is not None:
        print(f"{'CPU seconds (PostgreSQL server)':<40}{result['server_cpu_seconds']:>10.2f}")
    if result["partitions"] > 1:
        print("(stages of the ranges are their totals shared among the workers; the ledger write of each range\n"
              " overlaps the deciding of the next ones, so the stages add up to more than the total)")
    tl = result["timeline"]
    busy = ", ".join(f"{phase} {v if v is not None else 'n/a'}" for phase, v in tl["busy_cores"].items())
    print(f"timeline: audience known at {tl['audience_known']} s; ranges written at {', '.join(map(str, tl['ranges_written']))} s;"
          f" committed at {tl['committed']} s")
    print(f"cores busy (of {tl['machine_cores']}, whole machine): {busy}")
    print(f"decisions written: {result['decisions']:,}; peak memory {peak_mb:,.0f} MB"
          + (f" (planning process); {result['partitions']} partitions, largest worker {worker_mb:,.0f} MB" if worker_mb else ""))
    print(f"per-customer ORM baseline: {base['customers']:,} customers in {base['seconds']:.1f} s ({base_rate:,.0f}/s)")
    print(f"bulk plan: {bulk_rate:,.0f} customers/s -> {bulk_rate / base_rate:.1f}x faster")
    server = f", PostgreSQL counting 5M rows {probe['server']:.2f} s" if probe["server"] is not None else ""
    print(f"machine probe (CPU s, smaller is faster; compare runs at similar values): 10M-step Python loop"
          f" {probe['python']:.2f} s, sorting 5M floats {probe['numpy']:.2f} s{server}")


if __name__ == "__main__":
    main()
