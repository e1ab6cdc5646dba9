"""Module-level tasks for the Dask fault tests (pickled by reference: the worker processes import them)."""

from __future__ import annotations

import time


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def until_stopped(channel) -> str:
    deadline = time.monotonic() + 60
    while not channel.stopped() and time.monotonic() < deadline:
        time.sleep(0.1)
    return "stopped"
