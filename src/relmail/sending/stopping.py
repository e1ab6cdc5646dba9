"""Stopping a send in an orderly way: the batch in hand is finished and recorded, nothing further leaves.

A signal that interrupts the sending loop at an arbitrary point can land
after an e-mail's point of no return was recorded and before the provider
answered it: those e-mails are then settled as delivered (``uncertain``)
by the next run, whether the provider took them or not. A
:class:`StopRequest` avoids that. The loop looks at it before each batch and
the adapter before each request and each retry: requests in flight get
their answer, queued ones are not made (their e-mails go back to
``planned``), no retry waits, and the batch is recorded before the send
returns with :attr:`~relmail.sending.loop.SendResult.stopped` set.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

#: How each signal is named to the person or the log reading the announcement.
SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


class StopRequest:
    """Asks a send to stop after recording the batch in hand; calling it says whether it was asked.

    :meth:`set` asks from any thread. :meth:`signal` is for a signal
    handler: the first signal asks for the orderly stop while e-mails are
    being handed over (:meth:`sending`); outside that it raises
    :class:`KeyboardInterrupt` at once. During an orderly stop, the *same*
    signal again stops at once (a second Ctrl-C: the person means it); a
    signal of the other kind does not. Supervisors that cancel a job send
    one of each, in a fixed order and a few seconds apart: GitHub Actions
    sends SIGINT, then SIGTERM 7.5 s later, then SIGKILL 2.5 s after that.
    Taking its SIGTERM for "at once" would cut short the requests in flight
    that the SIGINT let finish, and leave those e-mails uncertain; its
    SIGKILL ends the process anyway when it must.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._sending = False
        self._first: int | None = None

    def __call__(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()

    def signal(self, signum: int | None = None) -> bool:
        """Ask for the orderly stop, or raise KeyboardInterrupt to stop at once.

        At once: nothing is being sent, or a stop was asked already and this is the same signal
        again (or a signal not named). Returns True when this asked for the orderly stop, False when
        a stop was under way and ``signum`` is the other signal, which leaves it orderly.
        """
        if not self._event.is_set():
            self._first = signum
            self._event.set()
            if not self._sending:
                raise KeyboardInterrupt
            return True
        if signum is None or self._first is None or signum == self._first:
            raise KeyboardInterrupt
        return False

    @property
    def first_signal(self) -> int | None:
        """The signal that asked for the stop (None: none, or :meth:`set` from a thread)."""
        return self._first

    @contextlib.contextmanager
    def sending(self) -> Iterator[None]:
        """While inside, a first signal stops in order rather than at once."""
        self._sending = True
        try:
            yield
        finally:
            self._sending = False


@contextlib.contextmanager
def on_signals(stop: StopRequest, announce: Callable[[str], None]) -> Iterator[None]:
    """SIGINT and SIGTERM call ``stop.signal()`` while inside (main thread only); ``announce`` says what happens.

    SIGTERM is what ``systemctl stop``, a pod's deadline or ``timeout`` send;
    Ctrl-C sends SIGINT; a CI runner cancelling a job sends SIGINT, then
    SIGTERM. Either unwinds at once outside the sending loop (planning,
    rendering a dry run), which also releases the run lock.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        name = SIGNAL_NAMES.get(signum, f"signal {signum}")
        if stop.signal(signum):
            announce("Stopping: the e-mails in hand are finished and recorded, nothing further is sent "
                     f"({name} again stops at once).")
        else:
            first = SIGNAL_NAMES.get(stop.first_signal, "the first signal")
            announce(f"Still stopping in order: {name} after {first} does not stop at once (a CI runner cancelling "
                     f"a job sends both); {first} again does.")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
