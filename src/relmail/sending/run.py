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
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import getaddresses
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from .. import tokens
from ..campaigns import Campaign, load_campaign
from ..errors import ConfigError, DeliveryError, LockHeld, NotFound, ValidationError
from ..executors import Executor, get_executor
from ..planning.run import plan, run_id_for
from ..store import locks
from ..store.faults import translated
from ..store.models import Decision, Delivery, Run
from ..windows import Window, current_time, resolve_window
from . import connections, ledger
from . import workers as send_workers
from .batcher import Batcher, outgoing
from .loop import SendJob, SendResult, loop
from .stopping import StopRequest

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..project import Project

RUNS, DEC = Run.__table__, Decision.__table__


@dataclass(frozen=True)
class SendOptions:
    """How to send: the options of :func:`send` (and of ``relmail send``), each with its default."""

    #: With window ``auto``: ``weekly``, ``daily`` or ``monthly`` (default: the campaign's ``schedule``).
    cadence: str | None = None
    #: How long a silent holder keeps the run's lock (default: ``[schedule] lock_timeout_minutes``).
    lock_timeout: timedelta | None = None
    #: Hand over at most this many e-mails in this invocation.
    limit: int | None = None
    #: Only these customers' e-mails.
    only_customers: Sequence[str] | None = None
    #: Render everything, deliver nothing, write nothing.
    dry_run: bool = False
    #: Proof send: mail the chosen customers' e-mails to this address (``you@example.com``, or with the name
    #: the To header shows: ``Your Name <you@example.com>``); nothing is recorded.
    test_to: str | None = None
    #: An adapter instance to deliver with (default: the project's ``[delivery]``); always used in-process.
    adapter: Any = None
    #: E-mails per ledger batch (claim, mark, record).
    batch_size: int = 500
    #: A deferred e-mail is retried until this long after the send started, then ``failed``.
    retry_deadline: timedelta = timedelta(hours=48)
    #: The clock, called for every timestamp (default: :func:`relmail.windows.current_time`).
    now: Callable[[], datetime] | None = None
    #: ``progress(done)``: called after each batch with this invocation's counts.
    progress: Callable[[dict[str, int]], None] | None = None
    #: Senders that render and deliver in parallel (None: one per core; 1: in this process).
    workers: int | None = None
    #: ``local``, ``dask`` or an :class:`relmail.executors.Executor` (None: ``local``).
    executor: Any = None
    #: The Dask scheduler of ``executor="dask"`` (default: ``$RELMAIL_DASK_SCHEDULER``).
    scheduler: str | None = None
    #: Set (from a signal handler or another thread) to stop after the batches in hand are recorded:
    #: the result then has ``stopped``, and the next send resumes (:mod:`relmail.sending.stopping`).
    stop: StopRequest | None = None


@dataclass(frozen=True)
class _Invocation:
    """One call of :func:`send`: the run it works on and how, once the campaign and window are resolved."""

    project: Project
    engine: Engine
    camp: Campaign
    win: Window
    opts: SendOptions
    clock: Callable[[], datetime]
    #: Where senders run; None: in this process.
    executor: Executor | None
    #: The run lock (None for a dry run or proof send, which write nothing).
    lock: locks.HeldLock | None = None
    lease_timeout: timedelta | None = None

    @property
    def run_id(self) -> str:
        return run_id_for(self.camp.name, self.win.key)


@translated
def send(project: Project, engine: Engine, campaign: str | Campaign, window: str | Window, options: SendOptions | None = None,
         /, **overrides: Any) -> SendResult:
    """Plan (if the window has no run yet), render and deliver every ``send`` decision of the run.

    ``campaign`` is a name under ``campaigns/``, a file path or a loaded
    :class:`Campaign`; ``window`` a window name or a :class:`Window`. The
    options are a :class:`SendOptions`, or its fields as keywords
    (``send(..., dry_run=True)``); keywords override the fields of
    ``options``.

    ``dry_run`` renders everything and delivers nothing, writing nothing.
    ``test_to`` renders the chosen customers' e-mails (``only_customers``, or
    the first ``limit`` send decisions, default 1 per message) to a seed
    address; nothing is recorded and no customer is mailed. ``progress`` is
    called after each batch with this invocation's counts.

    ``window`` ``auto`` is the current window of ``cadence`` (default: the
    campaign's ``schedule``) in the project's time zone. A real send holds
    the run's lock (:mod:`relmail.store.locks`) from before planning to the end;
    while another process holds it, :class:`~relmail.errors.LockHeld`.

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
    opts = replace(options or SendOptions(), **overrides)
    if opts.only_customers is not None:
        opts = replace(opts, only_customers=tuple(opts.only_customers))
    clock = opts.now or current_time
    camp = campaign if isinstance(campaign, Campaign) else load_campaign(project, campaign)
    win = resolve_window(window, project.settings.timezone, cadence=opts.cadence, campaign=camp, now=clock())
    if opts.test_to:
        _proof_recipient(opts.test_to)  # a typo stops the command before anything is planned or rendered
    executor = opts.executor
    in_process = bool(opts.test_to) or opts.adapter is not None or (opts.workers == 1 and executor in (None, "local"))
    remote = executor == "dask" or (isinstance(executor, Executor) and executor.remote)
    if remote and engine.dialect.name != "postgresql":
        # Checked before connecting to the cluster or planning anything.
        raise ConfigError(f"--executor dask needs PostgreSQL: its workers run on other machines, and a "
                          f"{engine.dialect.name} database file is not shared between machines")
    pool = None
    if isinstance(executor, Executor):
        pool = executor
    elif not in_process:
        pool = get_executor(executor or "local", workers=opts.workers, scheduler=opts.scheduler)
    try:
        call = _Invocation(project, engine, camp, win, opts, clock, None if in_process else pool)
        if opts.dry_run or opts.test_to:
            # Writes nothing to the ledger: no lock needed, and a dry run may watch a run in progress.
            return _send(call)
        timeout = opts.lock_timeout or locks.timeout_for(project)
        with locks.acquire(engine, call.run_id, timeout=timeout) as lock:
            return _send(replace(call, lock=lock, lease_timeout=timeout))
    finally:
        if pool is not None and pool is not executor:
            pool.close()


#: How often one invocation settles senders that died and sends what they left, before giving up (exit 7).
MAX_ROUNDS = 4


def _send(call: _Invocation) -> SendResult:
    started = time.perf_counter()
    project, engine, camp, win, opts, clock, executor = (call.project, call.engine, call.camp, call.win, call.opts,
                                                          call.clock, call.executor)
    run_id, lock = call.run_id, call.lock
    with engine.connect() as conn:
        run = conn.execute(select(RUNS.c.as_of).where(RUNS.c.id == run_id)).first()
    result = SendResult(run_id, planned_now=run is None, dry_run=opts.dry_run, test_to=opts.test_to, window=win,
                        lock_taken_over=lock.taken_over if lock is not None else None)

    # Planning here uses the senders' executor too: its customer ranges run where the senders will.
    on = {"executor": executor} if executor is not None else {}
    # A window not started yet (sent early, by hand) is planned as of now, when its e-mails go out: the
    # caps must count the days they are sent in, not those before the window's start (a plan's default).
    on["as_of"] = min(clock(), win.end)
    preview = opts.dry_run or bool(opts.test_to)
    if run is None and preview:
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
    batcher = Batcher(project, engine, camp, run_id, as_of, clock)

    if preview:
        if sends is None:
            with engine.connect() as conn:
                q = select(DEC.c.customer_id, DEC.c.message_id).where(DEC.c.run_id == run_id, DEC.c.action == "send")
                sends = [tuple(r) for r in conn.execute(q.order_by(DEC.c.id))]
        sends = _choose(sends, opts.only_customers, opts.limit, proof=bool(opts.test_to))
        if (executor is not None and not opts.test_to and sends
                and (executor.remote or (len(sends) > opts.batch_size and executor.workers > 1))):
            _render_partitions(call, batcher, sends, result)
        else:
            _render_only(call, batcher, sends, result)
        result.seconds = time.perf_counter() - started
        return result

    topics = {m.id: m.topic for m in camp.messages}
    # Recovery treats every "sending" delivery as abandoned: only the lock's
    # holder may run it, only if the lock is still ours after planning, and
    # only once no sender of an earlier invocation can still be alive.
    lock.refresh()
    live = send_workers.clear_leases(engine, run_id, call.lease_timeout)
    if live:
        raise LockHeld(f"run {run_id}: a sender of an earlier invocation may still be handing e-mails over: "
                       f"{send_workers.describe_live(live)}; its e-mails are settled once its lease is stale")
    result.recovered = ledger.recover(engine, run_id, clock(), topics)
    ledger.prepare(engine, run_id, clock())
    _set_status(engine, run_id, "sending", clock())
    job = SendJob(project, engine, run_id, batcher, topics, clock, clock() + opts.retry_deadline, opts.batch_size,
                  opts.only_customers)
    wanted = executor.workers if executor is not None else 1
    n = result.workers = _worker_count(wanted, job, opts.limit)
    adapter = opts.adapter
    if adapter is None:
        from ..delivery import adapter_from_project

        adapter = adapter_from_project(project)
    try:
        # Planning may have left idle connections in the pool; the send needs only its own.
        engine.dispose()
        connections.check(engine, n, adapter.mark_threads(), f"[delivery.{adapter.name}] {adapter.concurrency_key}")
        adapter.check_topics(sorted(set(topics.values())))
        _resubscribe(engine, adapter, result)
    except BaseException:
        adapter.close()
        raise
    stop = opts.stop or StopRequest()
    with stop.sending():
        if n > 1 or (executor is not None and executor.remote):
            adapter.close()  # each worker builds its own; this one only told how many connections they mark from
            _send_parallel(call, job, n, result, stop)
        else:
            loop(job, adapter, result, limit=opts.limit, after_batch=lock.check_in, progress=opts.progress, stop=stop)
    result.states = ledger.status_counts(engine, run_id)
    result.uncertain = ledger.uncertain_count(engine, run_id)
    if result.states.get("deferred"):
        result.deferred_reasons = ledger.deferred_reasons(engine, run_id)
    if not {"planned", "deferred", "sending", "committing"} & set(result.states):
        _set_status(engine, run_id, "done", clock())
    with engine.connect() as conn:
        D = Delivery.__table__
        result.next_retry_at = conn.execute(
            select(D.c.next_attempt_at).where(D.c.run_id == run_id, D.c.status == "deferred").order_by(D.c.next_attempt_at).limit(1)
        ).scalar()
    result.seconds = time.perf_counter() - started
    return result


def _send_parallel(call: _Invocation, job: SendJob, n: int, result: SendResult, stop: StopRequest) -> None:
    """Senders on the executor in rounds: after a round in which a sender died, settle its claims and send the rest.

    A dead sender's lease stays behind (:mod:`relmail.sending.workers`). Once
    every sender of the round has ended and every lease left behind is
    stale, no one can still hand over this run's e-mails, so the ledger's
    recovery is safe: ``sending`` goes back to ``planned``, ``committing``
    is settled as delivered. The next round sends what is due. A lease that
    cannot be proven dead (its worker on another machine, not yet expired)
    stops the command with exit 7; the next ``relmail send`` settles it.
    """
    engine, run_id, lock, limit, executor = job.engine, job.run_id, call.lock, call.opts.limit, call.executor
    task = send_workers.job_for(executor, job, call.lease_timeout)
    with send_workers.prepared_for(task, job.batcher):
        for _ in range(MAX_ROUNDS):
            left = None if limit is None else limit - result.done.get("handed_over", 0)
            lost = send_workers.run_senders(executor, task, n, lock, result, limit=left, progress=call.opts.progress,
                                            stop=stop)
            lock.refresh()
            live = send_workers.clear_leases(engine, run_id, call.lease_timeout)
            if live:
                raise DeliveryError(
                    f"a sender died or lost contact while sending ({'; '.join(lost) or 'its lease was left behind'}); "
                    f"{send_workers.describe_live(live)} cannot be proven dead yet, so its claimed e-mails stay "
                    "'sending'/'committing' and the next 'relmail send' settles them once that lease is stale")
            recovered = ledger.recover(engine, run_id, job.clock(), job.topics)
            for k, v in recovered.items():
                result.recovered[k] = result.recovered.get(k, 0) + v
            result.stopped = stop()
            if result.stopped or (not lost and not any(recovered.values())):
                return
            left = None if limit is None else limit - result.done.get("handed_over", 0)
            n = _worker_count(n, job, left)
            if left == 0 or not _due(engine, run_id, job.clock(), job.only_customers):
                return
        raise DeliveryError(f"senders kept dying: {MAX_ROUNDS} rounds did not finish the run; the ledger is consistent "
                            "and the next 'relmail send' sends the rest")


def _render_partitions(call: _Invocation, batcher: Batcher, sends: list[tuple[str, str]], result: SendResult) -> None:
    """Dry run on the executor: customers split into contiguous partitions (a customer's e-mails stay together)."""
    executor, batch_size = call.executor, call.opts.batch_size
    customers = list(dict.fromkeys(c for c, _ in sends))
    # A few partitions per worker, so one that renders slower does not leave the others idle at the end.
    parts = max(1, min(executor.workers * 4, -(-len(sends) // batch_size)))
    size = -(-len(customers) // parts)
    part_of = {c: i // size for i, c in enumerate(customers)}
    tasks: list[list[tuple[str, str]]] = [[] for _ in range(parts)]
    for pair in sends:
        tasks[part_of[pair[0]]].append(pair)
    job = SendJob(call.project, call.engine, call.run_id, batcher, {}, call.clock, call.clock(), batch_size, None)
    task = send_workers.job_for(executor, job, timedelta(0))
    with send_workers.prepared_for(task, batcher):
        for rendered, failures in executor.map(send_workers.render_task, [(task, t) for t in tasks if t]):
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


def _worker_count(wanted: int, job: SendJob, limit: int | None) -> int:
    """How many senders to start: no more than the due e-mails fill batches (a worker's start-up is not free)."""
    if wanted <= 1:
        return 1
    due = _due(job.engine, job.run_id, job.clock(), job.only_customers)
    if limit is not None:
        due = min(due, limit)
    return max(1, min(wanted, -(-due // job.batch_size)))


def _set_status(engine, run_id: str, status: str, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(status=status, updated_at=now))


def _resubscribe(engine: Engine, adapter, result: SendResult) -> None:
    """Lift the ESP's listing of customers who opted in again (SendGrid, Brevo, Mandrill), before their first e-mail goes.

    The ESP would drop that e-mail, and SendGrid's drop ("Unsubscribed Address") would opt the customer
    out again, undoing the choice they just made on the preference page. A lift the ESP refuses
    is listed in the result; the next send tries it again.
    """
    from ..feedback.resubscribe import lifter, resubscribe

    esp = lifter(adapter)
    if esp is None:
        return
    done = resubscribe(engine, adapter)
    result.resubscribe_provider = esp.label
    result.resubscribed = len(done.lifted)
    result.resubscribe_failed = [x.as_dict() for x in done.failed]


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


def _proof_recipient(text: str) -> tuple[str, str]:
    """(display name, address) of a proof send's ``test_to``: ``you@example.com`` or ``Your Name <you@example.com>``.

    The name ("" without one) is what the proof's To header shows, never the
    customer's. Raises :class:`~relmail.errors.ValidationError` unless ``text``
    is one address.
    """
    found = getaddresses([text])
    if len(found) != 1 or "@" not in found[0][1]:
        raise ValidationError(f"--test-to {text!r} is not one e-mail address: give you@example.com or "
                              "'Your Name <you@example.com>'")
    return found[0]


def _render_only(call: _Invocation, batcher: Batcher, sends, result: SendResult) -> None:
    """Dry run (render, deliver nothing) or proof send (to ``test_to``, recorded nowhere)."""
    test_to, adapter, batch_size = call.opts.test_to, call.opts.adapter, call.opts.batch_size
    name, address = _proof_recipient(test_to) if test_to else ("", None)
    if test_to and adapter is None:
        from ..delivery import adapter_from_project

        adapter = adapter_from_project(call.project)
    try:
        for a in range(0, len(sends), batch_size):
            emails, errors = batcher.render(sends[a : a + batch_size], to=address, to_name=name)
            result.render_errors += [(c, m, r) for (c, m), r in errors.items()]
            result.done["rendered"] = result.done.get("rendered", 0) + len(emails)
            if test_to:
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
                messages = [outgoing(e, ctx, call.project.settings, f"proof:{stamp}:{c}:{m}", tokens.PROOF_RUN,
                                     batcher.topic(m))
                            for (c, m), (e, ctx) in emails.items()]
                for answer in adapter.send(messages):
                    result.done[answer.status] = result.done.get(answer.status, 0) + 1
                    if answer.status != "accepted":  # a proof is recorded nowhere: the reason is all there is
                        why = answer.reason or answer.status
                        result.deferred_reasons[why] = result.deferred_reasons.get(why, 0) + 1
    finally:
        if adapter is not None:
            adapter.close()
