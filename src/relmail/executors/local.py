"""Local worker processes: the default executor, one process per core.

:meth:`LocalExecutor.run` starts one process per task. A task process never
outlives the submitting process: if the submitter dies (SIGKILL included), its
tasks are killed at once (``PR_SET_PDEATHSIG`` on Linux, a watchdog on the
parent's sentinel elsewhere), so a crashed ``relmail send`` cannot leave
senders running while a later run takes over its stale lock. Ctrl-C reaches
the whole process group, and so does the SIGTERM of ``timeout`` or
``systemctl stop``; the :meth:`~LocalExecutor.run` tasks ignore both and the
submitter alone decides (it asks them to stop after their current batch, or
kills them at once when the same signal comes again). :meth:`~LocalExecutor.imap` workers
ignore Ctrl-C and die on SIGTERM: they write nothing.

Processes are started with ``fork`` on Linux — a task inherits the imported
modules (Jinja, premailer, SQLAlchemy) and whatever the submitter prepared,
such as compiled templates, instead of paying a fresh interpreter's start-up
— and with ``spawn`` elsewhere. A forked task never touches the submitter's
database connections or threads: it opens its own engine.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue as queue_module
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from ..errors import RelmailError
from . import Channel, Executor, TaskOutcome, classified, portable

#: How long stopping tasks may take to finish their current piece of work before they are killed.
STOP_GRACE_SECONDS = 60.0


def _context():
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


class _LocalChannel(Channel):
    def __init__(self, index: int, results, stop):
        self.index, self.results, self.stop = index, results, stop

    def report(self, message: Any) -> None:
        self.results.put(("report", self.index, message))

    def stopped(self) -> bool:
        return self.stop.is_set()


class LocalExecutor(Executor):
    """Processes on this machine; ``workers`` defaults to ``os.cpu_count()``, ``1`` runs in this process.

    ``niceness``: how much lower than the submitter's the CPU priority of the
    :meth:`imap` worker processes is (Unix; 0 = the same), for work whose
    results the submitter must handle as they come (a plan's ledger write).
    """

    name = "local"
    remote = False

    def __init__(self, workers: int | None = None, niceness: int = 0):
        if workers is not None and workers < 1:
            raise RelmailError(f"workers must be at least 1, got {workers}")
        self._workers = workers or os.cpu_count() or 1
        self._niceness = niceness

    @property
    def workers(self) -> int:
        return self._workers

    def imap(self, fn: Callable[..., Any], tasks: Sequence[tuple]) -> Iterator[Any]:
        tasks = list(tasks)
        n = min(self._workers, len(tasks))
        if n <= 1:
            for t in tasks:
                yield fn(*t)
            return
        pool = ProcessPoolExecutor(max_workers=n, mp_context=_context(), initializer=_start_worker, initargs=(self._niceness,))
        try:
            futures = [pool.submit(classified, fn, *t) for t in tasks]
            del tasks
            for i, f in enumerate(futures):
                futures[i] = None  # the caller holds the result from here on: the future must not keep it alive
                yield f.result()  # in order: the first task that failed raises
                del f
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def run(self, fn: Callable[..., Any], tasks: Sequence[tuple], *, tick: Callable[[], bool] | None = None,
            on_report: Callable[[int, Any], None] | None = None) -> list[TaskOutcome]:
        ctx = _context()
        results, stop = ctx.Queue(), ctx.Event()
        procs = [ctx.Process(target=_task, name=f"relmail-task-{i}", args=(fn, tuple(t), i, results, stop))
                 for i, t in enumerate(tasks)]
        outcomes: dict[int, TaskOutcome] = {}
        try:
            for p in procs:
                p.start()
            while len(outcomes) < len(procs):
                # A process found dead *before* waiting had flushed its last message already.
                dead = [i for i, p in enumerate(procs) if i not in outcomes and not p.is_alive()]
                try:
                    kind, i, payload = results.get(timeout=1.0)
                except queue_module.Empty:
                    for i in dead:
                        outcomes[i] = TaskOutcome(lost=f"process {procs[i].pid} ended with exit code {procs[i].exitcode}")
                    kind = None
                if tick is not None and tick():
                    stop.set()
                if kind == "report":
                    if on_report is not None:
                        on_report(i, payload)
                elif kind == "done":
                    value, error = pickle.loads(payload)
                    outcomes[i] = TaskOutcome(value=value, error=error)
                    if error is not None:
                        stop.set()  # the provider refused or the database failed: the others would hit it too
        except KeyboardInterrupt:
            for p in procs:  # stopping at once (the same signal again): the tasks ignore signals, so end them here
                if p.pid is not None and p.is_alive():
                    p.kill()
            raise
        finally:
            stop.set()
            for p in procs:
                if p.pid is not None:
                    p.join(STOP_GRACE_SECONDS)
                    if p.is_alive():
                        p.kill()
                        p.join()
            results.close()
        return [outcomes[i] for i in range(len(procs))]


def _start_worker(niceness: int) -> None:
    _die_with_parent()
    if niceness and hasattr(os, "nice"):
        os.nice(niceness)


def _die_with_parent(*, ignore_sigterm: bool = False) -> None:
    """Make sure this process cannot keep working after the submitter (the lock holder) is gone."""
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
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked process inherits the CLI's SIGTERM handler (unwind to release the lock): not its job.
    # A task (a sender) must not die of it either: a SIGTERM to the process group would end it in the
    # middle of handing e-mails over, leaving them uncertain; the submitter asks it to stop in order.
    signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore_sigterm else signal.SIG_DFL)


def _task(fn, task: tuple, index: int, results, stop) -> None:
    _die_with_parent(ignore_sigterm=True)
    value, error = None, None
    try:
        value = fn(*task, _LocalChannel(index, results, stop))
    except Exception as exc:  # noqa: BLE001 - any failure is reported to the submitter, which decides
        error = portable(exc)
    results.put(("done", index, _pickled(value, error)))
    results.close()
    results.join_thread()


def _pickled(value: Any, error: BaseException | None) -> bytes:
    try:
        return pickle.dumps((value, error))
    except Exception:  # noqa: BLE001 - an unpicklable result or error still reaches the submitter
        return pickle.dumps((None, RelmailError(f"{type(error).__name__}: {error}" if error else "unpicklable task result")))
