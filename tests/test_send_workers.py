"""relmail send --workers: several processes deliver every send decision exactly once."""

from __future__ import annotations

import email

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from tests.sendkit import AS_OF, RUN, WINDOW, build, ledger_pairs, outbox_pairs

from relmail.cli import cli
from relmail.sending import ledger
from relmail.sending.run import send
from relmail.store.models import Decision, Delivery


def NOW():
    return AS_OF






def test_two_workers_deliver_each_decision_once_and_match_a_single_process_run(project, tmp_path):
    engine = build(project)
    result = send(project, engine, "sendtest", WINDOW, now=NOW, workers=2, batch_size=10)
    sends, accepted, sent = ledger_pairs(engine)
    assert len(sends) > 50 and result.workers == 2
    assert sorted(outbox_pairs(project)) == sends, "one .eml per send decision, none twice"
    assert accepted == sends and sent == sends
    assert ledger.status_counts(engine, RUN) == {"accepted": len(sends)}
    assert result.done["accepted"] == result.done["rendered"] == len(sends)
    assert result.states == {"accepted": len(sends)}
    assert send(project, engine, "sendtest", WINDOW, now=NOW, workers=2, batch_size=10).done == {}

    # The same planned run sent again by one process from a fresh ledger: the same e-mails are accepted.
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM events WHERE type = 'email_sent'")
        conn.exec_driver_sql("DELETE FROM deliveries")
        conn.exec_driver_sql("UPDATE runs SET status = 'planned'")
    for path in (project.root / "outbox").glob("*.eml"):
        path.unlink()
    single = send(project, engine, "sendtest", WINDOW, now=NOW, workers=1, batch_size=10)
    assert not single.planned_now and single.workers == 1
    assert ledger_pairs(engine)[1] == accepted
    assert sorted(outbox_pairs(project)) == accepted
    assert single.done == {k: v for k, v in result.done.items()}


def test_limit_is_shared_by_the_workers_and_the_rest_follows_exactly_once(project):
    engine = build(project)
    part = send(project, engine, "sendtest", WINDOW, now=NOW, workers=2, batch_size=4, limit=13)
    assert part.done["accepted"] == 13 == len(outbox_pairs(project))
    rest = send(project, engine, "sendtest", WINDOW, now=NOW, workers=2, batch_size=10)
    sends, accepted, sent = ledger_pairs(engine)
    assert part.done["accepted"] + rest.done["accepted"] == len(sends)
    assert sorted(outbox_pairs(project)) == accepted == sent == sends


def test_cli_workers_option_sends_everything_once(project):
    engine = build(project)
    out = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW,
                                   "--workers", "2", "--batch-size", "15", "--json"])
    assert out.exit_code == 0, out.output
    import json

    summary = json.loads(out.output)
    sends, _, _ = ledger_pairs(engine)
    assert summary["done"]["accepted"] == len(sends) == len(outbox_pairs(project))
    assert summary["states"] == {"accepted": len(sends)} and summary["workers"] == 2
    bad = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW, "--workers", "0"])
    assert bad.exit_code == 2 and "--workers" in bad.output


def test_local_map_keeps_the_order_and_raises_the_first_failing_tasks_own_error():
    import operator

    import pytest

    from relmail.errors import ConfigError
    from relmail.executors import get_executor

    pool = get_executor("local", workers=2)
    assert pool.map(operator.mul, [(i, 3) for i in range(9)]) == [3 * i for i in range(9)]
    with pytest.raises(ConfigError, match="unknown executor 'nope'"):  # a RelmailError passes through unchanged
        pool.map(get_executor, [("local",), ("nope",), ("local",)])
    with pytest.raises(ConfigError, match="--scheduler is only used with --executor dask"):
        get_executor("local", scheduler="tcp://127.0.0.1:8786")
    # imap hands over each result in order before the failing task's error (a plan writes those ranges first).
    results = pool.imap(operator.truediv, [(1, 1), (4, 2), (1, 0), (2, 1)])
    assert next(results) == 1.0 and next(results) == 2.0
    with pytest.raises(ZeroDivisionError):
        next(results)


def test_dry_run_renders_in_partitions_on_the_workers_and_matches_one_process(project):
    engine = build(project)
    one = send(project, engine, "sendtest", WINDOW, now=NOW, workers=1, dry_run=True, batch_size=10)
    two = send(project, engine, "sendtest", WINDOW, now=NOW, workers=2, dry_run=True, batch_size=10)
    assert one.workers == 1 and two.workers == 2
    assert two.done == one.done and one.done["rendered"] > 50 and two.render_errors == one.render_errors == []
    assert not (project.root / "outbox").exists() or outbox_pairs(project) == []
    with engine.connect() as conn:
        assert conn.execute(select(Decision.__table__.c.id)).first() is None, "a dry run writes nothing"


@pytest.mark.slow
def test_a_worker_killed_mid_send_is_settled_and_its_rest_sent_in_the_same_run(project, tmp_path):
    import multiprocessing
    import os
    import signal
    import threading

    from tests.smtp_server import SmtpServer
    from tests.test_dask import HoldingHandler, sender_of

    from relmail.project import Project
    from relmail.store import locks

    engine = build(project, customers=300)
    server = SmtpServer(tmp_path, mode="plain", auth=False)
    server.handler.__class__ = HoldingHandler
    server.handler.held = threading.Event()
    outcome: dict = {}
    with server:
        cfg = server.config(pool_size=1, messages_per_connection=50)
        text = (project.root / "relmail.toml").read_text().replace('adapter = "file"', 'adapter = "smtp"')
        text += "\n[delivery.smtp]\n" + "\n".join(f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}"
                                                for k, v in cfg.items()).replace("'", '"') + "\n"
        (project.root / "relmail.toml").write_text(text)
        smtp_project = Project.load(project.root)

        def run() -> None:
            try:
                outcome["result"] = send(smtp_project, engine, "sendtest", WINDOW, now=NOW, workers=2, batch_size=5)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                outcome["error"] = exc

        sender = threading.Thread(target=run)
        sender.start()
        assert server.handler.held.wait(120), "sending never reached the held message"
        victim = sender_of(server.handler, server.port)
        assert victim in [p.pid for p in multiprocessing.active_children() if p.name.startswith("relmail-task-")]
        os.kill(victim, signal.SIGKILL)
        killed_at = len(server.handler.messages)
        sender.join(300)
        if "error" in outcome:
            raise outcome["error"]
        received = [email.message_from_bytes(m.data)["Message-ID"] for m in server.handler.messages]
    result = outcome["result"]
    sends, accepted, sent = ledger_pairs(engine)
    assert killed_at < len(received), "the run went on after the kill"
    assert sum(result.recovered.values()) >= 1, f"the dead worker's claims are settled in the same run: {result.summary()}"
    assert len(received) == len(set(received)), "an e-mail was received twice"
    assert accepted == sent == sends and result.states == {"accepted": len(sends)}
    D = Delivery.__table__
    with engine.connect() as conn:
        flagged = dict(conn.execute(select(D.c.rfc_message_id, D.c.last_error).where(D.c.status == "accepted")).all())
    missing = set(flagged) - set(received)
    assert all(ledger.UNCERTAIN in (flagged[m] or "") for m in missing) and len(missing) <= 1
    assert locks.held_locks(engine) == []


def test_a_live_senders_lease_blocks_recovery_and_a_dead_ones_is_settled(project):
    import subprocess
    import sys

    import pytest

    from relmail.errors import LockHeld
    from relmail.planning.run import plan
    from relmail.store import locks

    engine = build(project)
    plan(project, engine, "sendtest", WINDOW, now=AS_OF)
    ledger.prepare(engine, RUN, AS_OF)
    claimed = ledger.claim(engine, RUN, AS_OF, 5)  # a sender took a batch ...
    lease = locks.acquire(engine, f"{RUN}#sender:test", heartbeat=False, what="sender lease")  # ... and is alive
    with pytest.raises(LockHeld, match="may still be handing e-mails over"):
        send(project, engine, "sendtest", WINDOW, now=NOW, workers=2, batch_size=10)
    assert ledger.status_counts(engine, RUN)["sending"] == 5, "nothing requeued while its sender may be alive"

    # The sender's process is gone (a pid that has exited): its lease is stale, its batch settled and sent once.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE run_locks SET pid = {int(dead.stdout)}, pid_start = NULL WHERE token = '{lease.token}'")
    result = send(project, engine, "sendtest", WINDOW, now=NOW, workers=2, batch_size=10)
    sends, accepted, sent = ledger_pairs(engine)
    assert result.recovered == {"requeued": 5, "answered": 0, "assumed_delivered": 0}
    assert sorted(outbox_pairs(project)) == accepted == sent == sends
    assert {(c.customer_id, c.message_id) for c in claimed} <= set(accepted)
    assert locks.held_locks(engine) == []
