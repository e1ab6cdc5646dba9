"""A Dask distributed cluster as executor: ``--executor dask --scheduler tcp://HOST:8786``.

The submitting process connects a :class:`distributed.Client` to the
scheduler and submits module-level relmail functions; the workers need the
relmail package (``pip install 'relmail[dask]'``) and network access to the
database and the mail provider, nothing else: what a task needs travels
with it. No protocol of relmail's own: progress goes through a
:class:`distributed.Queue`, the stop request through a
:class:`distributed.Event`, both named per call.

When a worker process dies, Dask's scheduler notices (its nanny or the lost
connection) and runs the task again on another worker; after
``distributed.scheduler.allowed-failures`` such deaths the task ends with
``KilledWorker``, reported here as ``lost``. Dask cannot stop a task that is
already running: a stop request is a flag the task reads between two pieces
of work.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import ConfigError
from . import Channel, Executor, TaskOutcome, classified

#: How long stopping tasks may take to finish their current piece of work before they are cancelled.
STOP_GRACE_SECONDS = 60.0
#: How long connecting to the scheduler may take.
CONNECT_TIMEOUT = "20s"


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ConfigError("--executor dask needs Dask: pip install 'relmail[dask]'") from None
    return distributed


class _DaskChannel(Channel):
    """Pickled into every task; the Queue and Event find the worker's client by name on the other side."""

    def __init__(self, index: int, queue, stop):
        self.index, self.queue, self.stop = index, queue, stop
        self._stopped, self._asked = False, float("-inf")

    def report(self, message: Any) -> None:
        self.queue.put((self.index, message))

    def stopped(self) -> bool:
        # Asked before every request and retry of a send: the scheduler is asked at most twice a second.
        now = time.monotonic()
        if not self._stopped and now - self._asked >= 0.5:
            self._stopped, self._asked = self.stop.is_set(), now
        return self._stopped


class DaskExecutor(Executor):
    """Tasks on the workers of the Dask cluster at ``scheduler`` (an address or a connected ``Client``)."""

    name = "dask"
    remote = True

    def __init__(self, scheduler, *, workers: int | None = None):
        distributed = _distributed()
        if isinstance(scheduler, distributed.Client):
            self.client, self._own = scheduler, False
        else:
            try:
                self.client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
            self._own = True
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be at least 1, got {workers}")
        self._workers = workers

    @property
    def workers(self) -> int:
        """``workers`` if given, else every thread of the cluster's workers (at least 1)."""
        if self._workers:
            return self._workers
        return max(1, sum(self.client.nthreads().values()))

    def imap(self, fn: Callable[..., Any], tasks: Sequence[tuple]) -> Iterator[Any]:
        token = uuid.uuid4().hex
        # Named after the task's function, not the wrapper: what Dask's dashboard and task stream show.
        futures = [self.client.submit(classified, fn, *t, pure=False, key=f"{fn.__name__}-{token}-{i}") for i, t in enumerate(tasks)]
        try:
            for i, f in enumerate(futures):
                futures[i] = None  # the caller holds the result from here on: the future must not keep it alive
                yield f.result()  # in order: the first task that failed raises its own error
                del f
        finally:
            self.client.cancel([f for f in futures if f is not None and not f.done()])

    def run(self, fn: Callable[..., Any], tasks: Sequence[tuple], *, tick: Callable[[], bool] | None = None,
            on_report: Callable[[int, Any], None] | None = None) -> list[TaskOutcome]:
        distributed = _distributed()
        token = uuid.uuid4().hex
        queue = distributed.Queue(f"relmail-report-{token}", client=self.client)
        stop = distributed.Event(f"relmail-stop-{token}", client=self.client)
        futures = [self.client.submit(classified, fn, *t, _DaskChannel(i, queue, stop), pure=False, key=f"relmail-{fn.__name__}-{i}-{token}")
                   for i, t in enumerate(tasks)]

        def drain() -> None:
            for index, message in queue.get(batch=True):
                if on_report is not None:
                    on_report(index, message)

        try:
            while not all(f.done() for f in futures):
                drain()
                if tick is not None and tick():
                    stop.set()
                if any(f.status == "error" and not _killed(distributed, f) for f in futures):
                    stop.set()  # the provider refused or the database failed: the others would hit it too
                time.sleep(0.5)
            drain()
        except BaseException:
            stop.set()
            # Cancelled below when it times out; a running task still stops at its next look at the flag.
            with contextlib.suppress(TimeoutError):
                distributed.wait(futures, timeout=STOP_GRACE_SECONDS)
            raise
        finally:
            stop.set()
            self.client.cancel([f for f in futures if not f.done()])
            queue.close()
        return [_outcome(distributed, f) for f in futures]

    def close(self) -> None:
        if self._own:
            self.client.close()
            self._own = False


def _killed(distributed, future) -> bool:
    return isinstance(future.exception(), distributed.KilledWorker)


def _outcome(distributed, future) -> TaskOutcome:
    if future.status == "finished":
        return TaskOutcome(value=future.result())
    if future.status == "error":
        error = future.exception()
        if isinstance(error, distributed.KilledWorker):
            return TaskOutcome(lost=f"Dask gave up on the task after its workers died: {error}")
        return TaskOutcome(error=error)
    return TaskOutcome(lost=f"the task was {future.status} by the Dask scheduler")
