"""Where relmail's parallel work runs: local processes or a Dask cluster, behind one interface.

An :class:`Executor` offers two things:

* :meth:`Executor.map` — ``fn(*task)`` for every task, results in order, the
  first task's error re-raised (a :class:`~relmail.errors.RelmailError`
  passes through unchanged); :meth:`Executor.imap` yields them one by one as
  they are done. For partitioned stages: plan scoring (whose ledger write
  takes each range as it arrives).
* :meth:`Executor.run` — long-running tasks that all run at the same time
  (the senders of ``relmail send``), each handed a :class:`Channel` to report
  progress to the submitting process and to learn that it should stop. The
  submitting process calls ``tick`` every second meanwhile (to keep the run
  lock fresh) and gets one :class:`TaskOutcome` per task, including tasks
  whose process died (``lost``).

``fn`` is always a module-level function (it is pickled by reference) and
the tasks are tuples of picklable arguments. :func:`get_executor` picks the
implementation by name: ``local`` (:mod:`relmail.executors.local`, the
default) or ``dask`` (:mod:`relmail.executors.dask`, needs the ``dask``
extra and a scheduler address).
"""

from __future__ import annotations

import functools
import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from ..errors import ConfigError
from ..store.faults import as_relmail_error

#: Environment variable with the default ``--scheduler`` of ``--executor dask``.
ENV_SCHEDULER = "RELMAIL_DASK_SCHEDULER"
NAMES = ("local", "dask")


class Channel(ABC):
    """What a task of :meth:`Executor.run` uses to talk to the submitting process."""

    @abstractmethod
    def report(self, message: Any) -> None:
        """Send ``message`` (picklable) to the submitter's ``on_report``."""

    @abstractmethod
    def stopped(self) -> bool:
        """Whether the submitter asked every task to stop after its current piece of work."""


@dataclass
class TaskOutcome:
    """How one task of :meth:`Executor.run` ended: a value, an error, or lost with its process."""

    value: Any = None
    error: BaseException | None = None
    #: Why the task's process is gone without an answer (killed, out of memory, a lost machine), or None.
    lost: str | None = None


class Executor(ABC):
    """Runs module-level functions in parallel; see the module docstring."""

    #: ``local`` or ``dask``.
    name: str = ""
    #: Whether the tasks' processes may be on other machines (so they cannot read a SQLite file or the project folder).
    remote: bool = False

    @property
    @abstractmethod
    def workers(self) -> int:
        """How many tasks run at the same time."""

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple]) -> list[Any]:
        """``[fn(*t) for t in tasks]`` computed in parallel, in order; the first failing task's error is raised."""
        return list(self.imap(fn, tasks))

    @abstractmethod
    def imap(self, fn: Callable[..., Any], tasks: Sequence[tuple]) -> Iterator[Any]:
        """:meth:`map` as a generator: each result as soon as it and those before it are done.

        Every task is submitted at once; closing the generator early cancels
        the tasks not started yet.
        """

    @abstractmethod
    def run(self, fn: Callable[..., Any], tasks: Sequence[tuple], *, tick: Callable[[], bool] | None = None,
            on_report: Callable[[int, Any], None] | None = None) -> list[TaskOutcome]:
        """Run ``fn(*task, channel)`` for every task at once, until all ended; one outcome per task, in order.

        ``on_report(index, message)`` receives what task ``index`` reported.
        ``tick`` is called about every second; when it returns True, every
        task is asked to stop after its current piece of work, and the run
        ends once they have. If it raises (or the submitter is interrupted),
        every task is asked to stop, given time to finish its current piece
        of work, and the exception propagates.
        """

    def close(self) -> None:
        """Release what the executor holds (a cluster connection); idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def portable(exc: Exception) -> Exception:
    """A task's error as the submitter gets it: a database driver's error classified where it happened.

    A driver's exception may not survive pickling (psycopg's do not always),
    and its text holds the SQL statement; the submitter prints the
    classified error's one line, on whichever machine the task ran.
    """
    return as_relmail_error(exc) or exc


def classified(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a task, raising a database error as relmail's (:func:`portable`)."""
    try:
        return fn(*args)
    except Exception as exc:
        raise portable(exc) from None


@functools.cache
def code_fingerprint() -> str:
    """This process's relmail: its version and a digest of its Python files, e.g. ``0.1.0+3f2a9c1e04b7``.

    Two installations of the same version can still differ (a checkout a few
    commits apart decides differently), so the files are compared, not the
    version number alone. Computed once per process (about 250 files).
    """
    from .. import __version__

    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{__version__}+{digest.hexdigest()[:12]}"


def get_executor(name: str = "local", *, workers: int | None = None, scheduler: str | None = None,
                 niceness: int = 0) -> Executor:
    """The executor called ``name``: ``local`` (``workers`` processes, default all cores) or ``dask``.

    ``dask`` connects a :class:`distributed.Client` to ``scheduler`` (default:
    ``$RELMAIL_DASK_SCHEDULER``); ``workers`` is then how many tasks
    :meth:`Executor.run` starts (default: every thread of the cluster).
    ``niceness`` lowers the CPU priority of local worker processes (see
    :class:`relmail.executors.local.LocalExecutor`); Dask workers are not this process's to change.
    """
    if name == "local":
        from .local import LocalExecutor

        if scheduler:
            raise ConfigError("--scheduler is only used with --executor dask")
        return LocalExecutor(workers, niceness=niceness)
    if name == "dask":
        from .dask import DaskExecutor

        address = scheduler or os.environ.get(ENV_SCHEDULER)
        if not address:
            raise ConfigError(f"--executor dask needs a scheduler address: --scheduler tcp://HOST:8786 or {ENV_SCHEDULER}")
        return DaskExecutor(address, workers=workers)
    raise ConfigError(f"unknown executor {name!r}; known: {', '.join(NAMES)}")
