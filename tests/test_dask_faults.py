"""A Dask cluster that fails under relmail: another relmail on a worker or the scheduler, a scheduler that goes away.

Each failure is one line and an exit code, never a traceback, and never a
plan decided by other rules than the submitting machine's.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
from tests import dask_tasks

from relmail.errors import ClusterError, ConfigError
from relmail.executors import code_fingerprint
from relmail.executors.dask import DaskExecutor

distributed = pytest.importorskip("distributed", reason="the dask extra is part of the test extra")


@pytest.fixture(scope="module")
def cluster():
    with dask_tasks.local_cluster() as (_, client):
        yield client


def test_the_fingerprint_is_the_version_and_the_code():
    version, digest = code_fingerprint().split("+")
    assert version == __import__("relmail").__version__ and len(digest) == 12


def test_a_worker_running_another_relmail_decides_nothing(cluster):
    """Another checkout of the same version decides by other rules without an error: every task compares the code."""
    pool = DaskExecutor(cluster)
    assert pool.map(dask_tasks.sleep, [(0,)]) == [0]
    pool.code = "0.1.0+000000000000"  # the submitter's relmail as a worker with other code sees it
    with pytest.raises(ConfigError, match=r"the Dask worker tcp://\S+ \(host \S+\) runs relmail "
                                          rf"{re.escape(code_fingerprint())}, the submitting machine 0\.1\.0\+000000000000: "
                                          "install the same relmail on every worker") as refused:
        pool.map(dask_tasks.sleep, [(0,), (0,)])
    assert refused.value.exit_code == 3
    outcome, = pool.run(dask_tasks.until_stopped, [()])
    assert isinstance(outcome.error, ConfigError) and "runs relmail" in str(outcome.error)


def test_a_cluster_with_another_relmail_is_refused_when_the_command_connects(cluster):
    pool = DaskExecutor(cluster)
    pool.code = "0.1.0+000000000000"
    with pytest.raises(ConfigError, match=r"the Dask scheduler at tcp://\S+ runs relmail \S+, the submitting machine "
                                          r"0\.1\.0\+000000000000: install the same relmail where the scheduler runs"):
        pool._check_workers()


def test_a_scheduler_refusing_a_task_it_cannot_read_is_one_line(cluster):
    """The scheduler unpickles every task: with an older relmail there, Dask's RuntimeError becomes relmail's."""
    pool = DaskExecutor(cluster)
    graph = RuntimeError("Error during deserialization of the task graph. This frequently\noccurs if ...")
    graph.__cause__ = AttributeError("Can't get attribute 'on_worker' on <module 'relmail.executors.dask'>")
    refused = pool._refused(graph)
    assert isinstance(refused, ConfigError) and "\n" not in str(refused)
    assert str(refused).startswith(f"the Dask scheduler at {pool.address} cannot read relmail's tasks (AttributeError:")
    assert pool._refused(RuntimeError("a bug of the task")) is None


@pytest.mark.parametrize("how", ["imap", "run"])
def test_a_scheduler_that_goes_away_mid_run_ends_the_command_with_exit_18(how):
    """At once, through relmail's own client: not after its 20 s wait for the scheduler to come back."""
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                  worker_dashboard_address=None) as lc:
        pool = DaskExecutor(lc.scheduler_address)
        # A healthy cluster whose task takes its time is no lost one.
        assert [o.value for o in pool.run(dask_tasks.slow, [(3,)])] == [3]
        closed = []
        threading.Timer(2, lambda: (closed.append(time.monotonic()), lc.sync(lc.scheduler.close))).start()
        with pytest.raises(ClusterError, match=rf"lost the Dask scheduler at {lc.scheduler_address} \(its connection was "
                                               r"lost\); a plan wrote nothing and a send's ledger is consistent: start "
                                               "the cluster again") as lost:
            if how == "imap":
                list(pool.imap(dask_tasks.sleep, [(30,)]))
            else:
                pool.run(dask_tasks.until_stopped, [()])
        assert time.monotonic() - closed[0] < 5
        assert lost.value.exit_code == 18 and "\n" not in str(lost.value)
        pool.close()
