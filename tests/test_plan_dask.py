"""relmail plan --executor dask: the customer ranges decided on a real LocalCluster equal a one-process plan."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from tests import dask_tasks
from tests.test_plan_partitions import AS_OF, WINDOW, _rows

import relmail.planning.run as plan_module
from relmail.planning.run import plan
from relmail.store.models import Decision

distributed = pytest.importorskip("distributed", reason="the dask extra is part of the test extra")


@pytest.fixture(scope="module")
def cluster():
    with dask_tasks.local_cluster() as (_, client):
        yield client


@pytest.fixture
def demo_shop(project, engine, db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("Dask workers may run on other machines: plan refuses SQLite with --executor dask "
                    "(tested in test_plan_partitions.py)")
    from relmail.demo import generate

    generate(engine, customers=1200, seed=7, as_of=AS_OF)
    return project


@pytest.mark.slow
def test_a_plan_on_a_dask_cluster_decides_and_writes_what_one_process_does(demo_shop, engine, cluster, monkeypatch):
    from relmail.executors.dask import DaskExecutor

    single = plan(demo_shop, engine, "weekly", WINDOW, as_of=AS_OF, dry_run=True, workers=1)
    monkeypatch.setattr(plan_module, "MIN_PARTITION", 100)
    on_dask = plan(demo_shop, engine, "weekly", WINDOW, as_of=AS_OF, executor=DaskExecutor(cluster))
    assert on_dask.partitions == 2  # one range per worker thread of the cluster
    assert _rows(on_dask) == _rows(single)
    assert [m.__dict__ for m in on_dask.messages] == [m.__dict__ for m in single.messages]
    with engine.connect() as conn:
        written = conn.execute(select(func.count()).select_from(Decision.__table__)
                               .where(Decision.__table__.c.run_id == on_dask.run_id)).scalar_one()
    assert written == len(single.decisions)
