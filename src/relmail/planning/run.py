"""Plan a campaign for a window: audience → features → score → rules → arbitration → hold-outs → ledger.

:func:`plan` is the library API behind ``relmail plan``. It writes one run
(``<campaign>:<window>``) and one decision per (customer, message) of each
message's audience: ``send``, ``holdout`` or ``suppress``, with the score,
the expected value, every reason code that applies, and the features the
decision used. ``dry_run=True`` computes the same and writes nothing.

A window is planned once. ``replan=True`` replaces the decisions whose
e-mail has not left (no delivery, or one that is planned, deferred, rejected
or failed) and keeps those that were delivered or are being delivered;
kept pairs are not decided again and count against the customer's budget.

With a trained model for a message (``models/<message>/``, policy ``model:
auto``, the default) the plan scores it with :class:`relmail.score.model.ModelScorer`:
arbitration ranks by the model's expected value and the rules
``NEGATIVE_UPLIFT`` and ``NOT_WORTH_IT`` apply. Without one nothing changes.

Frequency caps hold across runs: e-mails already sent (``email_sent``
events) and ``send`` decisions of other runs within 30 days that are not
delivered yet both count (see :func:`relmail.planning.pending.pending`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select

from ..campaigns import Campaign, load_campaign
from ..campaigns.parse import line_in_file, missing_templates, missing_templates_error
from ..errors import ConfigError, Conflict, Problem, ValidationError
from ..executors import get_executor
from ..features import FeatureContext, FeatureSettings
from ..features.sql import analytic, parallel_connections
from ..score.transparent import make_scorer
from ..segments import audience, evaluator, load_segments
from ..segments.columnar import Evaluator
from ..store import columnar, locks
from ..store.faults import translated
from ..store.models import Product, Run
from ..windows import Window, current_time, resolve_window
from . import addresses, shared_mailbox, transaction
from . import decisions as dec
from .catalogue_warning import catalogue_warnings
from .consent_warning import consent_warnings
from .mailbox_budget import MailboxRooms
from .model_warning import model_warnings
from .partition import CustomerRange, Laps, MessageSummary, PartitionResult, PlanJob, decide_partition, partition_task
from .pending import kept_decisions
from .result import PlanOptions, PlanResult, run_id_for
from .topic_check import check_topics

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..project import Project

RUNS, DEC = Run.__table__, dec.DEC



@translated
def plan(project: Project, engine: Engine, campaign: str | Campaign, window: str | Window, options: PlanOptions | None = None,
         /, **overrides: Any) -> PlanResult:
    """Plan ``campaign`` for ``window`` and (unless ``dry_run``) record it in the ledger.

    ``campaign`` is a name under ``campaigns/``, a file path or a loaded
    :class:`Campaign`; ``window`` a window name (``2026-W48``, ``next-week``,
    ``auto``) or a :class:`Window`. The options are a :class:`PlanOptions`,
    or its fields as keywords (``plan(..., dry_run=True)``); keywords
    override the fields of ``options``. Raises :class:`Conflict` if the
    window has a run and ``replan`` is false, :class:`LockHeld` (a kind of
    :class:`Conflict`) if another process holds the run's lock: writing a plan holds the lock (see
    :mod:`relmail.store.locks`) from before the first read to the commit, so
    a replan can never replace decisions a sender is working on.

    ``workers`` (None: one per core) splits an audience of more than
    :data:`MIN_PARTITION` customers per worker into ranges of customer ids
    (at least one per worker, at most :data:`MAX_PARTITION` customers each),
    decided in parallel on ``executor`` (``local`` processes, ``dask`` at
    ``scheduler``, or an :class:`relmail.executors.Executor`); each range is
    written to the ledger as it arrives, inside the run's one transaction,
    and the decisions are the same for any split. ``keep_features=False``
    drops the logged features from :attr:`PlanResult.decisions` as each
    range is written (they are in the ledger; a large plan then holds far
    less in memory).
    """
    opts = replace(options or PlanOptions(), **overrides)
    if opts.customers is not None and not opts.dry_run:
        raise ValueError("plan(customers=...) decides part of an audience: only a dry run may do that")
    camp = campaign if isinstance(campaign, Campaign) else load_campaign(project, campaign)
    now = opts.now or current_time()
    win = resolve_window(window, project.settings.timezone, cadence=opts.cadence, campaign=camp, now=now)
    run_id = run_id_for(camp.name, win.key)
    with _run_lock(project, engine, run_id, opts) as lock:
        return _plan(project, engine, camp, win, run_id, now, opts, lock)


@contextmanager
def _run_lock(project, engine, run_id: str, opts: PlanOptions) -> Iterator[locks.HeldLock | None]:
    """The run's lock for a plan that writes: the caller's, or taken here and released at the end."""
    if opts.dry_run:
        yield None
    elif opts.lock is not None:
        if opts.lock.key != run_id:
            raise ValueError(f"plan(lock=...) holds the lock on {opts.lock.key}, not on run {run_id}")
        yield opts.lock
    else:
        with locks.acquire(engine, run_id, timeout=opts.lock_timeout or locks.timeout_for(project)) as held:
            yield held


def _plan(project, engine, camp: Campaign, win: Window, run_id: str, now: datetime, opts: PlanOptions,
          lock: locks.HeldLock | None) -> PlanResult:
    lap = Laps()
    timings = lap.timings
    dry_run = opts.dry_run
    as_of = (opts.as_of or win.default_as_of(now)).astimezone(UTC)
    segments = load_segments(project)
    _check_segments(camp, segments)
    _check_templates(camp, project.templates_dir)
    topics = set(project.settings.section("topics"))
    check_topics(engine, camp, topics)
    seed = camp.run_seed(win.key)
    scorer = opts.scorer
    if scorer is None:
        from ..score.model import ModelScorer, find_models

        models = find_models(project, camp)
        scorer = ModelScorer(make_scorer(camp), models, camp.scoring.model_weight) if models else make_scorer(camp)

    # Bring the columnar copy of the events in step once, here, for the audience and every partition to read.
    columns = columnar.for_plan(engine, project.root, as_of).root
    lap("columnar copy")
    with engine.connect() as conn:
        existing = conn.execute(select(RUNS.c.id).where(RUNS.c.campaign == camp.name, RUNS.c.window == win.key)).first()
        if existing is not None and not opts.replan and not dry_run:
            n = conn.execute(select(DEC.c.id).where(DEC.c.run_id == existing[0]).limit(1)).first()
            raise Conflict(
                f"window {win.key} of campaign '{camp.name}' is planned already (run {existing[0]}"
                f"{', with decisions' if n else ''}); use --replan to replace the decisions not delivered yet"
            )
        kept = kept_decisions(conn, run_id) if existing is not None else {}
        replaced = 0
        if existing is not None:
            total = conn.execute(select(func.count()).select_from(DEC).where(DEC.c.run_id == run_id)).scalar_one()
            replaced = total - sum(len(v) for v in kept.values())
        lap("setup")
        copy = columnar.open_copy(columns, conn) if columns is not None else None
        members = _audiences(conn, camp, segments, as_of, None if copy is None else evaluator(analytic(conn), copy, as_of))
        if opts.customers is not None:
            # With the customers who share an address with them: one e-mail per address decides them together.
            wanted = np.array(sorted(set(opts.customers) | addresses.sharing(conn, opts.customers)), dtype=str)
            members = {key: ids[np.isin(ids, wanted)] for key, ids in members.items()}
        ids = _union(list(members.values()))
        lap("audience")
        consent = project.settings.consent
        contexts = {m.id: FeatureContext(topic=m.topic, categories=_categories(conn, m), products=m.products, feature=m.feature,
                                         repeat_after_days=m.repeat_after_days, global_consent=consent.global_counts_for(m.topic))
                    for m in camp.messages}
        settings = FeatureSettings.from_project(project)
        clock = time.perf_counter()
        mailboxes = shared_mailbox.read(conn, ids, as_of, contexts, camp, run_id, settings)
        timings["mailbox customers"] = time.perf_counter() - clock

    job = PlanJob(camp, win, run_id, seed, as_of, kept, contexts, settings, scorer, None if columns is None else str(columns),
                  mailboxes)
    pool = _executor(engine, opts.executor, opts.workers, opts.scheduler)
    ranges = partition_ranges(len(ids), pool.workers if pool is not None else 1)
    at_once = min(len(ranges), pool.workers if pool is not None else 1)
    summaries: list[MessageSummary] | None = None
    infos, stage_times, write_time = [], {}, 0.0
    k = len(camp.messages)
    parts: list[list[dec.Decisions]] = [[] for _ in range(k)]
    send_addresses: list[list[np.ndarray | None]] = [[] for _ in range(k)]
    rooms: list[MailboxRooms | None] = []
    started = time.perf_counter()
    progress = opts.progress
    if progress is not None:
        progress(0, len(ids))
    try:
        with ExitStack() as stack:
            outs = stack.enter_context(closing(_partitions(pool, engine, job, ids, members, ranges)))
            conn = None
            for (_, decided), out in zip(ranges, outs):
                for stage, spent in out.timings.items():
                    stage_times[stage] = stage_times.get(stage, 0.0) + spent
                if summaries is None:
                    summaries = out.summaries
                else:
                    for total, piece in zip(summaries, out.summaries):
                        total.add(piece)
                infos.append(out.models)
                if not dry_run:
                    clock = time.perf_counter()
                    if conn is None:
                        # One transaction for the whole run, so a failure leaves no half-written plan. It
                        # opens with the first range decided; each range is written as it arrives while
                        # the workers decide the next ones.
                        conn = stack.enter_context(transaction.ledger(engine, job, existing is not None, now))
                    transaction.write_range(conn, run_id, out, now)
                    # A planner that lost its lock (it stalled past the timeout) must not commit.
                    lock.refresh_in(conn)
                    write_time += time.perf_counter() - clock
                for j in range(k):
                    # Written, and nobody asked for them back: free the logged features now.
                    parts[j].append(out.parts[j] if opts.keep_features or dry_run else out.parts[j].without_features())
                    send_addresses[j].append(out.send_addresses[j] if out.send_addresses else None)
                rooms.append(out.rooms)
                del out
                if progress is not None:
                    progress(decided, len(ids))
            clock = time.perf_counter()
            if summaries is not None:
                transaction.one_per_address(engine, conn, camp, run_id, parts, send_addresses, summaries, kept, mailboxes,
                                            MailboxRooms.concat(rooms, k))
            timings["shared addresses"] = time.perf_counter() - clock
            clock = time.perf_counter()
        if not dry_run:
            write_time += time.perf_counter() - clock  # the commit
    finally:
        if pool is not None and isinstance(opts.executor, str):
            pool.close()  # made here (a Dask client connection): ours to release; a caller's executor stays open
    wall = time.perf_counter() - started
    # Ranges ran ``at_once`` at a time: a stage's wall time is its total over the ranges, shared among them.
    for stage, spent in stage_times.items():
        timings[stage] = spent / at_once
    if not dry_run:
        timings["ledger write"] = write_time
    if len(ranges) > 1:
        # Starting workers, shipping ranges out and decisions back, waiting on the slowest: what partitioning costs.
        timings["partition overhead"] = max(0.0, wall - sum(timings[st] for st in stage_times) - write_time
                                            - timings.get("shared addresses", 0.0))
    for summary in summaries:
        summary.kept = len(kept.get(summary.message_id, ()))
    # Message by message, each message's rows in customer order: the same result for any split.
    decisions = dec.Decisions.concat([piece for j in range(k) for piece in parts[j]])
    del parts
    if opts.customers is not None:
        decisions = decisions.take(np.flatnonzero(np.isin(decisions.customer_id.astype(str), list(opts.customers))))
    models_used = _merged_models(infos)
    widths = {key: len(model.columns) for key, model in getattr(scorer, "models", {}).items()}
    return PlanResult(
        run_id=run_id, campaign=camp.name, window=win, as_of=as_of, seed=seed, dry_run=dry_run, replan=opts.replan,
        decisions=decisions, messages=summaries, kept=sum(len(v) for v in kept.values()), replaced=max(replaced, 0),
        kept_pairs=kept, models=models_used, timings=timings, partitions=len(ranges), decided_at=now,
        warnings=[*catalogue_warnings(engine, camp, summaries, segments, topics),
                  *consent_warnings(engine, camp, summaries, project.settings.consent, topics),
                  *model_warnings(models_used, widths, summaries)],
    )


#: How much lower the CPU priority of a plan's local worker processes is than the planning process's.
#: The planning process writes each decided range into the ledger through one connection, the plan's
#: critical path; on a machine with every core busy, workers deciding later ranges give way to it.
WORKER_NICENESS = 5
#: Fewest customers a worker process is worth starting for (below it, one process decides all).
MIN_PARTITION = 50_000
#: Most customers decided at once by one process: a larger audience is cut into more ranges than
#: workers, so a process holds less and the ledger write of the first ranges overlaps the next.
MAX_PARTITION = 125_000


def partition_ranges(n: int, workers: int, min_size: int | None = None, max_size: int | None = None) -> list[tuple[int, int]]:
    """``[start, stop)`` index ranges splitting ``n`` sorted customers among ``workers``.

    As many ranges as workers, never one under ``min_size`` (default
    :data:`MIN_PARTITION`) customers, so a small audience stays in one
    process; more ranges where that is needed to keep each under
    ``max_size`` (default :data:`MAX_PARTITION`).
    """
    min_size = MIN_PARTITION if min_size is None else min_size
    # At least twice min_size, or cutting to max_size could leave a range under min_size.
    max_size = max(MAX_PARTITION if max_size is None else max_size, 2 * min_size, 1)
    k = max(1, min(workers, n // max(min_size, 1)), -(-n // max_size))
    edges = [round(i * n / k) for i in range(k + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a] or [(0, n)]


def _partitions(pool, engine, job: PlanJob, ids: np.ndarray, members: dict[tuple, np.ndarray],
                ranges: list[tuple[int, int]]) -> Iterator[PartitionResult]:
    """Each range's :class:`PartitionResult`, in order, as soon as it (and those before it) are decided."""
    if len(ranges) == 1:
        yield decide_partition(engine, job, CustomerRange(ids, members))
        return
    parts = (CustomerRange(ids[a:b], _slice(members, ids[a], ids[b - 1]), bounded=True) for a, b in ranges)
    if pool is None:
        # One process, several ranges: one range's features and decisions in memory at a time.
        for part in parts:
            yield decide_partition(engine, job, part)
        return
    url = engine.url.render_as_string(hide_password=False)
    results = pool.imap(partition_task, [(url, job, part) for part in parts])
    with closing(results):
        yield from results


def _executor(engine, name, workers: int | None, scheduler: str | None):
    """Where partitions run: None for this process only (one worker), else an executor.

    ``name`` is an executor name or an :class:`relmail.executors.Executor` already made.
    """
    if workers is not None and workers < 1:
        raise ConfigError("--workers must be at least 1")
    remote = getattr(name, "remote", name == "dask")
    if remote and engine.dialect.name == "sqlite":
        raise ConfigError("--executor dask needs a database every worker can reach (PostgreSQL); "
                          "a SQLite file is not shared between machines")
    if not isinstance(name, str):
        return name
    if name == "local" and (workers == 1 or (workers is None and (os.cpu_count() or 1) == 1)):
        return None

    return get_executor(name, workers=workers, scheduler=scheduler, niceness=WORKER_NICENESS)


def _merged_models(infos: list[dict[str, dict]]) -> dict[str, dict]:
    """The partitions' model accounts as one: a feature missing in any partition is missing."""
    out: dict[str, dict] = {}
    for info in infos:
        for key, facts in info.items():
            if key not in out:
                out[key] = dict(facts)
            else:
                out[key]["missing_features"] = sorted(set(out[key]["missing_features"]) | set(facts["missing_features"]))
    return out


def _slice(members: dict[tuple, np.ndarray], lo: str, hi: str) -> dict[tuple, np.ndarray]:
    """Each audience cut to the customers from ``lo`` to ``hi`` (sorted arrays stay sorted)."""
    out = {}
    for key, ids in members.items():
        a, b = np.searchsorted(ids, lo, side="left"), np.searchsorted(ids, hi, side="right")
        out[key] = ids[a:b]
    return out


def _audiences(conn, camp: Campaign, segments: dict, as_of: datetime, over: Evaluator | None) -> dict[tuple, np.ndarray]:
    """Sorted customer ids per distinct segment set of the campaign's messages.

    With a columnar copy of the events (``over``), one after the other on
    ``conn``, sharing what they read. Otherwise the sets are independent
    statements: on a file or server database they run two at a time on their
    own connections (the drivers release the GIL while a statement runs),
    like the feature statements.
    """
    keys = list(dict.fromkeys(tuple(sorted(m.segments)) for m in camp.messages))
    if over is not None:
        return {key: audience(conn, [segments[s] for s in key], as_of, over) for key in keys}
    if len(keys) < 2 or not parallel_connections(conn):
        return {key: audience(analytic(conn), [segments[s] for s in key], as_of) for key in keys}
    engine = conn.engine

    def one(key):
        with engine.connect() as own:
            return audience(analytic(own), [segments[s] for s in key], as_of)

    with ThreadPoolExecutor(2, thread_name_prefix="relmail-audience") as pool:
        return dict(zip(keys, pool.map(one, keys)))


def _union(audiences: list[np.ndarray]) -> np.ndarray:
    """Sorted unique ids of every audience: a sort and a neighbour test, which for a million ids
    costs a quarter of ``np.unique`` (that hashes every string first)."""
    if not audiences:
        return np.array([], dtype=str)
    # Stable (a merge sort): it finds the audiences' sorted runs and merges them.
    ids = np.sort(np.concatenate(audiences), kind="stable")
    if len(ids) < 2:
        return ids
    keep = np.empty(len(ids), dtype=bool)
    keep[0] = True
    np.not_equal(ids[1:], ids[:-1], out=keep[1:])
    return ids[keep]


def _check_segments(camp: Campaign, segments: dict) -> None:
    problems = []
    for i, m in enumerate(camp.messages):
        for s in m.segments:
            if s not in segments:
                problems.append(Problem(str(camp.path or camp.name), line_in_file(camp.path, ("messages", i, "segments")),
                                        f"messages.{i}.segments",
                                        f"unknown segment '{s}' (known: {', '.join(sorted(segments)) or 'none'})"))
    if problems:
        raise ValidationError(f"campaign '{camp.name}' names segments that do not exist", problems)


def _check_templates(camp: Campaign, templates_dir) -> None:
    """Every message's template exists (its base file or a locale variant): checked before anything is
    planned, so a misspelt name is the campaign's error, not a written plan whose every e-mail fails."""
    problems = missing_templates(camp, templates_dir)
    if problems:
        raise missing_templates_error([camp], problems)


def _categories(conn, message) -> tuple[str, ...]:
    """The message's categories, or those of its featured products when it names none."""
    if message.categories or not message.products:
        return message.categories
    p = Product.__table__
    found = conn.execute(select(p.c.category).where(p.c.id.in_(message.products)).distinct()).scalars().all()
    return tuple(sorted(found))
