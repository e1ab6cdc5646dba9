"""The Dask tests' cluster, and module-level tasks for the fault tests (pickled by reference: the worker processes import them)."""

from __future__ import annotations

import contextlib
import time


@contextlib.contextmanager
def local_cluster(workers: int = 2):
    """``(cluster, client)``: worker processes on this machine, one thread each, no dashboards to bind ports."""
    import distributed

    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                  worker_dashboard_address=None) as lc, distributed.Client(lc) as client:
        yield lc, client


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def slow(seconds: float, channel) -> float:
    """A task of ``run`` (which passes a channel) that takes ``seconds``."""
    time.sleep(seconds)
    return seconds


def until_stopped(channel) -> str:
    deadline = time.monotonic() + 60
    while not channel.stopped() and time.monotonic() < deadline:
        time.sleep(0.1)
    return "stopped"
