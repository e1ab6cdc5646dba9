"""Stopping a send in an orderly way: the batch in hand is finished and recorded, nothing further leaves.

A signal that interrupts the sending loop at an arbitrary point can land
after a batch's point of no return was recorded and before the provider's
answers were: those e-mails are then settled as delivered (``uncertain``)
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


class StopRequest:
    """Asks a send to stop after recording the batch in hand; calling it says whether it was asked.

    :meth:`set` asks from any thread. :meth:`signal` is for a signal
    handler: the first signal asks for the orderly stop while e-mails are
    being handed over (:meth:`sending`); outside that, or the second time,
    it raises :class:`KeyboardInterrupt` at once.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._sending = False

    def __call__(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()

    def signal(self) -> None:
        """Ask for the orderly stop, or raise KeyboardInterrupt (a second signal, or nothing being sent)."""
        if self._event.is_set() or not self._sending:
            self._event.set()
            raise KeyboardInterrupt
        self._event.set()

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
    Ctrl-C sends SIGINT. Either unwinds at once outside the sending loop
    (planning, rendering a dry run), which also releases the run lock.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        stop.signal()
        announce("Stopping: the e-mails in hand are finished and recorded, nothing further is sent "
                 "(signal again to stop at once).")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
