"""Run locks in the database: one sender (or planner) per run at a time.

A lock is a row of ``run_locks`` keyed by the run id (``campaign:window``).
Acquiring is an INSERT that fails on the primary key when the lock is held,
so it works the same on SQLite and PostgreSQL and across hosts. While it
works, the holder refreshes ``expires_at`` (a heartbeat thread every quarter
of the timeout, and the sender after each batch).

A lock can be taken over, with a compare-and-swap UPDATE on its token, when

* its holder stopped refreshing it for longer than the timeout (a crashed
  host, a killed pod), or
* its holder ran on this same host (same hostname, boot and PID namespace)
  and that process is gone: a ``kill -9``'d sender does not block the next
  run until the timeout. The process start time is compared too, so a
  reused PID is not mistaken for the holder.

A holder that finds its lock taken over (it stalled for longer than the
timeout) stops with :class:`~relmail.errors.LockHeld` at its next refresh.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ..errors import ConfigError, LockHeld
from .models import RunLock

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ..project import Project

L = RunLock.__table__
DEFAULT_TIMEOUT = timedelta(minutes=10)
#: How often a work loop's :meth:`HeldLock.check_in` actually writes.
CHECK_IN_SECONDS = 2.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def host_id() -> str:
    """Identifies "a place where this process can check another's PID": host, boot and PID namespace."""
    raw = "|".join((socket.gethostname(), _read("/proc/sys/kernel/random/boot_id"), _pid_namespace()))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def process_start(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (Linux ``/proc``), or None where unknown."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def process_alive(pid: int, start: int | None) -> bool:
    """Whether process ``pid`` (started at ``start``, if known) still runs on this host."""
    if Path("/proc/self/stat").exists():
        stat = _read(f"/proc/{pid}/stat")
        if not stat:
            return False
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X"):  # a zombie has exited; only its exit status waits to be collected
            return False
        return start is None or int(fields[19]) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class LockInfo:
    """A lock as stored: who holds it and since when."""

    key: str
    holder: str
    host_id: str
    pid: int
    pid_start: int | None
    acquired_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    token: str

    def describe(self) -> str:
        return (f"{self.holder} since {self.acquired_at:%Y-%m-%d %H:%M:%S} UTC "
                f"(last heartbeat {self.heartbeat_at:%H:%M:%S} UTC, expires {self.expires_at:%Y-%m-%d %H:%M:%S} UTC "
                "unless refreshed)")

    def stale(self, now: datetime, here: str) -> str | None:
        """Why the lock may be taken over now, or None while its holder is alive."""
        if self.expires_at <= now:
            return f"its holder {self.holder} stopped refreshing it at {self.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC"
        if self.host_id == here and not process_alive(self.pid, self.pid_start):
            return f"its holder {self.holder} is no longer running on this host"
        return None


def holder_of(engine: Engine, key: str) -> LockInfo | None:
    """The current holder of lock ``key``, or None."""
    with engine.connect() as conn:
        row = conn.execute(select(L).where(L.c.key == key)).mappings().first()
    return LockInfo(**{k: row[k] for k in LockInfo.__dataclass_fields__}) if row else None


def held_locks(engine: Engine) -> list[LockInfo]:
    """Every lock currently in the table (some may be stale), oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(L).order_by(L.c.acquired_at)).mappings().all()
    return [LockInfo(**{k: r[k] for k in LockInfo.__dataclass_fields__}) for r in rows]


def force_release(engine: Engine, key: str) -> LockInfo | None:
    """Delete lock ``key`` whoever holds it (an operator's last resort); returns what was deleted."""
    info = holder_of(engine, key)
    if info is not None:
        with engine.begin() as conn:
            conn.execute(delete(L).where(L.c.key == key, L.c.token == info.token))
    return info


class HeldLock:
    """A lock this process holds; use as a context manager or call :meth:`release`."""

    def __init__(self, engine: Engine, key: str, token: str, holder: str, timeout: timedelta,
                 now: Callable[[], datetime], taken_over: str | None):
        self.engine, self.key, self.token, self.holder, self.timeout = engine, key, token, holder, timeout
        self.now = now
        #: Why an earlier holder's lock was taken over, if it was.
        self.taken_over = taken_over
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()
        self._refreshed = time.monotonic()

    def refresh(self) -> None:
        """Extend the lock; raises :class:`LockHeld` if another process took it over."""
        if self.lost is None:
            with self._guard:
                t = self.now()
                with self.engine.begin() as conn:
                    n = conn.execute(
                        update(L).where(L.c.key == self.key, L.c.token == self.token)
                        .values(heartbeat_at=t, expires_at=t + self.timeout)
                    ).rowcount
                # Only a write that went through counts for check_in; a failed one is retried at the next.
                self._refreshed = time.monotonic()
                if n != 1:
                    self.lost = self._taken_over()
        if self.lost is not None:
            raise LockHeld(self.lost)

    def _taken_over(self) -> str:
        return (f"the lock on run {self.key} was taken over by another process after this one did not "
                f"refresh it for {_minutes(self.timeout)}; stopping so that only one process works on the run")

    def refresh_in(self, conn: Connection) -> None:
        """:meth:`refresh` inside the caller's transaction on ``conn``: what it commits stands only while the lock is ours.

        A writer holding a long transaction (a plan writing its run) confirms
        its lock through that transaction: on PostgreSQL the lock's row stays
        locked to it until the commit, and on SQLite a second connection could
        not write while this one holds the database's write lock.
        """
        t = self.now()
        n = conn.execute(update(L).where(L.c.key == self.key, L.c.token == self.token)
                         .values(heartbeat_at=t, expires_at=t + self.timeout)).rowcount
        if n != 1:
            self.lost = self._taken_over()
            raise LockHeld(self.lost)
        self._refreshed = time.monotonic()

    def check_in(self, seconds: float = CHECK_IN_SECONDS) -> None:
        """:meth:`refresh`, unless this process did within ``seconds``: a work loop's call after every batch.

        One write per batch would be a write transaction for nothing on
        SQLite's single writer. A lock is only taken over after ``timeout``
        without a refresh, far longer than ``seconds``, so a holder that
        stalled that long still refreshes, and learns it lost the lock, at
        its first check-in after the stall.
        """
        if self.lost is not None or time.monotonic() - self._refreshed >= seconds:
            self.refresh()

    def start_heartbeat(self) -> HeldLock:
        """Refresh in a background thread every quarter of the timeout until :meth:`release`."""
        def beat() -> None:
            while not self._stop.wait(self.timeout.total_seconds() / 4):
                try:
                    self.refresh()
                except LockHeld:
                    return
                except Exception:  # a database hiccup: the next beat or the sender's own refresh retries
                    continue

        self._thread = threading.Thread(target=beat, name=f"relmail-lock-{self.key}", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        """Stop the heartbeat and delete the lock (only if still ours)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._guard, self.engine.begin() as conn:
            conn.execute(delete(L).where(L.c.key == self.key, L.c.token == self.token))

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.release()
            return
        # The database failed, and the error already on its way out says so;
        # the lock left behind is taken over once this process is gone.
        with contextlib.suppress(SQLAlchemyError):
            self.release()


def _minutes(t: timedelta) -> str:
    s = t.total_seconds()
    return f"{s / 60:g} minutes" if s >= 60 else f"{s:g} seconds"


def acquire(engine: Engine, key: str, *, timeout: timedelta = DEFAULT_TIMEOUT, heartbeat: bool = True,
            now: Callable[[], datetime] | None = None, what: str = "run") -> HeldLock:
    """Take lock ``key`` or raise :class:`LockHeld` naming its holder and since when.

    A stale lock (see the module docstring) is taken over atomically: of two
    processes trying at once, exactly one wins.
    """
    clock = now or _utcnow
    here = host_id()
    pid = os.getpid()
    holder = f"{socket.gethostname()}:{pid}"
    token = secrets.token_hex(16)
    taken_over = None
    for _ in range(5):
        t = clock()
        values = {"holder": holder, "token": token, "host_id": here, "pid": pid, "pid_start": process_start(pid),
                  "acquired_at": t, "heartbeat_at": t, "expires_at": t + timeout}
        try:
            with engine.begin() as conn:
                conn.execute(insert(L).values(key=key, **values))
            break
        except IntegrityError:
            pass
        info = holder_of(engine, key)
        if info is None:  # released between our INSERT and SELECT: try again
            continue
        why = info.stale(t, here)
        if why is None:
            raise LockHeld(f"{what} {key} is being worked on by {info.describe()}; "
                           "wait for it to finish (a crashed holder's lock is taken over once stale)")
        with engine.begin() as conn:
            won = conn.execute(
                update(L).where(L.c.key == key, L.c.token == info.token).values(**values)
            ).rowcount == 1
        if won:
            taken_over = why
            break
    else:
        raise LockHeld(f"could not take the lock on {what} {key}: it changed hands repeatedly; try again")
    lock = HeldLock(engine, key, token, holder, timeout, clock, taken_over)
    return lock.start_heartbeat() if heartbeat else lock


def timeout_for(project: Project) -> timedelta:
    """``[schedule] lock_timeout_minutes`` in relmail.toml (default 10)."""
    value = project.settings.section("schedule").get("lock_timeout_minutes", DEFAULT_TIMEOUT.total_seconds() / 60)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"relmail.toml [schedule] lock_timeout_minutes: expected a positive number of minutes, got {value!r}")
    return timedelta(minutes=value)
