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

Every task checks first that its worker runs the submitter's relmail
(:func:`relmail.executors.code_fingerprint`): a worker with other code would
decide and render by other rules without any error. A scheduler that goes
away, and a task Dask gave up on, end the command with
:class:`~relmail.errors.ClusterError`.
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import ClusterError, ConfigError, DatabaseError, RelmailError
from . import Channel, Executor, TaskOutcome, classified, code_fingerprint

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


def _where() -> str:
    try:
        from distributed import get_worker

        address = get_worker().address
    except ValueError:  # not in a worker (a test calling the task directly)
        address = "?"
    return f"{address} (host {socket.gethostname()})"


def on_worker(code: str, fn: Callable[..., Any], *args: Any) -> Any:
    """A task on a Dask worker: refused unless the worker runs relmail ``code``; errors name the worker.

    An error of the database raised here is this worker's (its network, its
    route to the database's host), not the submitting machine's, which
    reached the same database a moment before.
    """
    here = code_fingerprint()
    if here != code:
        raise ConfigError(f"the Dask worker {_where()} runs relmail {here}, the submitting machine {code}: "
                          "install the same relmail on every worker and restart the workers")
    try:
        return classified(fn, *args)
    except DatabaseError as exc:
        raise type(exc)(f"on the Dask worker {_where()}: {exc}", exc.detail) from None


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
        self.address = self.client.scheduler.address
        self.code = code_fingerprint()
        self._check_workers()

    def _check_workers(self) -> None:
        """Refuse at once a scheduler or worker whose relmail differs (or that has none); each task checks again.

        The scheduler unpickles every task, so it needs relmail too, the same.
        """
        where = f"the Dask scheduler at {self.address}"
        try:
            code = self.client.run_on_scheduler(code_fingerprint)
        except Exception as exc:  # noqa: BLE001 - whatever its environment lacks
            raise ConfigError(f"{where} cannot run this relmail ({type(exc).__name__}: {exc}); install relmail "
                              f"{self.code} where the scheduler runs and restart it") from None
        if code != self.code:
            raise ConfigError(f"{where} runs relmail {code}, the submitting machine {self.code}: install the same "
                              "relmail where the scheduler runs and restart it")
        found = self.client.run(code_fingerprint, on_error="return")
        for address, code in sorted(found.items()):
            if isinstance(code, BaseException):
                raise ConfigError(f"the Dask worker {address} cannot run this relmail ({type(code).__name__}: {code}); "
                                  f"install relmail {self.code} on every worker and restart the workers")
            if code != self.code:
                raise ConfigError(f"the Dask worker {address} runs relmail {code}, the submitting machine {self.code}: "
                                  "install the same relmail on every worker and restart the workers")

    def _refused(self, exc: BaseException) -> ConfigError | None:
        """The scheduler's refusal of a task it cannot unpickle (another relmail there), as relmail's error."""
        if isinstance(exc, RuntimeError) and "deserialization of the task graph" in str(exc):
            cause = exc.__cause__ or exc
            return ConfigError(f"the Dask scheduler at {self.address} cannot read relmail's tasks "
                               f"({type(cause).__name__}: {cause}); install relmail {self.code} where the scheduler "
                               "runs and restart it")
        return None

    def _lost(self, exc: BaseException | None = None) -> ClusterError:
        distributed = _distributed()
        why = ("its connection was lost" if exc is None or isinstance(exc, _cancelled(distributed)) or not str(exc)
               else f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        return ClusterError(f"lost the Dask scheduler at {self.address} ({why}); a plan wrote nothing "
                            "and a send's ledger is consistent: start the cluster again and run the same command")

    @property
    def workers(self) -> int:
        """``workers`` if given, else every thread of the cluster's workers (at least 1)."""
        if self._workers:
            return self._workers
        return max(1, sum(self.client.nthreads().values()))

    def imap(self, fn: Callable[..., Any], tasks: Sequence[tuple]) -> Iterator[Any]:
        distributed = _distributed()
        token = uuid.uuid4().hex
        # Named after the task's function, not the wrapper: what Dask's dashboard and task stream show.
        futures = [self.client.submit(on_worker, self.code, fn, *t, pure=False, key=f"{fn.__name__}-{token}-{i}")
                   for i, t in enumerate(tasks)]
        try:
            for i, f in enumerate(futures):
                futures[i] = None  # the caller holds the result from here on: the future must not keep it alive
                try:
                    result = f.result()  # in order: the first task that failed raises its own error
                except distributed.KilledWorker as exc:
                    raise ClusterError(f"Dask gave up on a task after the workers running it died ({exc}); "
                                       "nothing was written: check the workers' memory and logs, then run the "
                                       "same command again") from None
                except RelmailError:
                    raise
                except Exception as exc:
                    if self.client.status == "running" and not isinstance(exc, _cancelled(distributed)):
                        refused = self._refused(exc)
                        if refused is None:
                            raise  # the task's own failure (a bug): its traceback is what helps
                        raise refused from None
                    raise self._lost(exc) from None
                del f
                yield result
        finally:
            with contextlib.suppress(Exception):  # a scheduler gone away cancelled them already
                self.client.cancel([f for f in futures if f is not None and not f.done()])

    def run(self, fn: Callable[..., Any], tasks: Sequence[tuple], *, tick: Callable[[], bool] | None = None,
            on_report: Callable[[int, Any], None] | None = None) -> list[TaskOutcome]:
        distributed = _distributed()
        token = uuid.uuid4().hex
        queue = distributed.Queue(f"relmail-report-{token}", client=self.client)
        stop = distributed.Event(f"relmail-stop-{token}", client=self.client)
        futures = [self.client.submit(on_worker, self.code, fn, *t, _DaskChannel(i, queue, stop), pure=False,
                                      key=f"relmail-{fn.__name__}-{i}-{token}") for i, t in enumerate(tasks)]

        def drain() -> None:
            for index, message in queue.get(batch=True):
                if on_report is not None:
                    on_report(index, message)

        try:
            # The client cancels every future when its connection goes; the queue and the stop flag live on the
            # scheduler, and asking them then would wait out the client's reconnect timeout: lost is said below.
            while self.client.status == "running" and not all(f.done() for f in futures):
                drain()
                if tick is not None and tick():
                    stop.set()
                if any(f.status == "error" and not _killed(distributed, f) for f in futures):
                    stop.set()  # the provider refused or the database failed: the others would hit it too
                time.sleep(0.5)
            if self.client.status == "running":
                drain()
        except BaseException as exc:
            if self.client.status != "running":
                raise self._lost(exc) from None
            stop.set()
            # Cancelled below when it times out; a running task still stops at its next look at the flag.
            with contextlib.suppress(TimeoutError):
                distributed.wait(futures, timeout=STOP_GRACE_SECONDS)
            raise
        finally:
            # With the scheduler gone there is no one left to tell: the tasks were cancelled with it (and a call
            # would wait out the client's reconnect timeout).
            if self.client.status == "running":
                with contextlib.suppress(Exception):
                    stop.set()
                    self.client.cancel([f for f in futures if not f.done()])
                    queue.close()
        if self.client.status != "running":
            raise self._lost()
        outcomes = [_outcome(distributed, f) for f in futures]
        for outcome in outcomes:
            outcome.error = outcome.error and (self._refused(outcome.error) or outcome.error)
        return outcomes

    def close(self) -> None:
        if self._own:
            self.client.close()
            self._own = False


def _cancelled(distributed) -> tuple[type[BaseException], ...]:
    """What a future raises when its scheduler went away: cancelled with it, or the connection closed."""
    import asyncio

    return asyncio.CancelledError, distributed.client.FutureCancelledError, distributed.comm.CommClosedError


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
