"""A plan's local worker processes give way to the planning process, which writes the ledger as ranges arrive."""

from __future__ import annotations

import os

import pytest

from relmail.executors import get_executor
from relmail.planning import run


def _niceness() -> int:
    return os.nice(0)


@pytest.mark.skipif(not hasattr(os, "nice"), reason="process priorities are a Unix notion")
def test_the_plans_local_workers_run_below_the_planning_process(engine):
    mine = os.nice(0)
    pool = run._executor(engine, "local", 2, None)
    assert run.WORKER_NICENESS > 0
    # Capped at 19, the lowest priority there is.
    assert list(pool.imap(_niceness, [(), ()])) == [min(mine + run.WORKER_NICENESS, 19)] * 2
    assert os.nice(0) == mine  # the planning process itself keeps its priority


@pytest.mark.skipif(not hasattr(os, "nice"), reason="process priorities are a Unix notion")
def test_other_local_work_keeps_the_submitters_priority():
    mine = os.nice(0)
    assert list(get_executor("local", workers=2).imap(_niceness, [(), ()])) == [mine] * 2
