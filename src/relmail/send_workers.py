"""Parallel sending: worker processes that claim, render and deliver batches of one run.

The parent (:func:`relmail.send.send`) holds the run lock, recovers, prepares
the deliveries and then calls :func:`run_workers`. Each worker is a fresh
``spawn`` process with its own engine, renderer and adapter; it runs the same
claim → render → mark → hand over → record loop as a single-process send
until nothing is due. Work is partitioned by the ledger's atomic claim
(``UPDATE … RETURNING``, ``SKIP LOCKED`` on PostgreSQL), not by a fixed
customer split: a claim can never hand a delivery to two workers, and a slow
worker (a slow provider connection, big templates) simply claims fewer
batches instead of leaving the others idle at the end.

A worker never outlives the parent: if the parent dies, its workers are
killed at once (``PR_SET_PDEATHSIG`` on Linux, a watchdog on the parent's
sentinel elsewhere), so a stale lock can only be taken over once nobody
sends any more. A worker that dies leaves its claimed deliveries in
``sending``/``committing``, which the next run's :func:`relmail.ledger.recover`
settles exactly as for a crashed single-process sender.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue as queue_module
import signal
import threading
import time
from datetime import datetime, timedelta
from typing import Callable

from .errors import DeliveryError

#: How long a stopping worker may take to finish its batch before it is terminated.
STOP_GRACE_SECONDS = 60.0


def run_workers(project, engine, camp, run_id: str, as_of: datetime, n: int, lock, result, *, limit: int | None,
                only_customers, batch_size: int, deadline: datetime, clock: Callable[[], datetime],
                progress: Callable[[dict[str, int]], None] | None) -> None:
    """Send the run's due deliveries with ``n`` worker processes, adding their counts to ``result``.

    ``limit`` is split across the workers. While they work, the parent keeps
    the run lock fresh; if it loses the lock, or is interrupted, the workers
    finish their current batch and stop. Raises the first worker's error
    (after all workers stopped), or :class:`DeliveryError` for a worker that died.
    """

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    stop = ctx.Event()
    url = engine.url.render_as_string(hide_password=False)
    shares = [None] * n if limit is None else [limit // n + (i < limit % n) for i in range(n)]
    # The caller's clock may be a fixed or simulated time; workers keep its offset from the wall clock.
    base, wall = clock(), time.time()
    procs = [
        ctx.Process(target=_worker, name=f"relmail-send-{i}", args=(
            i, project, url, camp, run_id, as_of, base, wall, deadline, shares[i], only_customers, batch_size, stop, results))
        for i in range(n)
    ]
    done_by: dict[int, dict[str, int]] = {}
    finished: dict[int, BaseException | None] = {}
    died: dict[int, int | None] = {}
    refreshed = time.monotonic()
    try:
        for p in procs:
            p.start()
        while len(finished) + len(died) < n:
            # A worker found dead *before* waiting had flushed its last message already.
            dead = [i for i, p in enumerate(procs) if i not in finished and i not in died and not p.is_alive()]
            try:
                kind, i, done, payload = results.get(timeout=1.0)
            except queue_module.Empty:
                for i in dead:
                    died[i] = procs[i].exitcode
                kind = None
            if time.monotonic() - refreshed > 5:
                lock.refresh()  # raises Conflict (and stops the workers below) if the lock was taken over
                refreshed = time.monotonic()
            if kind is None:
                continue
            done_by[i] = done
            if kind == "done":
                errors, error = payload
                result.render_errors += errors
                finished[i] = _unpickle(error)
                if finished[i] is not None:
                    stop.set()  # the provider refused or the database failed: the others would hit it too
            if progress is not None:
                progress(_total(done_by))
    finally:
        stop.set()
        for p in procs:
            if p.pid is not None:
                p.join(STOP_GRACE_SECONDS)
                if p.is_alive():
                    p.kill()
                    p.join()
        results.close()
        for status, count in _total(done_by).items():
            result.done[status] = result.done.get(status, 0) + count
    errors = [e for e in finished.values() if e is not None]
    if errors:
        raise errors[0]
    if died:
        which = ", ".join(f"worker {i} (exit code {code})" for i, code in sorted(died.items()))
        raise DeliveryError(f"{which} died while sending; the ledger is consistent and the next 'relmail send' "
                            "settles its claimed e-mails and sends the rest")


def _total(done_by: dict[int, dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for done in done_by.values():
        for status, count in done.items():
            total[status] = total.get(status, 0) + count
    return total


def _unpickle(blob: bytes | None) -> BaseException | None:
    return None if blob is None else pickle.loads(blob)


def _die_with_parent() -> None:
    """Make sure this worker cannot keep sending after the parent (the lock holder) is gone."""
    parent = multiprocessing.parent_process()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the kernel kills us when the parent dies
    except (OSError, AttributeError):
        pass
    if parent is not None:
        def watch() -> None:
            parent.join()  # waits on the parent's sentinel: returns when the parent is gone
            os._exit(70)

        threading.Thread(target=watch, name="relmail-parent-watch", daemon=True).start()
        if not parent.is_alive():
            os._exit(70)


def _worker(index: int, project, url: str, camp, run_id: str, as_of: datetime, base: datetime, wall: float,
            deadline: datetime, limit: int | None, only_customers, batch_size: int, stop, results) -> None:
    _die_with_parent()
    # Ctrl-C reaches the whole process group: the parent alone decides, and asks us to stop after this batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from .db import make_engine
    from .delivery import adapter_from_project
    from .send import SendResult, _Batcher, _loop

    engine = make_engine(url)
    result = SendResult(run_id, planned_now=False, dry_run=False, test_to=None)
    error: BaseException | None = None

    def clock() -> datetime:
        return base + timedelta(seconds=time.time() - wall)

    try:
        batcher = _Batcher(project, engine, camp, run_id, as_of)
        adapter = adapter_from_project(project)
        topics = {m.id: m.topic for m in camp.messages}
        _loop(project, engine, run_id, batcher, adapter, result, topics, clock, deadline, limit=limit,
              only_customers=only_customers, batch_size=batch_size, after_batch=lambda: None,
              progress=lambda done: results.put(("progress", index, done, None)), stop=stop.is_set)
    except Exception as exc:  # reported to the parent, which raises it after all workers stopped
        error = exc
    finally:
        engine.dispose()
    results.put(("done", index, dict(result.done), (result.render_errors, _pickled(error))))
    results.close()
    results.join_thread()


def _pickled(error: BaseException | None) -> bytes | None:
    if error is None:
        return None
    try:
        return pickle.dumps(error)
    except Exception:
        return pickle.dumps(DeliveryError(f"{type(error).__name__}: {error}"))
