"""Bounds on every render: e-mail size, string and list sizes, ranges, wall-clock time.

A template is code a marketer edits in a pull request; a typo must not take
down the CI runner or the weekly send. Every render runs with the limits of
``[render]`` in ``relmail.toml`` (defaults in :class:`Limits`)::

    [render]
    max_email_bytes = 1_000_000   # one complete e-mail (RFC 5322 bytes)
    max_sequence = 100_000        # the longest string (characters) or list (items) a template may build
    max_range = 10_000            # the most numbers one range() may give
    timeout_seconds = 2.0         # wall-clock time for one e-mail's renders

The sandbox (:class:`~relmail.render.sandbox.BoundedSandbox`) checks a result's size *before* it is
made wherever a template can multiply data in one step: ``*`` on strings,
lists and whole numbers, ``+``, ``~``, ``%`` and ``**``, ``format`` and
``format_map``, the string methods and filters that pad, join, replace,
translate, indent, wrap, batch or pretty-print, ``range()`` and ``lipsum()``. Output is
collected in batches and stopped at the e-mail limit. Loops are bounded by
the clock: a watchdog thread raises :class:`RenderTimeout` in the rendering
thread when its deadline passes (``PyThreadState_SetAsyncExc``, the same
mechanism as Ctrl-C, so it also works in the worker threads of a send).

Exceeding a limit is a :class:`LimitExceeded`, a
:class:`~relmail.errors.TemplateError` that names the limit and the setting;
the renderer adds the template's file and line, and in a send it is a
``RENDER_ERROR`` for that e-mail only.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

from ..errors import ConfigError, TemplateError

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """The bounds of one render (``[render]`` in ``relmail.toml``)."""

    max_email_bytes: int = 1_000_000
    max_sequence: int = 100_000
    max_range: int = 10_000
    timeout_seconds: float = 2.0

    @classmethod
    def from_settings(cls, settings) -> Limits:
        table = settings.section("render")
        values = {}
        for key, default in cls().__dict__.items():
            if key not in table:
                continue
            value = table[key]
            kind = float if isinstance(default, float) else int
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)) or value <= 0:
                raise ConfigError(f"relmail.toml [render]: '{key}' must be a positive {'number' if kind is float else 'whole number'}, "
                                  f"got {value!r}")
            values[key] = kind(value)
        return cls(**values)


class LimitExceeded(TemplateError):
    """A render went past one of its :class:`Limits`."""

    def __init__(self, what: str, setting: str):
        super().__init__(f"{what} ([render] {setting} in relmail.toml)")
        self.setting = setting


class RenderTimeout(BaseException):
    """Raised asynchronously in a thread whose render is past its deadline.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception``
    inside a filter or library swallows it; :func:`run_bounded` turns it into a
    :class:`LimitExceeded`.
    """


# -- the clock -------------------------------------------------------------------------------------


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


class _Watchdog:
    """One daemon thread that interrupts renders past their deadline; idle while nothing renders."""

    #: How often deadlines are looked at while something renders.
    TICK = 0.02
    #: Seconds after an interrupt that the render is interrupted again if it still runs: an interrupt that
    #: lands where Python cannot raise it (a finalizer run by the garbage collector prints and drops it)
    #: would otherwise leave the render unbounded.
    AGAIN = 0.5

    def __init__(self):
        self.lock = threading.Lock()
        self.active: dict[int, list] = {}  # thread id -> [deadline, fired]
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, seconds: float) -> bool:
        """Watch the calling thread for ``seconds``; False when an outer render already watches it."""
        tid = threading.get_ident()
        with self.lock:
            if tid in self.active:
                return False
            self.active[tid] = [time.monotonic() + seconds, False]
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="relmail-render-watchdog", daemon=True)
                self.thread.start()
            if not self.wake.is_set():
                self.wake.set()
        return True

    def stop(self) -> None:
        tid = threading.get_ident()
        with self.lock:
            entry = self.active.pop(tid, None)
            if entry is not None and entry[1]:
                _raise_in(tid, None)  # fired as the render finished: take back a pending interrupt

    def _run(self) -> None:
        while True:
            self.wake.wait()
            time.sleep(self.TICK)
            with self.lock:
                now = time.monotonic()
                for tid, entry in self.active.items():
                    if entry[0] <= now:
                        entry[0], entry[1] = now + self.AGAIN, True
                        _raise_in(tid, RenderTimeout)
                if not self.active:
                    self.wake.clear()


_WATCHDOG = _Watchdog()


def _after_fork() -> None:
    # A forked sender has no watchdog thread: it starts its own on its first render.
    global _WATCHDOG
    _WATCHDOG = _Watchdog()


os.register_at_fork(after_in_child=_after_fork)


def run_bounded(limits: Limits, fn: Callable[..., T], *args, seconds: float | None = None) -> T:
    """``fn(*args)`` on the render clock: past the deadline it raises :class:`LimitExceeded`.

    A function with two nested ``try`` blocks rather than a context manager:
    the interrupt is delivered at any bytecode until :meth:`_Watchdog.stop`
    takes it back, and a context manager's ``__exit__`` would let one that
    lands inside it escape as a bare :class:`RenderTimeout`. Here, wherever
    it lands, the outer ``except`` catches it (it comes again every
    :attr:`_Watchdog.AGAIN` seconds while the render still runs).
    """
    watchdog = _WATCHDOG
    watched = watchdog.start(limits.timeout_seconds if seconds is None else seconds)
    try:
        try:
            return fn(*args)
        finally:
            if watched:
                watchdog.stop()
    except RenderTimeout:
        while watched:
            try:
                watchdog.stop()  # the interrupt may have landed inside stop() itself, or come again meanwhile
                watched = False
            except RenderTimeout:
                continue
        raise LimitExceeded(f"the render took longer than {limits.timeout_seconds:g} s", "timeout_seconds") from None


def collect(chunks: Iterable[str], budget: int, limit: int | None = None) -> str:
    """Join a template's output, stopping once it passes ``budget`` characters (of the e-mail's ``limit``).

    The output is taken in batches of chunks, so a runaway loop is stopped
    after at most one batch more than the limit, and an e-mail's few hundred
    chunks cost one batch.
    """
    chunks = iter(chunks)
    try:
        return _collect(chunks, budget, limit or budget)
    except RenderTimeout:
        if getattr(chunks, "gi_frame", None) is not None:
            chunks.throw(RenderTimeout)  # it landed here, between batches: raise it where the template stands
        raise


def _collect(chunks, budget: int, limit: int) -> str:
    parts: list[str] = []
    total = 0
    while True:
        batch = list(islice(chunks, _BATCH))
        part = "".join(batch)
        total += len(part)
        if total > budget:
            exc = LimitExceeded(f"the e-mail is over {limit:,} bytes", "max_email_bytes")
            if hasattr(chunks, "throw"):
                chunks.throw(exc)  # raised where the template is writing, so its traceback names the line
            raise exc
        if len(batch) < _BATCH:
            return part if not parts else "".join(parts) + part
        parts.append(part)


_BATCH = 1024


def render_bounded(template, variables: dict, limits: Limits, *, seconds: float | None = None, budget: int | None = None) -> str:
    """``template`` rendered for ``variables`` within ``limits``.

    A failure is re-raised with the template's own file and line numbers in
    its traceback (Jinja's rewriting), also when the clock stopped it.
    """

    def render() -> str:
        try:
            return collect(template.root_render_func(template.new_context(variables)), budget or limits.max_email_bytes)
        except (Exception, RenderTimeout):
            template.environment.handle_exception()

    return run_bounded(limits, render, seconds=seconds)


#: Seconds for the second render that only finds the file and line of a first render's failure:
#: a loop that ran out of time is still running a moment into it.
LOCATE_SECONDS = 0.5
