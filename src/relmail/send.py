"""Send a campaign's run: plan if needed, render, deliver, record — exactly once.

:func:`send` is the library API behind ``relmail send``. The ledger
(:mod:`relmail.ledger`) holds every delivery's state; this module moves
batches through it: claim → render → mark the point of no return → hand to
the adapter → record the answers. Killing the process at any moment and
running the same command again sends every remaining e-mail once and none
twice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from . import ledger, locks
from .campaigns import Campaign, load_campaign
from .errors import ConfigError, Conflict, DeliveryError, NotFound
from .models import Decision, Run
from .plan import plan, run_id_for
from .schedule import resolve_window
from .windows import Window

RUNS, DEC = Run.__table__, Decision.__table__
RENDER_ERROR = "RENDER_ERROR"
#: How many of the customers' locales a send compiles before the first delivery.
PRECOMPILED_LOCALES = 8


@dataclass
class SendResult:
    run_id: str
    planned_now: bool
    dry_run: bool
    test_to: str | None
    #: Deliveries of the run by state after this invocation (the ledger's view).
    states: dict[str, int] = field(default_factory=dict)
    #: What this invocation did: rendered, accepted, deferred, rejected, failed.
    done: dict[str, int] = field(default_factory=dict)
    #: (customer, message, reason) for every e-mail whose template failed.
    render_errors: list[tuple[str, str, str]] = field(default_factory=list)
    recovered: dict[str, int] = field(default_factory=dict)
    next_retry_at: datetime | None = None
    seconds: float = 0.0
    #: The window sent (``auto`` resolved).
    window: Window | None = None
    #: Why a stale run lock was taken over (its holder crashed), if it was.
    lock_taken_over: str | None = None
    #: Processes that rendered and delivered (1: this one).
    workers: int = 1

    def summary(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "window": self.window.key if self.window else None,
            "lock_taken_over": self.lock_taken_over,
            "workers": self.workers,
            "planned_now": self.planned_now,
            "dry_run": self.dry_run,
            "test_to": self.test_to,
            "states": self.states,
            "done": self.done,
            "render_errors": [{"customer": c, "message": m, "reason": r} for c, m, r in self.render_errors],
            "recovered": self.recovered,
            "next_retry_at": self.next_retry_at.isoformat() if self.next_retry_at else None,
            "seconds": round(self.seconds, 3),
            "rate_per_second": round(self.done.get("accepted", 0) / self.seconds, 1) if self.seconds else 0.0,
        }


class _Batcher:
    """Renders claimed decisions of one run into adapter messages."""

    def __init__(self, project, engine, camp: Campaign, run_id: str, as_of: datetime):
        from .contexts import load_catalog
        from .models import Customer
        from .render import MessageSpec, Renderer

        self.engine, self.camp, self.run_id, self.as_of = engine, camp, run_id, as_of
        self.domain = project.settings.sender.domain
        self.renderer = Renderer(project)
        self.specs = {m.id: MessageSpec.from_campaign(camp, m, run_id) for m in camp.messages}
        self.featured = {m.id: tuple(m.products) for m in camp.messages}
        with engine.connect() as conn:
            self.catalog = load_catalog(conn)
            C = Customer.__table__
            # The most common locales (a store with dozens compiles the rare ones when first needed).
            common = conn.execute(select(C.c.locale).where(C.c.locale.is_not(None)).group_by(C.c.locale)
                                  .order_by(func.count().desc()).limit(PRECOMPILED_LOCALES)).scalars()
            locales = {project.settings.default_locale, *common}
        # Every (message, locale) the run can need is compiled here, once: a broken template or locale
        # variant fails before anything is sent, and forked workers inherit the compiled templates
        # (premailer's CSS inlining costs about 0.15 s per template and language).
        for spec in self.specs.values():
            for locale in sorted(locales):
                self.renderer.compile(spec, locale)
        #: The process that built this batcher (a forked worker must :meth:`rebind` before use).
        self.pid = os.getpid()

    def rebind(self, engine) -> _Batcher:
        """A copy that reads through ``engine``: the compiled templates and catalogue, shared by a forked process."""
        import copy

        twin = copy.copy(self)
        twin.engine, twin.pid = engine, os.getpid()
        return twin

    def message_id(self, customer_id: str, message_id: str) -> str:
        """The RFC 5322 Message-ID the renderer gives this e-mail (derived, so every attempt carries the same)."""
        from .render.mime import message_id as derive

        return derive(self.run_id, customer_id, message_id, self.domain)

    def render(
        self, pairs: Sequence[tuple[str, str]], to: str | None = None
    ) -> tuple[dict[tuple[str, str], Any], dict[tuple[str, str], str]]:
        """(e-mail, context) and errors for (customer, message) pairs; ``to`` readdresses (proof sends)."""
        from dataclasses import replace

        from .contexts import customer_contexts

        by_message: dict[str, list[str]] = {}
        for customer, message in pairs:
            by_message.setdefault(message, []).append(customer)
        emails: dict[tuple[str, str], Any] = {}
        errors: dict[tuple[str, str], str] = {}
        with self.engine.connect() as conn:
            for message, customers in by_message.items():
                spec = self.specs.get(message)
                if spec is None:
                    for c in customers:
                        errors[(c, message)] = f"message '{message}' is no longer in campaign '{self.camp.name}'"
                    continue
                contexts = customer_contexts(conn, customers, self.as_of, self.catalog, self.featured[message])
                if to is not None:
                    contexts = {c: replace(ctx, email=to) for c, ctx in contexts.items()}
                for c in customers:
                    if c not in contexts:
                        errors[(c, message)] = "customer no longer exists (erased?)"
                for result in self.renderer.render_many((spec, contexts[c]) for c in customers if c in contexts):
                    key = (result.customer_id, result.message_id)
                    if result.ok:
                        emails[key] = (result.email, contexts[result.customer_id])
                    else:
                        errors[key] = str(result.error.reason if hasattr(result.error, "reason") else result.error)
        return emails, errors


_PASSED_HEADERS = ("Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post", "Feedback-ID",
                   "X-Relmail-Run", "X-Relmail-Message", "X-Relmail-Customer")


class _RawHeaders(Mapping):
    """The headers API providers need, read from the rendered bytes only when asked.

    SMTP, SES and the file outbox send the bytes as they are and never look;
    parsing every e-mail's header block for them cost about a sixth of the
    send loop.
    """

    def __init__(self, raw: bytes):
        self._raw = raw
        self._parsed: dict[str, str] | None = None

    def _headers(self) -> dict[str, str]:
        if self._parsed is None:
            from email.parser import BytesHeaderParser
            from email.policy import compat32

            parsed = BytesHeaderParser(policy=compat32).parsebytes(self._raw)
            self._parsed = {n: " ".join(parsed[n].split()) for n in _PASSED_HEADERS if parsed[n] is not None}
        return self._parsed

    def __getitem__(self, name: str) -> str:
        return self._headers()[name]

    def __iter__(self):
        return iter(self._headers())

    def __len__(self) -> int:
        return len(self._headers())


def outgoing(email, ctx, settings, key: str, run_id: str):
    """The adapter's view of a rendered e-mail: the bytes, plus the fields API providers need."""
    from .delivery import OutgoingMessage

    return OutgoingMessage(
        key=key,
        to=ctx.email,
        to_name=ctx.name or None,
        from_addr=settings.sender.from_email,
        from_name=settings.sender.from_name,
        reply_to=settings.sender.reply_to,
        subject=email.subject,
        html=email.html,
        text=email.text,
        headers=_RawHeaders(email.raw),
        raw=email.raw,
        metadata={"relmail_customer": email.customer_id, "relmail_run": run_id, "relmail_message": email.message_id},
        tags=(run_id.split(":")[0], email.message_id),
    )


def send(
    project,
    engine,
    campaign: str | Campaign,
    window: str | Window,
    *,
    cadence: str | None = None,
    lock_timeout: timedelta | None = None,
    limit: int | None = None,
    only_customers: Sequence[str] | None = None,
    dry_run: bool = False,
    test_to: str | None = None,
    adapter=None,
    batch_size: int = 500,
    retry_deadline: timedelta = timedelta(hours=48),
    now: Callable[[], datetime] | None = None,
    progress: Callable[[dict[str, int]], None] | None = None,
    workers: int | None = None,
    executor=None,
    scheduler: str | None = None,
) -> SendResult:
    """Plan (if the window has no run yet), render and deliver every ``send`` decision of the run.

    ``dry_run`` renders everything and delivers nothing, writing nothing.
    ``test_to`` renders the chosen customers' e-mails (``only_customers``, or
    the first ``limit`` send decisions, default 1 per message) to a seed
    address; nothing is recorded and no customer is mailed. ``progress`` is
    called after each batch with this invocation's counts.

    ``window`` ``auto`` is the current window of ``cadence`` (default: the
    campaign's ``schedule``) in the project's time zone. A real send holds
    the run's lock (:mod:`relmail.locks`) from before planning to the end;
    while another process holds it, :class:`~relmail.errors.Conflict`.

    ``executor`` is where rendering and delivery run in parallel
    (:mod:`relmail.send_workers`): ``"local"`` (default; ``workers``
    processes, default ``os.cpu_count()``), ``"dask"`` (the cluster at
    ``scheduler``, default ``$RELMAIL_DASK_SCHEDULER``; PostgreSQL only) or
    an :class:`~relmail.executors.Executor`. Never more senders than the due
    e-mails fill batches of ``batch_size``; ``workers=1`` sends in this
    process. A dry run renders its customers in partitions on the executor
    too. Proof sends and an explicit ``adapter`` instance (one connection
    pool, which cannot cross processes) always run in-process.
    """
    from .executors import Executor, get_executor

    clock = now or (lambda: datetime.now(UTC))
    camp = campaign if isinstance(campaign, Campaign) else load_campaign(project, campaign)
    win = resolve_window(window, project.settings.timezone, cadence=cadence, campaign=camp, now=clock())
    in_process = bool(test_to) or adapter is not None or (workers == 1 and executor in (None, "local"))
    remote = executor == "dask" or (isinstance(executor, Executor) and executor.remote)
    if remote and engine.dialect.name != "postgresql":
        # Checked before connecting to the cluster or planning anything.
        raise ConfigError(f"--executor dask needs PostgreSQL: its workers run on other machines, and a "
                          f"{engine.dialect.name} database file is not shared between machines")
    pool = None
    if isinstance(executor, Executor):
        pool = executor
    elif not in_process:
        pool = get_executor(executor or "local", workers=workers, scheduler=scheduler)
    try:
        common = {"limit": limit, "only_customers": only_customers, "dry_run": dry_run, "test_to": test_to,
                  "adapter": adapter, "batch_size": batch_size, "retry_deadline": retry_deadline, "clock": clock,
                  "progress": progress, "executor": None if in_process else pool}
        if dry_run or test_to:
            # Writes nothing to the ledger: no lock needed, and a dry run may watch a run in progress.
            return _send(project, engine, camp, win, None, lease_timeout=None, **common)
        timeout = lock_timeout or locks.timeout_for(project)
        with locks.acquire(engine, run_id_for(camp.name, win.key), timeout=timeout) as lock:
            return _send(project, engine, camp, win, lock, lease_timeout=timeout, **common)
    finally:
        if pool is not None and pool is not executor:
            pool.close()


#: How often one invocation settles senders that died and sends what they left, before giving up (exit 7).
MAX_ROUNDS = 4


def _send(project, engine, camp: Campaign, win: Window, lock: locks.HeldLock | None, *, limit, only_customers,
          dry_run, test_to, adapter, batch_size, retry_deadline, clock, progress, executor, lease_timeout) -> SendResult:
    started = time.perf_counter()
    run_id = run_id_for(camp.name, win.key)
    with engine.connect() as conn:
        run = conn.execute(select(RUNS.c.as_of).where(RUNS.c.id == run_id)).first()
    result = SendResult(run_id, planned_now=run is None, dry_run=dry_run, test_to=test_to, window=win,
                        lock_taken_over=lock.taken_over if lock is not None else None)

    # Planning here uses the senders' executor too: its customer ranges run where the senders will.
    on = {"executor": executor} if executor is not None else {}
    if run is None and (dry_run or test_to):
        planned = plan(project, engine, camp, win, dry_run=True, now=clock(), **on)
        as_of = planned.as_of
        sends = [(c, m) for c, m, a in zip(planned.decisions.customer_id, planned.decisions.message_id, planned.decisions.action) if a == "send"]
    else:
        if run is None:
            as_of = plan(project, engine, camp, win, now=clock(), keep_features=False, **on).as_of
        else:
            as_of = run[0]
        sends = None
    # Compiled here, before anything is sent: a broken template stops the command. Forked workers inherit it.
    batcher = _Batcher(project, engine, camp, run_id, as_of)

    if dry_run or test_to:
        if sends is None:
            with engine.connect() as conn:
                q = select(DEC.c.customer_id, DEC.c.message_id).where(DEC.c.run_id == run_id, DEC.c.action == "send")
                sends = [tuple(r) for r in conn.execute(q.order_by(DEC.c.id))]
        sends = _choose(sends, only_customers, limit, proof=bool(test_to))
        if executor is not None and not test_to and sends and (executor.remote or (len(sends) > batch_size and executor.workers > 1)):
            _render_partitions(project, engine, executor, batcher, camp, run_id, as_of, sends, result, clock, batch_size)
        else:
            _render_only(project, batcher, sends, result, test_to, adapter, batch_size)
        result.seconds = time.perf_counter() - started
        return result

    from . import send_workers

    topics = {m.id: m.topic for m in camp.messages}
    # Recovery treats every "sending" delivery as abandoned: only the lock's
    # holder may run it, only if the lock is still ours after planning, and
    # only once no sender of an earlier invocation can still be alive.
    lock.refresh()
    live = send_workers.clear_leases(engine, run_id, lease_timeout)
    if live:
        raise Conflict(f"run {run_id}: a sender of an earlier invocation may still be handing e-mails over: "
                       f"{send_workers.describe_live(live)}; its e-mails are settled once its lease is stale")
    result.recovered = ledger.recover(engine, run_id, clock(), topics)
    ledger.prepare(engine, run_id, clock())
    _set_status(engine, run_id, "sending", clock())
    deadline = clock() + retry_deadline
    wanted = executor.workers if executor is not None else 1
    n = result.workers = _worker_count(wanted, engine, run_id, clock(), batch_size, limit, only_customers)
    if n > 1 or (executor is not None and executor.remote):
        _send_parallel(project, engine, executor, batcher, camp, run_id, as_of, n, lock, result, topics, clock, deadline,
                       limit=limit, only_customers=only_customers, batch_size=batch_size, progress=progress,
                       lease_timeout=lease_timeout)
    else:
        if adapter is None:
            from .delivery import adapter_from_project

            adapter = adapter_from_project(project)
        _loop(project, engine, run_id, batcher, adapter, result, topics, clock, deadline, limit=limit,
              only_customers=only_customers, batch_size=batch_size, after_batch=lock.check_in, progress=progress)
    result.states = ledger.status_counts(engine, run_id)
    if not {"planned", "deferred", "sending", "committing"} & set(result.states):
        _set_status(engine, run_id, "done", clock())
    with engine.connect() as conn:
        from .models import Delivery

        D = Delivery.__table__
        result.next_retry_at = conn.execute(
            select(D.c.next_attempt_at).where(D.c.run_id == run_id, D.c.status == "deferred").order_by(D.c.next_attempt_at).limit(1)
        ).scalar()
    result.seconds = time.perf_counter() - started
    return result


def _send_parallel(project, engine, executor, batcher: _Batcher, camp: Campaign, run_id: str, as_of: datetime, n: int,
                   lock: locks.HeldLock, result: SendResult, topics, clock, deadline, *, limit, only_customers,
                   batch_size: int, progress, lease_timeout: timedelta) -> None:
    """Senders on ``executor`` in rounds: after a round in which a sender died, settle its claims and send the rest.

    A dead sender's lease stays behind (:mod:`relmail.send_workers`). Once
    every sender of the round has ended and every lease left behind is
    stale, no one can still hand over this run's e-mails, so the ledger's
    recovery is safe: ``sending`` goes back to ``planned``, ``committing``
    is settled as delivered. The next round sends what is due. A lease that
    cannot be proven dead (its worker on another machine, not yet expired)
    stops the command with exit 7; the next ``relmail send`` settles it.
    """
    from . import send_workers

    job = send_workers.job_for(executor, project, engine, camp, run_id, as_of, clock=clock, deadline=deadline,
                               only_customers=only_customers, batch_size=batch_size, lease_timeout=lease_timeout)
    send_workers.prepared[job.key] = batcher
    try:
        for _ in range(MAX_ROUNDS):
            left = None if limit is None else limit - result.done.get("handed_over", 0)
            lost = send_workers.run_senders(executor, job, n, lock, result, limit=left, progress=progress)
            lock.refresh()
            live = send_workers.clear_leases(engine, run_id, lease_timeout)
            if live:
                raise DeliveryError(
                    f"a sender died or lost contact while sending ({'; '.join(lost) or 'its lease was left behind'}); "
                    f"{send_workers.describe_live(live)} cannot be proven dead yet, so its claimed e-mails stay "
                    "'sending'/'committing' and the next 'relmail send' settles them once that lease is stale")
            recovered = ledger.recover(engine, run_id, clock(), topics)
            for k, v in recovered.items():
                result.recovered[k] = result.recovered.get(k, 0) + v
            if not lost and not any(recovered.values()):
                return
            left = None if limit is None else limit - result.done.get("handed_over", 0)
            n = _worker_count(n, engine, run_id, clock(), batch_size, left, only_customers)
            if left == 0 or not _due(engine, run_id, clock(), only_customers):
                return
        raise DeliveryError(f"senders kept dying: {MAX_ROUNDS} rounds did not finish the run; the ledger is consistent "
                            "and the next 'relmail send' sends the rest")
    finally:
        send_workers.prepared.pop(job.key, None)


def _render_partitions(project, engine, executor, batcher: _Batcher, camp: Campaign, run_id: str, as_of: datetime,
                       sends: list[tuple[str, str]], result: SendResult, clock, batch_size: int) -> None:
    """Dry run on the executor: customers split into contiguous partitions (a customer's e-mails stay together)."""
    from . import send_workers

    customers = list(dict.fromkeys(c for c, _ in sends))
    # A few partitions per worker, so one that renders slower does not leave the others idle at the end.
    parts = max(1, min(executor.workers * 4, -(-len(sends) // batch_size)))
    size = -(-len(customers) // parts)
    part_of = {c: i // size for i, c in enumerate(customers)}
    tasks: list[list[tuple[str, str]]] = [[] for _ in range(parts)]
    for pair in sends:
        tasks[part_of[pair[0]]].append(pair)
    job = send_workers.job_for(executor, project, engine, camp, run_id, as_of, clock=clock, deadline=clock(),
                               only_customers=None, batch_size=batch_size, lease_timeout=timedelta(0))
    send_workers.prepared[job.key] = batcher
    try:
        for rendered, failures in executor.map(send_workers.render_task, [(job, t) for t in tasks if t]):
            result.done["rendered"] = result.done.get("rendered", 0) + rendered
            result.render_errors += failures
    finally:
        send_workers.prepared.pop(job.key, None)
    result.workers = min(executor.workers, parts)


def _due(engine, run_id: str, now: datetime, only_customers) -> int:
    from sqlalchemy import and_, or_

    from .models import Delivery

    D = Delivery.__table__
    q = select(func.count()).where(
        D.c.run_id == run_id,
        or_(D.c.status == "planned", and_(D.c.status == "deferred", D.c.next_attempt_at <= now)),
    )
    if only_customers is not None:
        q = q.where(D.c.customer_id.in_(list(only_customers)))
    with engine.connect() as conn:
        return conn.execute(q).scalar() or 0


def _loop(project, engine, run_id: str, batcher: _Batcher, adapter, result: SendResult, topics, clock, deadline, *,
          limit: int | None, only_customers, batch_size: int, after_batch: Callable[[], None],
          progress: Callable[[dict[str, int]], None] | None = None, stop: Callable[[], bool] = lambda: False) -> None:
    """Claim, render, mark, hand over and record batches until nothing is due (or ``limit``/``stop``).

    The one sending loop, run by a single-process send and by each worker.
    Every batch is its own short transactions (claim, mark, record), so
    several processes take turns on SQLite's single writer without waiting
    on each other's rendering or network time.
    """
    marker = _Marker(engine, clock)
    adapter.on_commit = marker
    try:
        while (limit is None or result.done.get("handed_over", 0) < limit) and not stop():
            want = batch_size if limit is None else min(batch_size, limit - result.done.get("handed_over", 0))
            claims = ledger.claim(engine, run_id, clock(), want, customers=only_customers,
                                  message_id=batcher.message_id)
            if not claims:
                break
            _deliver(project, engine, run_id, batcher, adapter, claims, result, topics, clock, deadline)
            after_batch()
            if progress is not None:
                progress(dict(result.done))
    finally:
        adapter.close()
        marker.close()


def _worker_count(wanted: int, engine, run_id: str, now: datetime, batch_size: int, limit: int | None,
                  only_customers) -> int:
    """How many senders to start: no more than the due e-mails fill batches (a worker's start-up is not free)."""
    if wanted <= 1:
        return 1
    due = _due(engine, run_id, now, only_customers)
    if limit is not None:
        due = min(due, limit)
    return max(1, min(wanted, -(-due // batch_size)))


def _key(delivery_id: int) -> str:
    return f"d{delivery_id}"


class _Marker:
    """Writes the ``committing`` mark so that it is durable no later than the hand-over.

    The mark must be in the database before the point of no return, yet
    waiting for its commit opens a window (a network round trip and an
    fsync) in which a killed sender leaves a mark for an e-mail that never
    left. On PostgreSQL the mark is therefore sent as a single autocommit
    statement without waiting; the adapter then passes the point of no
    return (its bytes follow the mark's on the wire within microseconds)
    and only afterwards waits for the acknowledgement. A sender killed before
    the statement left rolls nothing forward and hands nothing over; killed
    after, both reach their servers. On SQLite the commit is a write into
    the WAL inside this process, so waiting for it costs microseconds.
    """

    _SQL = (b"UPDATE deliveries SET status = 'committing', updated_at = $1::timestamptz "
            b"WHERE id = ANY($2::bigint[]) AND status = 'sending'")

    def __init__(self, engine, clock):
        import threading

        self.engine, self.clock = engine, clock
        self.local = threading.local()
        self.connections: list = []
        self.lock = threading.Lock()

    def __call__(self, keys: Sequence[str]):
        ids = [int(k[1:]) for k in keys]
        if self.engine.dialect.name == "sqlite":
            # One autocommit statement on a connection of this thread: the
            # hook returns right after SQLite's WAL write, nothing in between.
            self._sqlite().execute(
                f"UPDATE deliveries SET status = 'committing', updated_at = ? "
                f"WHERE id IN ({','.join('?' * len(ids))}) AND status = 'sending'",
                [self._stamp(self.clock()), *ids],
            )
            return None
        if self.engine.dialect.name != "postgresql":
            with self.engine.begin() as conn:
                ledger.mark_committing(conn, ids, self.clock())
            return None
        pg = self._pg()
        pg.send_query_params(self._SQL, [self.clock().isoformat().encode(), ("{" + ",".join(map(str, ids)) + "}").encode()])
        while pg.flush():
            pass
        return lambda: self._confirm(pg)

    @staticmethod
    def _confirm(pg) -> None:
        # Drain the acknowledgement. A failed mark needs no action here: the
        # provider's answer is recorded next from 'sending' just as well; only
        # a crash in between would find no mark (and re-send that e-mail).
        while pg.get_result() is not None:
            pass

    def _pg(self):
        import psycopg

        pg = getattr(self.local, "pg", None)
        if pg is None:
            url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            # The mark must survive this process, not the database server:
            # not waiting for the WAL flush saves an fsync per e-mail. A
            # database crash within a fraction of a second of a mark could
            # lose it, and only then would that e-mail be sent again.
            conn = psycopg.connect(url, autocommit=True, options="-c synchronous_commit=off")
            with self.lock:
                self.connections.append(conn)
            pg = self.local.pg = conn.pgconn
        return pg

    def _sqlite(self):
        import sqlite3

        conn = getattr(self.local, "sqlite", None)
        if conn is None:
            conn = sqlite3.connect(self.engine.url.database, isolation_level=None, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=30000")
            with self.lock:
                self.connections.append(conn)
            self.local.sqlite = conn
        return conn

    def _stamp(self, now: datetime):
        """``now`` as the ledger's time column stores it on SQLite."""
        from .models import Delivery

        process = Delivery.__table__.c.updated_at.type._cached_bind_processor(self.engine.dialect)
        return process(now) if process else now

    def close(self) -> None:
        for conn in self.connections:
            conn.close()


def _deliver(project, engine, run_id: str, batcher: _Batcher, adapter, claims, result: SendResult, topics, clock, deadline) -> None:
    from .delivery.base import DeliveryAborted

    by_pair = {(c.customer_id, c.message_id): c for c in claims}
    outcomes: list[ledger.Outcome] = []
    # The plan may be days old: whoever opted out, complained or bounced
    # since is not mailed, whatever the plan said.
    for pair, reason in _blocked_now(engine, list(by_pair), topics, batcher.as_of).items():
        outcomes.append(ledger.Outcome(by_pair.pop(pair).delivery_id, "failed", reason=reason))
    emails, errors = batcher.render(list(by_pair))
    if errors:
        _mark_render_errors(engine, run_id, errors)
        for pair, reason in errors.items():
            result.render_errors.append((pair[0], pair[1], reason))
            outcomes.append(ledger.Outcome(by_pair[pair].delivery_id, "failed", reason=f"{RENDER_ERROR}: {reason}"))
    messages = [outgoing(email, ctx, project.settings, _key(by_pair[pair].delivery_id), run_id)
                for pair, (email, ctx) in emails.items()]
    result.done["rendered"] = result.done.get("rendered", 0) + len(messages)
    aborted = None
    try:
        answers = adapter.send(messages) if messages else []
    except DeliveryAborted as exc:
        answers, aborted = exc.results, exc
    for answer in answers:
        delivery_id = int(answer.key[1:])
        if answer.status == "deferred" and answer.ambiguous:
            # Handed over completely, answer lost: the ledger marked it
            # committing, and never sending twice wins over certainty.
            outcomes.append(ledger.Outcome(delivery_id, "accepted", reason=f"{ledger.UNCERTAIN}: {answer.reason}"))
        else:
            outcomes.append(ledger.Outcome(delivery_id, answer.status, answer.provider_id, answer.retry_at,
                                           answer.reason or None, answer.hard_bounce))
    counts = ledger.record(engine, outcomes, clock(), topics, deadline=deadline)
    for status, n in counts.items():
        result.done[status] = result.done.get(status, 0) + n
    result.done["handed_over"] = result.done.get("handed_over", 0) + len(claims)
    if aborted is not None:
        raise DeliveryError(f"sending stopped, the ledger is consistent and 'relmail send' resumes: {aborted}")


def _blocked_now(engine, pairs: list[tuple[str, str]], topics: dict[str, str | None], as_of: datetime) -> dict[tuple[str, str], str]:
    """Pairs that must not be mailed any more, with the reason: checked just before sending."""
    from .models import Event, Preference

    P, E = Preference.__table__, Event.__table__
    customers = sorted({c for c, _ in pairs})
    with engine.connect() as conn:
        out_of = {}
        for cid, topic in conn.execute(
            select(P.c.customer_id, P.c.topic).where(P.c.customer_id.in_(customers), P.c.opted_in.is_(False))
        ):
            out_of.setdefault(cid, set()).add(topic)
        since = dict(
            conn.execute(
                select(E.c.customer_id, E.c.type).where(
                    E.c.customer_id.in_(customers), E.c.occurred_at > as_of,
                    E.c.type.in_(("email_bounced_hard", "email_complained")),
                )
            ).all()
        )
    blocked = {}
    for customer, message in pairs:
        topics_out = out_of.get(customer, set())
        if "*" in topics_out or topics.get(message) in topics_out:
            blocked[(customer, message)] = "OPTED_OUT: the customer opted out after the plan"
        elif customer in since:
            blocked[(customer, message)] = f"SUPPRESSED: {since[customer]} after the plan"
    return blocked


def _mark_render_errors(engine, run_id: str, errors: dict[tuple[str, str], str]) -> None:
    """The decision records the failure: suppressed with RENDER_ERROR, so reports and why show it."""
    from sqlalchemy import bindparam

    with engine.begin() as conn:
        conn.execute(
            update(DEC)
            .where(DEC.c.run_id == run_id, DEC.c.customer_id == bindparam("b_c"), DEC.c.message_id == bindparam("b_m"))
            .values(action="suppress", reasons=DEC.c.reasons + " " + RENDER_ERROR),
            [{"b_c": c, "b_m": m} for (c, m) in errors],
        )


def _set_status(engine, run_id: str, status: str, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(status=status, updated_at=now))


def _choose(sends: list[tuple[str, str]], only: Sequence[str] | None, limit: int | None, proof: bool) -> list[tuple[str, str]]:
    """Which send decisions a dry run renders or a proof send mails."""
    if only is not None:
        wanted = set(only)
        chosen = [p for p in sends if p[0] in wanted]
        missing = wanted - {c for c, _ in chosen}
        if missing:
            raise NotFound(f"no send decision for customer(s) {', '.join(sorted(missing))} in this run "
                           "(suppressed or held-out customers are never mailed, not even as a proof)")
        return chosen[:limit] if limit else chosen
    if limit is not None:
        return sends[:limit]
    if proof:
        first: dict[str, tuple[str, str]] = {}
        for c, m in sends:
            first.setdefault(m, (c, m))
        return list(first.values())
    return sends


def _render_only(project, batcher: _Batcher, sends, result: SendResult, test_to: str | None, adapter, batch_size: int) -> None:
    """Dry run (render, deliver nothing) or proof send (to ``test_to``, recorded nowhere)."""
    if test_to and adapter is None:
        from .delivery import adapter_from_project

        adapter = adapter_from_project(project)
    try:
        for a in range(0, len(sends), batch_size):
            emails, errors = batcher.render(sends[a : a + batch_size], to=test_to)
            result.render_errors += [(c, m, r) for (c, m), r in errors.items()]
            result.done["rendered"] = result.done.get("rendered", 0) + len(emails)
            if test_to:
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
                messages = [outgoing(e, ctx, project.settings, f"proof:{stamp}:{c}:{m}", result.run_id)
                            for (c, m), (e, ctx) in emails.items()]
                for answer in adapter.send(messages):
                    result.done[answer.status] = result.done.get(answer.status, 0) + 1
    finally:
        if adapter is not None:
            adapter.close()
