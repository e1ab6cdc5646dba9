"""relmail send --executor dask: a real LocalCluster of worker processes sends exactly once.

The cluster (2 worker processes, 1 thread each) is started once for the
module. Dask needs PostgreSQL (a SQLite file is not shared between machines),
so the sending tests skip on SQLite, where the refusal itself is tested.
"""

from __future__ import annotations

import asyncio
import email
import operator
import os
import signal
import threading
import time
from email import policy

import pytest
from sqlalchemy import select
from tests import dask_tasks
from tests.sendkit import AS_OF, RUN, WINDOW, build, ledger_pairs, outbox_pairs, use_smtp
from tests.smtp_server import PASSWORD, Handler, SmtpServer

from relmail.errors import ConfigError
from relmail.executors import get_executor
from relmail.executors.dask import DaskExecutor
from relmail.project import Project
from relmail.sending import ledger
from relmail.sending.run import send
from relmail.store import locks
from relmail.store.models import Decision, Delivery

distributed = pytest.importorskip("distributed", reason="the dask extra is part of the test extra")

def NOW():
    return AS_OF
PG_ONLY = "Dask workers may run on other machines: relmail refuses SQLite with --executor dask (tested separately)"


@pytest.fixture(scope="module")
def cluster():
    with dask_tasks.local_cluster() as pair:
        yield pair


def _postgres_only(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip(PG_ONLY)






def test_dask_is_refused_on_sqlite_before_anything_is_planned(project, db_url, cluster):
    if not db_url.startswith("sqlite"):
        pytest.skip("the refusal concerns SQLite")
    engine = build(project)
    with pytest.raises(ConfigError, match="needs PostgreSQL.*not shared between machines"):
        send(project, engine, "sendtest", WINDOW, now=NOW, executor=DaskExecutor(cluster[1]))
    with engine.connect() as conn:
        assert conn.execute(select(Decision.__table__.c.id)).first() is None, "nothing planned, nothing locked"
    assert locks.held_locks(engine) == []


def test_get_executor_needs_a_scheduler_address_for_dask(monkeypatch):
    monkeypatch.delenv("RELMAIL_DASK_SCHEDULER", raising=False)
    with pytest.raises(ConfigError, match="--scheduler tcp://HOST:8786 or RELMAIL_DASK_SCHEDULER"):
        get_executor("dask")
    with pytest.raises(ConfigError, match="unknown executor 'spark'"):
        get_executor("spark")


def test_map_returns_results_in_order_and_raises_the_first_tasks_own_error(cluster):
    pool = DaskExecutor(cluster[1])
    assert pool.workers == 2
    assert pool.map(operator.mul, [(i, 10) for i in range(7)]) == [0, 10, 20, 30, 40, 50, 60]
    with pytest.raises(ZeroDivisionError):
        pool.map(operator.truediv, [(1, 1), (1, 0), (2, 1)])
    results = pool.imap(operator.truediv, [(1, 1), (4, 2), (1, 0), (2, 1)])
    assert next(results) == 1.0 and next(results) == 2.0
    with pytest.raises(ZeroDivisionError):
        next(results)
    with pytest.raises(ConfigError, match="unknown executor 'nope'"):  # a RelmailError passes through unchanged
        pool.map(get_executor, [("local",), ("nope",)])


def _connect(url: str) -> None:
    from sqlalchemy import create_engine

    create_engine(url, connect_args={"connect_timeout": 2}).connect().close()


def test_a_database_error_on_a_dask_worker_arrives_classified_in_one_line(cluster):
    """The worker classifies the driver's error (which may not unpickle, and holds the SQL): exit 5, no SQL.

    It names the worker: the submitting machine reached the same database a moment before.
    """
    from relmail.errors import DatabaseError

    pool = DaskExecutor(cluster[1])
    with pytest.raises(DatabaseError) as failed:
        pool.map(_connect, [("postgresql+psycopg://postgres@127.0.0.1:1/test",)])
    assert failed.value.exit_code == 5
    assert "cannot reach the database" in str(failed.value) and "\n" not in str(failed.value)
    assert str(failed.value).startswith("on the Dask worker tcp://") and " (host " in str(failed.value)


@pytest.mark.slow
def test_dask_send_equals_the_single_process_send_of_the_same_run(project, db_url, cluster):
    _postgres_only(db_url)
    engine = build(project, customers=300)
    with distributed.get_task_stream(client=cluster[1]) as stream:
        result = send(project, engine, "sendtest", WINDOW, now=NOW, batch_size=10,
                      executor="dask", scheduler=cluster[0].scheduler_address)
    sends, accepted, sent = ledger_pairs(engine)
    senders = [t for t in stream.data if t["key"].startswith("relmail-sender_task-")]
    assert result.workers == 2 and len({t["worker"] for t in senders}) == 2, "both Dask workers sent"
    assert len(sends) > 100
    assert sorted(outbox_pairs(project)) == accepted == sent == sends, "one .eml per send decision, none twice"
    assert result.states == {"accepted": len(sends)} and result.recovered == {"requeued": 0, "answered": 0, "assumed_delivered": 0}
    assert locks.held_locks(engine) == [], "the run lock and every sender's lease are released"
    assert send(project, engine, "sendtest", WINDOW, now=NOW, executor=DaskExecutor(cluster[1])).done == {}

    # The same planned run sent by one process from a fresh ledger: the same e-mails, the same counts.
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM events WHERE type = 'email_sent'")
        conn.exec_driver_sql("DELETE FROM deliveries")
        conn.exec_driver_sql("UPDATE runs SET status = 'planned'")
    for path in (project.root / "outbox").glob("*.eml"):
        path.unlink()
    single = send(project, engine, "sendtest", WINDOW, now=NOW, workers=1, batch_size=10)
    assert single.workers == 1
    assert ledger_pairs(engine)[1] == accepted and sorted(outbox_pairs(project)) == accepted
    assert single.done == result.done and single.states == result.states


@pytest.mark.slow
def test_dask_dry_run_renders_every_email_on_the_workers_and_writes_nothing(project, db_url, cluster):
    _postgres_only(db_url)
    engine = build(project, customers=300)
    expected = send(project, engine, "sendtest", WINDOW, now=NOW, workers=1, dry_run=True, batch_size=20)
    with distributed.get_task_stream(client=cluster[1]) as stream:
        dry = send(project, engine, "sendtest", WINDOW, now=NOW, dry_run=True, batch_size=20, executor=DaskExecutor(cluster[1]))
    assert len([t for t in stream.data if t["key"].startswith("render_task")]) > 2
    assert dry.done == expected.done and dry.done["rendered"] > 100 and dry.render_errors == []
    assert not (project.root / "outbox").exists() or outbox_pairs(project) == []
    with engine.connect() as conn:
        assert conn.execute(select(Decision.__table__.c.id)).first() is None


class HoldingHandler(Handler):
    """Queues each message at the final dot (like a real MTA) and answers after a few milliseconds, but holds
    the answer to message number ``hold_at`` for seconds: its sender is then certainly in the middle of a batch."""

    hold_at = 40

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)
        if len(self.messages) == self.hold_at:  # no other coroutine ran since the append: exactly one sees it
            self.held_peer = session.peer
            self.held.set()
            await asyncio.sleep(5)
        else:
            await asyncio.sleep(0.005)
        return reply


def sender_of(handler, smtp_port: int) -> int:
    """The pid of the process whose SMTP connection is being held."""
    import psutil

    port = handler.held_peer[1]
    return next(c.pid for c in psutil.net_connections(kind="tcp")
                if c.laddr and c.raddr and c.laddr.port == port and c.raddr.port == smtp_port and c.pid)




@pytest.mark.slow
def test_a_dask_worker_killed_mid_send_loses_and_duplicates_nothing(project, db_url, cluster, tmp_path, monkeypatch):
    _postgres_only(db_url)
    client = cluster[1]
    engine = build(project, customers=400)
    monkeypatch.setenv("RELMAIL_SMTP_PASSWORD", PASSWORD)  # read here and shipped with the task: workers have no secrets
    server = SmtpServer(tmp_path, mode="starttls", auth=True)
    server.handler.__class__ = HoldingHandler
    server.handler.held = threading.Event()
    outcome: dict = {}
    with server:
        use_smtp(project, server)
        project = Project.load(project.root)

        def run() -> None:
            try:
                outcome["result"] = send(project, engine, "sendtest", WINDOW, now=NOW, batch_size=7,
                                         executor=DaskExecutor(client))
            except BaseException as exc:  # noqa: BLE001 - re-raised by the test thread below
                outcome["error"] = exc

        sender = threading.Thread(target=run)
        sender.start()
        assert server.handler.held.wait(120), "sending never reached the held message"
        holder = locks.holder_of(engine, RUN)
        victim = sender_of(server.handler, server.port)
        assert victim in client.run(os.getpid).values(), "the held connection belongs to a Dask worker process"
        os.kill(victim, signal.SIGKILL)
        killed_at = len(server.handler.messages)
        sender.join(300)
        assert not sender.is_alive(), "the send did not finish"
        if "error" in outcome:
            raise outcome["error"]
        received = [email.message_from_bytes(m.data, policy=policy.default) for m in server.handler.messages]
        client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker: the next test module is unaffected

    result = outcome["result"]
    assert holder is not None and holder.pid == os.getpid(), "the submitting process holds the run lock"
    assert killed_at < len(received), f"sending went on after the kill: {killed_at}, {len(received)}"
    assert sum(result.recovered.values()) >= 1, f"the killed sender's claims are settled in the same run: {result.summary()}"
    ids = [m["Message-ID"] for m in received]
    assert len(ids) == len(set(ids)), f"an e-mail was received twice: {result.summary()}"
    D, DEC = Delivery.__table__, Decision.__table__
    with engine.connect() as conn:
        planned = conn.execute(select(DEC.c.customer_id).where(DEC.c.run_id == RUN, DEC.c.action == "send")).scalars().all()
        accepted = dict(conn.execute(select(D.c.rfc_message_id, D.c.last_error).where(D.c.status == "accepted")).all())
    assert len(planned) > 150 and result.states == {"accepted": len(planned)} == ledger.status_counts(engine, RUN)
    assert set(ids) <= set(accepted)
    # Every planned e-mail arrived, but for those the killed worker may have marked at its point of no return and
    # not passed: that one is assumed delivered and says so (never twice wins over never lost).
    missing = set(accepted) - set(ids)
    assert all(ledger.UNCERTAIN in (accepted[m] or "") for m in missing) and len(missing) <= 2, result.summary()
    assert locks.held_locks(engine) == [], "the dead sender's lease was settled"


def test_cli_executor_dask_on_sqlite_exits_3_without_contacting_a_scheduler(project, db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("the refusal concerns SQLite")
    from click.testing import CliRunner

    from relmail.cli import cli

    build(project)
    started = time.monotonic()
    out = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW,
                                   "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9"])
    assert out.exit_code == 3 and "needs PostgreSQL" in out.output
    assert time.monotonic() - started < 10, "refused at once, not after a connection timeout"
