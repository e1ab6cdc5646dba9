"""Parallel sending: sender tasks on an executor (local processes or Dask), each with a lease.

The submitting process (:func:`relmail.sending.send`) holds the run lock,
recovers, prepares the deliveries and then calls :func:`run_senders`, which
starts the senders on an :class:`~relmail.executors.Executor`. Each sender
has its own engine, renderer and adapter and runs the same claim → render →
mark → hand over → record loop as a single-process send until nothing is
due. Work is partitioned by the ledger's atomic claim (``UPDATE …
RETURNING``, ``SKIP LOCKED`` on PostgreSQL), not by a fixed customer split: a
claim can never hand a delivery to two senders, and a slow sender simply
claims fewer batches.

**Leases.** Every sender holds a lease for as long as it may hand e-mails
over: a row of ``run_locks`` keyed ``<run>#sender:<random>`` (the same
mechanism as the run lock: refreshed by a heartbeat and at the end of a batch (at most every 2 s),
stale once its process is gone from this host or it stopped refreshing for
``lock_timeout_minutes``). A sender that ends releases it. A lease left
behind is therefore the mark of a sender that died (a killed process, a
lost Dask worker) with claimed e-mails in ``sending``/``committing``.
:func:`clear_leases` settles such leases, and only when all of them are
stale may :func:`relmail.sending.ledger.recover` run: then no sender of the run can
still be handing e-mails over. A sender whose lease was taken over (it
stalled past the timeout) stops at its next batch. This is how a worker
killed mid-run loses and duplicates nothing: the submitting process notices
the lease, settles the dead sender's claims (``sending`` back to
``planned``, ``committing`` as delivered) and runs another round for what is
left, in the same invocation.

Senders on Dask receive everything with the task (:mod:`relmail.executors.shipping`);
locally on Linux they are forked from the submitter and inherit its compiled
templates and catalogue (:data:`prepared`).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..delivery import adapter_from_project
from ..errors import LockHeld
from ..store import locks
from ..store.db import make_engine
from .batcher import Batcher
from .loop import SendJob, SendResult, loop
from .reconnect import retryable

#: Lease keys of run ``R`` start with ``R + LEASE``.
LEASE = "#sender:"
#: What the submitting process prepared before starting its tasks, by job key: a forked task uses it.
prepared: dict[str, Any] = {}
#: How many jobs' renderers a process keeps.
KEEP_PREPARED = 4


@dataclass(frozen=True)
class SenderJob:
    """What every sender task of one run needs; pickled with the task."""

    key: str
    project: Any
    url: str
    camp: Any
    run_id: str
    as_of: datetime
    #: The submitter's clock (maybe fixed or simulated) and the wall time it was read: tasks keep the offset.
    base: datetime
    wall: float
    deadline: datetime
    only_customers: Sequence[str] | None
    batch_size: int
    lease_timeout: timedelta

    def clock(self) -> datetime:
        return self.base + timedelta(seconds=time.time() - self.wall)


def job_for(executor, job: SendJob, lease_timeout: timedelta) -> SenderJob:
    """The sender tasks' job for ``executor``: a remote one gets the project's templates and secrets packed in."""
    project = job.project
    if executor.remote:
        from ..executors.shipping import ship

        project = ship(project)
    return SenderJob(secrets.token_hex(8), project, job.engine.url.render_as_string(hide_password=False),
                     job.batcher.camp, job.run_id, job.batcher.as_of, job.clock(), time.time(), job.deadline,
                     list(job.only_customers) if job.only_customers else None, job.batch_size, lease_timeout)


@contextmanager
def prepared_for(job: SenderJob, batcher: Batcher) -> Iterator[None]:
    """While it lasts, tasks of ``job`` forked from this process use ``batcher`` (its compiled templates)."""
    prepared[job.key] = batcher
    try:
        yield
    finally:
        prepared.pop(job.key, None)


def batcher_for(job: SenderJob, engine):
    """This process's renderer for ``job``: the submitter's if this process was forked from it, else a new one."""
    batcher = prepared.get(job.key)
    if batcher is None or batcher.pid != os.getpid():
        if batcher is not None:
            batcher = batcher.rebind(engine)  # forked: the compiled templates are ours, the connections are not
        else:
            batcher = Batcher(job.project, engine, job.camp, job.run_id, job.as_of, job.clock)
        prepared[job.key] = batcher
        while len(prepared) > KEEP_PREPARED:  # a long-lived Dask worker sees run after run
            prepared.pop(next(iter(prepared)))
    return batcher


def run_senders(executor, job: SenderJob, n: int, lock, result, *, limit: int | None,
                progress: Callable[[dict[str, int]], None] | None, stop: Callable[[], bool] = lambda: False) -> list[str]:
    """Run ``n`` sender tasks of ``job`` on ``executor``, adding their counts to ``result``.

    ``limit`` is split across the senders. While they work, the submitter
    keeps the run lock fresh; if it loses the lock, is interrupted or
    ``stop()`` turns true, the senders finish their current batch (no
    further request or retry) and stop. Raises the first sender's error
    (after all stopped); returns why tasks were lost (their process died).
    """
    shares = [None] * n if limit is None else [limit // n + (i < limit % n) for i in range(n)]
    done_by: dict[tuple[int, str], dict[str, int]] = {}
    refreshed = [time.monotonic()]

    def tick() -> bool:
        if stop():
            return True
        if time.monotonic() - refreshed[0] > 5:
            try:
                lock.refresh()  # raises LockHeld (and stops the senders) if the lock was taken over
            except Exception as exc:
                if not retryable(exc):
                    raise
                # The database is away: the senders retry it and stop within their
                # bound; the lock lasts far longer, and the next tick refreshes it.
                return False
            refreshed[0] = time.monotonic()
        return False

    def on_report(index: int, message) -> None:
        attempt, done, errors = message  # a task Dask ran again after its worker died reports as a new attempt
        done_by[(index, attempt)] = done
        result.render_errors += errors
        if progress is not None:
            progress(_total(done_by.values(), result.done))

    try:
        outcomes = executor.run(sender_task, [(job, share) for share in shares], tick=tick, on_report=on_report)
    finally:
        result.done.update(_total(done_by.values(), result.done))
    errors = [o.error for o in outcomes if o.error is not None]
    if errors:
        raise errors[0]
    return [o.lost for o in outcomes if o.lost]


def _total(done: Any, base: dict[str, int]) -> dict[str, int]:
    total = dict(base)
    for counts in done:
        for status, count in counts.items():
            total[status] = total.get(status, 0) + count
    return total


def sender_task(job: SenderJob, limit: int | None, channel) -> None:
    """One sender: lease, then claim → render → mark → hand over → record until nothing is due (or stopped)."""
    engine = make_engine(job.url)
    try:
        with locks.acquire(engine, f"{job.run_id}{LEASE}{secrets.token_hex(6)}", timeout=job.lease_timeout,
                           what="sender lease") as lease:
            batcher = batcher_for(job, engine)
            adapter = adapter_from_project(job.project)
            topics = {m.id: m.topic for m in job.camp.messages}
            result = SendResult(job.run_id, planned_now=False, dry_run=False, test_to=None)
            reported = [0]

            def report(done: dict[str, int]) -> None:
                channel.report((lease.key, done, result.render_errors[reported[0]:]))
                reported[0] = len(result.render_errors)

            run = SendJob(job.project, engine, job.run_id, batcher, topics, job.clock, job.deadline, job.batch_size,
                          job.only_customers)
            loop(run, adapter, result, limit=limit, after_batch=lease.check_in, progress=report,
                 stop=lambda: channel.stopped() or lease.lost is not None)
    finally:
        engine.dispose()


def clear_leases(engine, run_id: str, timeout: timedelta) -> list[locks.LockInfo]:
    """Remove the stale leases of ``run_id``'s senders; returns the leases whose holder may still be alive.

    Call only while holding the run lock and with no sender of this process
    running. Only when this returns ``[]`` may the run be recovered.
    """
    live = []
    for info in locks.held_locks(engine):
        if not info.key.startswith(run_id + LEASE):
            continue
        try:
            locks.acquire(engine, info.key, timeout=timeout, heartbeat=False, what="sender lease").release()
        except LockHeld:
            live.append(info)
    return live


def describe_live(live: list[locks.LockInfo]) -> str:
    return "; ".join(f"{i.holder} (lease expires {i.expires_at:%Y-%m-%d %H:%M:%S} UTC unless refreshed)" for i in live)


def render_task(job: SenderJob, pairs: list[tuple[str, str]]) -> tuple[int, list[tuple[str, str, str]]]:
    """Dry run of one partition of customers: how many e-mails rendered, and the failures."""
    batcher = prepared.get(job.key)
    if batcher is None or batcher.pid != os.getpid():
        batcher = batcher_for(job, _engine(job.url))
    rendered, failures = 0, []
    for a in range(0, len(pairs), job.batch_size):
        emails, errors = batcher.render(pairs[a : a + job.batch_size])
        rendered += len(emails)
        failures += [(c, m, r) for (c, m), r in errors.items()]
    return rendered, failures


_engines: dict[tuple[str, int], Any] = {}


def _engine(url: str):
    """One engine per database and process for the render tasks (a pool worker runs many of them)."""
    key = (url, os.getpid())
    if key not in _engines:
        _engines[key] = make_engine(url)
    return _engines[key]
