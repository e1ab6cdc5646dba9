"""Benchmark: the full weekly job — plan, render, deliver to a local SMTP sink — and ``--workers 2`` vs ``--workers 1``.

One run measures, on the demo shop (5 messages in the example campaign ``weekly``):

1. **plan**: seconds per stage and peak memory;
2. **render stage**: ``send`` through the file adapter to a temporary outbox,
   with 1 and with 2 worker processes (a dry run always renders in one
   process, so it cannot show the workers' speed-up; the file adapter is the
   closest to "render only" that runs the real claim → render → record loop);
3. **full send**: ``send`` to a local SMTP sink (aiosmtpd in its own process,
   the one of ``bench/bench_smtp.py``) with 1 and with 2 worker processes;
4. with ``--executor dask`` (PostgreSQL only): the render stage and the full
   send again on a Dask ``LocalCluster`` of 2 worker processes (1 thread
   each), started once before the sends (its start-up is reported, not
   counted), and its overhead against the 2 local processes of the same run.

Every send starts from an identical copy of the planned store (a SQLite
backup of the file; a PostgreSQL ``CREATE DATABASE … TEMPLATE``), so both
worker counts send exactly the same e-mails. The planned store is
``ANALYZE``d once after planning (not timed with either stage). The baseline is ``--workers 1``
in the same run.

    python bench/bench_job.py --customers 20000
    python bench/bench_job.py --customers 100000 --json
    python bench/bench_job.py --backend postgresql --latency-ms 5 --pool 8
    python bench/bench_job.py --backend postgresql --executor dask

Peak memory is the resident set size (``ru_maxrss``) of each measured phase,
run in its own child process: ``RUSAGE_SELF`` for the planning/sending
process and ``RUSAGE_CHILDREN`` for its largest worker. tracemalloc would
miss what NumPy, SQLite and the database driver allocate outside Python's
allocator and would slow every allocation of the phase it measures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_plan import AS_OF, PG_SERVER, WINDOW, clear_run, database_url, project_dir  # noqa: E402
from bench_smtp import _free_port, _sink  # noqa: E402

RUN_ID = f"weekly:{WINDOW}"
SIGNING_KEY = "bench-signing-key-not-secret-0123456789abcdef"


# --- stores ---------------------------------------------------------------------------------------------------

def clone(src_url: str, backend: str, name: str, workdir: Path) -> str:
    """An identical, independent copy of the store at ``src_url``; returns its URL."""
    if backend == "sqlite":
        import sqlite3

        dst = workdir / f"{name}.db"
        dst.unlink(missing_ok=True)
        # The backup API, not a file copy: a consistent snapshot even if another process uses the cache.
        src = sqlite3.connect(src_url.removeprefix("sqlite:///"))
        out = sqlite3.connect(dst)
        with out:
            src.backup(out)
        src.close()
        out.close()
        return f"sqlite:///{dst}"
    from sqlalchemy import create_engine, text

    base = PG_SERVER.rsplit("/", 1)[0]
    admin = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{src_url.rsplit("/", 1)[1]}"'))
    admin.dispose()
    return f"{base}/{name}"


def drop(url: str, backend: str) -> None:
    if backend == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
        return
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}"'))
    admin.dispose()


def reset_run(url: str) -> None:
    """Remove any run of the benchmark's window (a cached store another benchmark was using)."""
    from relmail.store.db import make_engine
    from relmail.store.models import Delivery

    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(Delivery.__table__.delete().where(Delivery.__table__.c.run_id == RUN_ID))
    clear_run(engine, RUN_ID)
    engine.dispose()


def analyze(url: str) -> float:
    """Fresh planner statistics on the planned copy; returns the seconds it took.

    A store whose statistics predate an index (a cached demo shop upgraded
    to migration 0003) lets SQLite answer the send path's per-customer
    queries through the (type, time) index: a scan of a year of events per
    batch instead of a lookup per customer.
    """
    from sqlalchemy import create_engine, text

    started = time.perf_counter()
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()
    return time.perf_counter() - started


def configure(root: Path, adapter: str, port: int | None, pool: int) -> None:
    """Point the example project at the file adapter (temp outbox) or the SMTP sink."""
    toml = root / "relmail.toml"
    text = toml.read_text()
    if adapter == "smtp":
        text = text.replace('adapter = "file"', 'adapter = "smtp"')
        text += (f'\n[delivery.smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
                 f'helo = "bench.local"\npool_size = {pool}\nmessages_per_connection = 1000\n')
    else:
        text = text.replace('outbox = "outbox"', f'outbox = "{root / "outbox"}"')
    toml.write_text(text)


# --- measured phases (each in its own child process) ----------------------------------------------------------

def _peaks() -> dict:
    return {"peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "worker_peak_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}


def phase_plan(url: str, root: Path) -> dict:
    from relmail.planning.run import plan
    from relmail.project import Project
    from relmail.store.db import make_engine

    engine = make_engine(url)
    started = time.perf_counter()
    result = plan(Project.load(root), engine, "weekly", WINDOW, as_of=AS_OF)
    seconds = time.perf_counter() - started
    sends = int((result.decisions.action == "send").sum()) if hasattr(result.decisions.action, "sum") else \
        sum(a == "send" for a in result.decisions.action)
    return {"seconds": seconds, "stages": dict(result.timings), "decisions": len(result.decisions), "sends": sends,
            **_peaks()}


def phase_send(url: str, root: Path, workers: int, batch_size: int, scheduler: str | None = None) -> dict:
    from relmail.project import Project
    from relmail.sending.run import send
    from relmail.store.db import make_engine

    engine = make_engine(url)
    ticks: list[tuple[float, int]] = []  # (seconds since start, e-mails accepted) after every batch

    def progress(done: dict) -> None:
        ticks.append((time.perf_counter() - started, done.get("accepted", 0)))

    started = time.perf_counter()
    result = send(Project.load(root), engine, "weekly", WINDOW, workers=workers, batch_size=batch_size, progress=progress,
                  executor="dask" if scheduler else "local", scheduler=scheduler)
    peaks = _peaks()
    if scheduler:
        import distributed

        # The Dask workers are not our children: ask them (their peak since the cluster started).
        with distributed.Client(scheduler) as client:
            rss = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        peaks["worker_peak_mb"] = round(max(rss.values()) / 1024)
    # Steady state: from the first finished batch to the last, leaving out the fixed costs (ledger
    # recovery/prepare, spawning workers, compiling templates, loading the catalogue).
    steady = (ticks[-1][1] - ticks[0][1]) / (ticks[-1][0] - ticks[0][0]) if len(ticks) > 1 and ticks[-1][0] > ticks[0][0] else 0.0
    return {"seconds": result.seconds, "workers": result.workers, "done": result.done, "states": result.states,
            "render_errors": len(result.render_errors), "first_batch_seconds": ticks[0][0] if ticks else 0.0,
            "steady_per_second": steady, **peaks}


def run_phase(args, phase: str, url: str, root: Path, workers: int = 1, scheduler: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--url", url, "--root", str(root), "--workers", str(workers),
           "--batch-size", str(args.batch_size)] + (["--scheduler", scheduler] if scheduler else [])
    child = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "RELMAIL_SIGNING_KEY": SIGNING_KEY})
    if child.returncode:
        sys.exit(f"{phase} (workers={workers}) failed:\n{child.stderr}")
    return json.loads(child.stdout.strip().splitlines()[-1])


# --- the run --------------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="a network round trip in front of the SMTP sink"
                         " (a relay across a network; see bench_smtp.py)")
    ap.add_argument("--pool", type=int, default=4, help="SMTP connections per sending process")
    ap.add_argument("--batch-size", type=int, default=500, help="deliveries per claimed batch")
    ap.add_argument("--repeat", type=int, default=1,
                    help="send each configuration N times, alternating the order; the fastest counts")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "relmail-bench")
    ap.add_argument("--executor", choices=["local", "dask"], default="local",
                    help="dask: also run the sends on a LocalCluster of 2 worker processes (PostgreSQL only)")
    ap.add_argument("--sends", default="file,smtp",
                    help="which sends to measure: file (the render stage), smtp (full send to the sink), or both")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--scheduler", help=argparse.SUPPRESS)
    ap.add_argument("--phase", choices=["plan", "send"], help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.phase == "plan":
        print(json.dumps(phase_plan(args.url, args.root)))
        return
    if args.phase == "send":
        print(json.dumps(phase_send(args.url, args.root, args.workers, args.batch_size, args.scheduler)))
        return
    if args.executor == "dask" and args.backend != "postgresql":
        sys.exit("--executor dask needs --backend postgresql (Dask workers do not share a SQLite file)")

    cached = database_url(args.backend, args.customers, args.cache)
    # bench_plan generates (or finds) the cached demo shop, in a child process.
    gen = subprocess.run([sys.executable, str(Path(__file__).with_name("bench_plan.py")), "--customers", str(args.customers),
                          "--backend", args.backend, "--cache", str(args.cache), "--generate-only"], capture_output=True, text=True)
    if gen.returncode:
        sys.exit(gen.stderr)
    generated = json.loads(gen.stdout.strip().splitlines()[-1])["generated_seconds"]

    workdir = Path(tempfile.mkdtemp(prefix="relmail-bench-job-", dir=args.cache))
    tag = f"relmail_benchjob_{os.getpid()}"
    port = _free_port()
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    sink = ctx.Process(target=_sink, args=(port, ready, stop, None, None, args.latency_ms / 1000), daemon=True)
    sink.start()
    planned = plan_root = cluster = None
    sends: dict[tuple[str, int | str], dict] = {}
    cluster_seconds = 0.0
    try:
        if not ready.wait(30):
            sys.exit("SMTP sink did not start")
        planned = clone(cached, args.backend, f"{tag}_planned", workdir)
        reset_run(planned)
        plan_root = project_dir()
        plan_out = run_phase(args, "plan", planned, plan_root)
        analyze_seconds = analyze(planned)
        if args.executor == "dask":
            import distributed

            t0 = time.perf_counter()
            cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                               worker_dashboard_address=None)
            cluster_seconds = time.perf_counter() - t0
        for adapter in [a for a in ("file", "smtp") if a in args.sends.split(",")]:
            for rep in range(args.repeat):
                # Alternate the order: a send that follows another runs on a machine still writing back
                # the previous one's outbox and clone (it measured 1.6x slower at 1M either way round).
                order = (1, 2) if rep % 2 == 0 else (2, 1)
                for workers in order + (("dask",) if cluster else ()):
                    root = project_dir()
                    configure(root, adapter, port, args.pool)
                    url = clone(planned, args.backend, f"{tag}_{adapter}_{workers}", workdir)
                    # The copy's dirty pages (gigabytes at 1M customers) are written back before the clock starts.
                    os.sync()
                    try:
                        if workers == "dask":
                            out = run_phase(args, "send", url, root, 2, cluster.scheduler_address)
                        else:
                            out = run_phase(args, "send", url, root, workers)
                    finally:
                        drop(url, args.backend)
                        shutil.rmtree(root.parent, ignore_errors=True)
                    out["runs"] = sends.get((adapter, workers), {}).get("runs", []) + [round(out["seconds"], 2)]
                    # The fastest repetition counts (as timeit does): noise only ever adds time.
                    if (adapter, workers) not in sends or out["seconds"] < sends[(adapter, workers)]["seconds"]:
                        sends[(adapter, workers)] = out
                    else:
                        sends[(adapter, workers)]["runs"] = out["runs"]
    finally:
        if cluster is not None:
            cluster.close()
        stop.set()
        sink.join(10)
        if planned:
            drop(planned, args.backend)
        if plan_root:
            shutil.rmtree(plan_root.parent, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)

    def row(adapter: str, workers: int | str) -> dict:
        r = sends[(adapter, workers)]
        n = r["done"].get("accepted", 0)
        return {"workers": r["workers"], "seconds": round(r["seconds"], 2), "emails": n,
                "emails_per_second": round(n / r["seconds"]) if r["seconds"] else 0,
                "first_batch_seconds": round(r["first_batch_seconds"], 2), "steady_per_second": round(r["steady_per_second"]),
                "peak_mb": r["peak_mb"], "worker_peak_mb": r["worker_peak_mb"], "render_errors": r["render_errors"],
                "runs_seconds": r["runs"]}

    def speedups(rows: dict) -> dict:
        steady = rows[2]["steady_per_second"] / rows[1]["steady_per_second"] if rows[1]["steady_per_second"] else 0.0
        return {"speedup": round(rows[1]["seconds"] / rows[2]["seconds"], 2), "steady_speedup": round(steady, 2)}

    measured = [a for a in ("file", "smtp") if (a, 1) in sends]
    stage_names = {"file": "render_stage", "smtp": "send_smtp"}
    rows_of = {a: {w: row(a, w) for w in (1, 2)} for a in measured}
    out = {
        "backend": args.backend, "customers": args.customers, "messages": 5, "latency_ms": args.latency_ms,
        "cpus": os.cpu_count(), "demo_generated_seconds": generated, "analyze_seconds": round(analyze_seconds, 2),
        "plan": {"seconds": round(plan_out["seconds"], 2), "decisions": plan_out["decisions"], "sends": plan_out["sends"],
                 "stages": {k: round(v, 2) for k, v in plan_out["stages"].items()}, "peak_mb": plan_out["peak_mb"]},
    }
    for a in measured:
        out[stage_names[a]] = {"workers_1": rows_of[a][1], "workers_2": rows_of[a][2], **speedups(rows_of[a])}
    if "smtp" in rows_of:
        out["job_seconds"] = {f"workers_{w}": round(plan_out["seconds"] + rows_of["smtp"][w]["seconds"], 2) for w in (1, 2)}
    if cluster is not None:
        def overhead(stage: dict, dask_row: dict) -> dict:
            local = stage["workers_2"]
            return {"dask_2_workers": dask_row,
                    "overhead_seconds": round(dask_row["seconds"] - local["seconds"], 2),
                    "dask_over_local": round(dask_row["seconds"] / local["seconds"], 2) if local["seconds"] else 0.0,
                    "steady_dask_over_local": round(local["steady_per_second"] / dask_row["steady_per_second"], 2)
                    if dask_row["steady_per_second"] else 0.0}

        out["dask"] = {"cluster_start_seconds": round(cluster_seconds, 2),
                       **{stage_names[a]: overhead(out[stage_names[a]], row(a, "dask")) for a in measured}}
    if args.json:
        print(json.dumps(out))
        return

    print(f"relmail full job, demo campaign (5 messages), {args.customers:,} customers on {args.backend}, "
          f"{os.cpu_count()} CPUs")
    if generated:
        print(f"(demo shop generated in {generated:.1f} s, cached for the next run)")
    print(f"\nplan: {plan_out['decisions']:,} decisions, {plan_out['sends']:,} e-mails to send, "
          f"peak memory {plan_out['peak_mb']:,} MB")
    print(f"  {'stage':<30}{'seconds':>10}")
    for k, v in plan_out["stages"].items():
        print(f"  {k:<30}{v:>10.2f}")
    print(f"  {'total':<30}{plan_out['seconds']:>10.2f}")
    print(f"\n{'send stage':<34}{'workers':>8}{'seconds':>9}{'e-mails':>10}{'e-mails/s':>11}{'1st batch s':>12}"
          f"{'steady/s':>10}{'peak MB':>9}{'worker MB':>10}")
    labels = {"file": "render (file adapter, tmp outbox)", "smtp": f"render + SMTP sink ({args.latency_ms:g} ms)"}
    for adapter in measured:
        rows = dict(rows_of[adapter])
        if cluster is not None:
            rows["dask"] = row(adapter, "dask")
        for w, r in rows.items():
            workers = f"dask {r['workers']}" if w == "dask" else r["workers"]
            print(f"{labels[adapter]:<34}{workers:>8}{r['seconds']:>9.2f}{r['emails']:>10,}{r['emails_per_second']:>11,}"
                  f"{r['first_batch_seconds']:>12.2f}{r['steady_per_second']:>10,}"
                  f"{r['peak_mb']:>9,}{(r['worker_peak_mb'] if w != 1 else '-'):>10}"
                  + (f"  (runs: {', '.join(f'{x:.1f}' for x in r['runs_seconds'])} s)" if len(r["runs_seconds"]) > 1 else ""))
    print("\nspeed-up of --workers 2 over --workers 1, end to end (steady state, first batch to last):")
    for adapter in measured:
        st = out[stage_names[adapter]]
        print(f"  {'render stage' if adapter == 'file' else 'full send'} {st['speedup']}x ({st['steady_speedup']}x)")
    if "job_seconds" in out:
        print(f"whole job (plan + send): {out['job_seconds']['workers_1']:.1f} s with 1 worker, "
              f"{out['job_seconds']['workers_2']:.1f} s with 2")
    if cluster is not None:
        print(f"Dask LocalCluster (2 worker processes, started in {out['dask']['cluster_start_seconds']:.1f} s, not counted) "
              "against 2 local processes, time ratio (seconds added; steady-state ratio):")
        for adapter in measured:
            d = out["dask"][stage_names[adapter]]
            print(f"  {'render stage' if adapter == 'file' else 'full send'} {d['dask_over_local']}x "
                  f"({d['overhead_seconds']:+.2f} s; steady {d['steady_dask_over_local']}x)")

if __name__ == "__main__":
    main()
