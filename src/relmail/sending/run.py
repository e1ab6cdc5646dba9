"""Send a campaign's run: plan if needed, render, deliver, record — exactly once.

:func:`send` is the library API behind ``relmail send``. The ledger
(:mod:`relmail.sending.ledger`) holds every delivery's state; this module moves
batches through it: claim → render → mark the point of no return → hand to
the adapter → record the answers. Killing the process at any moment and
running the same command again sends every remaining e-mail once and none
twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from ..campaigns import Campaign, load_campaign
from ..errors import ConfigError, Conflict, DeliveryError, NotFound
from ..executors import Executor, get_executor
from ..planning.run import plan, run_id_for
from ..store import locks
from ..store.models import Decision, Delivery, Run
from ..windows import Window, current_time, resolve_window
from . import connections, ledger
from . import workers as send_workers
from .batcher import Batcher, outgoing
from .loop import SendResult, loop

RUNS, DEC = Run.__table__, Decision.__table__


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
    the run's lock (:mod:`relmail.store.locks`) from before planning to the end;
    while another process holds it, :class:`~relmail.errors.Conflict`.

    ``executor`` is where rendering and delivery run in parallel
    (:mod:`relmail.sending.workers`): ``"local"`` (default; ``workers``
    processes, default ``os.cpu_count()``), ``"dask"`` (the cluster at
    ``scheduler``, default ``$RELMAIL_DASK_SCHEDULER``; PostgreSQL only) or
    an :class:`~relmail.executors.Executor`. Never more senders than the due
    e-mails fill batches of ``batch_size``; ``workers=1`` sends in this
    process. A dry run renders its customers in partitions on the executor
    too. Proof sends and an explicit ``adapter`` instance (one connection
    pool, which cannot cross processes) always run in-process.
    """
    clock = now or current_time
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
            as_of = plan(project, engine, camp, win, now=clock(), keep_features=False, lock=lock, **on).as_of
        else:
            as_of = run[0]
        sends = None
    # Compiled here, before anything is sent: a broken template stops the command. Forked workers inherit it.
    batcher = Batcher(project, engine, camp, run_id, as_of)

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
    if adapter is None:
        from ..delivery import adapter_from_project

        adapter = adapter_from_project(project)
    parallel = n > 1 or (executor is not None and executor.remote)
    try:
        # Planning may have left idle connections in the pool; the send needs only its own.
        engine.dispose()
        connections.check(engine, n, adapter.mark_threads())
    except BaseException:
        adapter.close()
        raise
    if parallel:
        adapter.close()  # each worker builds its own; this one only told how many connections they mark from
        _send_parallel(project, engine, executor, batcher, camp, run_id, as_of, n, lock, result, topics, clock, deadline,
                       limit=limit, only_customers=only_customers, batch_size=batch_size, progress=progress,
                       lease_timeout=lease_timeout)
    else:
        loop(project, engine, run_id, batcher, adapter, result, topics, clock, deadline, limit=limit,
              only_customers=only_customers, batch_size=batch_size, after_batch=lock.check_in, progress=progress)
    result.states = ledger.status_counts(engine, run_id)
    if not {"planned", "deferred", "sending", "committing"} & set(result.states):
        _set_status(engine, run_id, "done", clock())
    with engine.connect() as conn:
        from ..store.models import Delivery

        D = Delivery.__table__
        result.next_retry_at = conn.execute(
            select(D.c.next_attempt_at).where(D.c.run_id == run_id, D.c.status == "deferred").order_by(D.c.next_attempt_at).limit(1)
        ).scalar()
    result.seconds = time.perf_counter() - started
    return result


def _send_parallel(project, engine, executor, batcher: Batcher, camp: Campaign, run_id: str, as_of: datetime, n: int,
                   lock: locks.HeldLock, result: SendResult, topics, clock, deadline, *, limit, only_customers,
                   batch_size: int, progress, lease_timeout: timedelta) -> None:
    """Senders on ``executor`` in rounds: after a round in which a sender died, settle its claims and send the rest.

    A dead sender's lease stays behind (:mod:`relmail.sending.workers`). Once
    every sender of the round has ended and every lease left behind is
    stale, no one can still hand over this run's e-mails, so the ledger's
    recovery is safe: ``sending`` goes back to ``planned``, ``committing``
    is settled as delivered. The next round sends what is due. A lease that
    cannot be proven dead (its worker on another machine, not yet expired)
    stops the command with exit 7; the next ``relmail send`` settles it.
    """
    job = send_workers.job_for(executor, project, engine, camp, run_id, as_of, clock=clock, deadline=deadline,
                               only_customers=only_customers, batch_size=batch_size, lease_timeout=lease_timeout)
    with send_workers.prepared_for(job, batcher):
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


def _render_partitions(project, engine, executor, batcher: Batcher, camp: Campaign, run_id: str, as_of: datetime,
                       sends: list[tuple[str, str]], result: SendResult, clock, batch_size: int) -> None:
    """Dry run on the executor: customers split into contiguous partitions (a customer's e-mails stay together)."""
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
    with send_workers.prepared_for(job, batcher):
        for rendered, failures in executor.map(send_workers.render_task, [(job, t) for t in tasks if t]):
            result.done["rendered"] = result.done.get("rendered", 0) + rendered
            result.render_errors += failures
    result.workers = min(executor.workers, parts)


def _due(engine, run_id: str, now: datetime, only_customers) -> int:
    from sqlalchemy import and_, or_

    D = Delivery.__table__
    q = select(func.count()).where(
        D.c.run_id == run_id,
        or_(D.c.status == "planned", and_(D.c.status == "deferred", D.c.next_attempt_at <= now)),
    )
    if only_customers is not None:
        q = q.where(D.c.customer_id.in_(list(only_customers)))
    with engine.connect() as conn:
        return conn.execute(q).scalar() or 0


def _worker_count(wanted: int, engine, run_id: str, now: datetime, batch_size: int, limit: int | None,
                  only_customers) -> int:
    """How many senders to start: no more than the due e-mails fill batches (a worker's start-up is not free)."""
    if wanted <= 1:
        return 1
    due = _due(engine, run_id, now, only_customers)
    if limit is not None:
        due = min(due, limit)
    return max(1, min(wanted, -(-due // batch_size)))


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


def _render_only(project, batcher: Batcher, sends, result: SendResult, test_to: str | None, adapter, batch_size: int) -> None:
    """Dry run (render, deliver nothing) or proof send (to ``test_to``, recorded nowhere)."""
    if test_to and adapter is None:
        from ..delivery import adapter_from_project

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
