"""Never twice, also when the database misbehaves (issue 22).

* A point-of-no-return mark that fails (a lock held past the timeout, a busy
  SQLite file) withholds the e-mail: no final dot, no ESP request; it goes
  back to ``planned`` without counting an attempt and is sent once the
  database answers again.
* PostgreSQL, short ``lock_timeout``, the deliveries table locked, the
  sender killed while it waits, re-run: no e-mail arrives twice.
* Terminated backends are replaced; a database that stays unreachable
  stops the send with exit 5 within a bound.
* A send that cannot get its connections is refused before anything is sent.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import responses
from click.testing import CliRunner
from sqlalchemy import create_engine, select, text
from tests.faultkit import OwnDatabase, faulty, message_ids, project_on, tally, use_plain_smtp
from tests.sendkit import RUN, WINDOW, build
from tests.smtp_server import SmtpServer

from relmail.cli import cli
from relmail.delivery import get_adapter
from relmail.sending import connections, ledger, reconnect
from relmail.sending.marker import Marker
from relmail.sending.run import send
from relmail.store import locks
from relmail.store.models import Delivery

D = Delivery.__table__


@pytest.fixture
def own_db(request):
    db = OwnDatabase(request.getfixturevalue("pg_databases"))
    yield db
    db.close()


@pytest.fixture
def quick_retries(monkeypatch):
    """Marks fail after 0.3 s and the loop retries the database at short intervals."""
    monkeypatch.setattr(Marker, "timeout", 0.3)
    monkeypatch.setattr(reconnect, "DELAYS", (0.1, 0.2, 0.4, 0.8))


class Holder:
    """Blocks the marks of the first claimed batch: the claimed rows locked (PostgreSQL) or the file's
    write lock taken (SQLite), from a thread, for ``seconds``."""

    def __init__(self, url: str, seconds: float):
        self.url, self.seconds = url, seconds
        self.locked, self.released_at = threading.Event(), None
        self.thread: threading.Thread | None = None

    def hold(self, ids: list[int]) -> None:
        self.thread = threading.Thread(target=self._run, args=(ids,), daemon=True)
        self.thread.start()
        assert self.locked.wait(10)

    def _run(self, ids: list[int]) -> None:
        if self.url.startswith("sqlite"):
            conn = sqlite3.connect(self.url.split("///", 1)[1], isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            self.locked.set()
            time.sleep(self.seconds)
            self.released_at = time.monotonic()
            conn.execute("COMMIT")
            conn.close()
            return
        engine = create_engine(self.url)
        with engine.connect() as conn:
            conn.execute(text("SELECT id FROM deliveries WHERE id = ANY(:ids) FOR UPDATE"), {"ids": ids})
            self.locked.set()
            time.sleep(self.seconds)
            self.released_at = time.monotonic()
            conn.rollback()
        engine.dispose()


def block_first_batch(monkeypatch, url: str, seconds: float = 1.5) -> Holder:
    holder = Holder(url, seconds)
    claim = ledger.claim

    def claim_then_lock(*args, **kw):
        claims = claim(*args, **kw)
        if claims and holder.thread is None:
            holder.hold([c.delivery_id for c in claims])
        return claims

    monkeypatch.setattr(ledger, "claim", claim_then_lock)
    return holder


def attempts(engine) -> Counter:
    with engine.connect() as conn:
        return Counter(conn.execute(select(D.c.attempts).where(D.c.run_id == RUN)).scalars())


def test_a_failed_mark_withholds_the_smtp_email_until_the_database_answers(project, tmp_path, monkeypatch, quick_retries):
    engine = build(project, customers=60)
    server = SmtpServer(tmp_path, mode="plain", auth=False)
    block_first_batch(monkeypatch, project.database_url)
    with server:
        project = use_plain_smtp(project, server)
        result = send(project, engine, "sendtest", WINDOW, workers=1, batch_size=10)
    received = message_ids(server.handler)
    t = tally(engine, RUN, received)
    assert result.done["withheld"] >= 1, "the blocked mark must have withheld e-mails"
    assert t.twice == 0 and t.lost == 0 and t.uncertain == 0 and t.once == t.sends > 20
    assert result.states == {"accepted": t.sends}
    assert attempts(engine) == {1: t.sends}, "a withheld e-mail's attempt is taken back"


@responses.activate
def test_a_failed_mark_makes_no_esp_request_until_the_database_answers(project, monkeypatch, quick_retries):
    engine = build(project, customers=60)
    url = "https://api.postmarkapp.com/email/batch"
    calls: list[tuple[float, list[str]]] = []

    def ok(request):
        items = json.loads(request.body)
        calls.append((time.monotonic(), [i["Metadata"]["relmail_customer"] for i in items]))
        return 200, {}, json.dumps([{"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{n}", "To": i["To"]}
                                    for n, i in enumerate(items)])

    responses.add_callback(responses.POST, url, callback=ok)
    holder = block_first_batch(monkeypatch, project.database_url)
    adapter = get_adapter("postmark", {}, {"esp_api_key": "pm-token"})
    result = send(project, engine, "sendtest", WINDOW, adapter=adapter, batch_size=10)
    customers = [c for _, batch in calls for c in batch]
    assert result.done["withheld"] >= 1
    assert calls and all(at > holder.released_at for at, _ in calls), "no request while the mark could not be recorded"
    assert len(customers) == len(set(customers)) == result.states["accepted"] > 20
    assert attempts(engine) == {1: len(customers)}


def _send_command(project) -> list[str]:
    return [sys.executable, "-c", "from relmail.cli import main; main()", "-p", str(project.root),
            "send", "sendtest", "--window", WINDOW, "--batch-size", "10", "--workers", "1"]


@pytest.mark.slow
def test_postgresql_lock_timeout_and_a_kill_while_waiting_send_nothing_twice(own_db, tmp_path, monkeypatch):
    """Issue 22, finding 1: marks time out on a locked table, the sender is killed, the re-run sends each e-mail once."""
    project, engine = project_on(tmp_path, monkeypatch, own_db.url, customers=150)
    server = SmtpServer(tmp_path, mode="plain", auth=False)
    handler = faulty(server, delay=0.01)
    own_db.alter("SET lock_timeout = '200ms'")
    locked = threading.Event()

    def lock_table() -> None:
        other = create_engine(own_db.url)
        with other.connect() as conn, conn.begin():
            conn.execute(text("SET LOCAL lock_timeout = 0"))
            conn.execute(text("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            time.sleep(3)
        other.dispose()

    with server:
        use_plain_smtp(project, server)
        proc = subprocess.Popen(_send_command(project), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(handler.messages) < 20 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, proc.communicate()[1].decode()
        locker = threading.Thread(target=lock_table)
        locker.start()
        assert locked.wait(10)
        time.sleep(1.0)  # marks time out meanwhile; the sender waits for the database
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        locker.join()
        rerun = subprocess.run(_send_command(project), capture_output=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr.decode()
    t = tally(engine, RUN, message_ids(handler))
    assert t.twice == 0, f"{t.twice} e-mails arrived twice"
    assert t.lost == 0 and t.once + t.uncertain - t.uncertain_received == t.sends > 50
    assert ledger.status_counts(engine, RUN) == {"accepted": t.sends}


def test_terminated_backends_are_replaced_and_every_email_is_sent_once(own_db, tmp_path, monkeypatch, quick_retries):
    """Issue 22, finding 2: after pg_terminate_backend the marks reconnect instead of deferring the rest."""
    project, engine = project_on(tmp_path, monkeypatch, own_db.url, customers=120)
    server = SmtpServer(tmp_path, mode="plain", auth=False)
    terminated = []
    handler = faulty(server, on_data=lambda n: terminated.append(own_db.terminate()) if n in (15, 40) else None)
    with server:
        project = use_plain_smtp(project, server)
        result = send(project, engine, "sendtest", WINDOW, workers=1, batch_size=10)
    t = tally(engine, RUN, message_ids(handler))
    assert sum(terminated) >= 2, "the test must terminate the sender's backends"
    assert result.states == {"accepted": t.sends}, "no e-mail deferred because a connection had died"
    assert t.twice == 0 and t.lost == 0 and t.once + t.uncertain == t.sends > 50


def test_an_unreachable_database_stops_the_send_within_the_bound_with_exit_5(own_db, tmp_path, monkeypatch, quick_retries):
    """Issue 22, finding 2: never exit 0 with deferred e-mails, never crawling; the re-run finishes the job."""
    project, engine = project_on(tmp_path, monkeypatch, own_db.url, customers=120)
    server = SmtpServer(tmp_path, mode="plain", auth=False)
    cut = threading.Event()

    def cut_off(n: int) -> None:
        if n == 15:
            own_db.alter("ALLOW_CONNECTIONS false")
            own_db.terminate()
            cut.set()

    handler = faulty(server, on_data=cut_off)
    engine.dispose()
    with server:
        use_plain_smtp(project, server)
        started = time.monotonic()
        out = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW,
                                       "--batch-size", "10", "--workers", "1"])
        elapsed = time.monotonic() - started
        assert cut.is_set()
        assert out.exit_code == 5, out.output
        last = out.output.strip().splitlines()[-1]
        assert last.startswith("Error: ") and last.endswith("the ledger is consistent; re-run to resume"), out.output
        assert elapsed < 30, f"took {elapsed:.0f} s to give up"
        own_db.alter("ALLOW_CONNECTIONS true")
        # The run lock could not be deleted while the database was away; a real
        # 'relmail send' has exited by now and its lock is taken over as stale,
        # but this test's process, its holder, is still alive.
        locks.force_release(engine, RUN)
        again = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW,
                                         "--batch-size", "10", "--workers", "1"])
        assert again.exit_code == 0, again.output
    t = tally(engine, RUN, message_ids(handler))
    assert t.twice == 0 and t.lost == 0 and t.once + t.uncertain - t.uncertain_received == t.sends
    assert ledger.status_counts(engine, RUN) == {"accepted": t.sends}


def test_a_send_the_connection_limit_cannot_carry_is_refused_before_anything_is_sent(own_db, tmp_path, monkeypatch):
    """Issue 22, finding 5: needs 2 + SMTP pool size connections with one process; the role allows 3."""
    project, engine = project_on(tmp_path, monkeypatch, own_db.url, customers=40)
    engine.dispose()
    url = own_db.role(connection_limit=3)  # the shop is loaded; the send runs as the limited role
    monkeypatch.setenv("RELMAIL_DATABASE_URL", url)
    server = SmtpServer(tmp_path, mode="plain", auth=False)
    with server:
        use_plain_smtp(project, server)  # pool_size 2
        out = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW, "--workers", "1"])
        assert out.exit_code == 5, out.output
        assert ("this send needs 4 database connections (1 process, 2 mark connection(s) each) and the server has 3 free "
            "(the role's CONNECTION LIMIT 3 - 0 open elsewhere); lower --workers or [delivery.smtp] pool_size") in out.output
        assert server.handler.messages == []
        own_db.sql(f'ALTER ROLE "{url.split("://")[1].split("@")[0]}" CONNECTION LIMIT 4')
        ok = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW, "--workers", "1"])
    assert ok.exit_code == 0, ok.output


def test_a_send_stays_within_its_connection_budget(own_db, tmp_path, monkeypatch):
    """2 + workers x (2 + pool size) at most: measured in pg_stat_activity while two workers send over SMTP."""
    project, engine = project_on(tmp_path, monkeypatch, own_db.url, customers=200)
    engine.dispose()
    server = SmtpServer(tmp_path, mode="plain", auth=False)
    faulty(server, delay=0.005)
    peak, done = [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], own_db.connections())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    with server:
        use_plain_smtp(project, server)  # pool_size 2
        watcher.start()
        out = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW,
                                       "--workers", "2", "--batch-size", "20", "--json"])
        done.set()
        watcher.join()
    assert out.exit_code == 0, out.output
    workers = json.loads(out.output)["workers"]
    assert workers == 2
    print(f"connections: peak {peak[0]} measured, budget {connections.needed(workers, 2)} for 2 workers x SMTP pool 2")
    assert workers * (1 + 2) <= peak[0] <= connections.needed(workers, 2)


def test_smtp_with_the_default_pool_needs_six_connections_per_process():
    adapter = get_adapter("smtp", {"host": "127.0.0.1", "security": "none"}, {})
    assert adapter.mark_threads() == 4 and connections.needed(1, adapter.mark_threads()) == 6
    assert connections.needed(3, 4) == 2 + 3 * 6
    assert get_adapter("file", {"outbox": "out"}, {}).mark_threads() == 0
    # an ESP marks each request from the thread that makes it
    assert get_adapter("postmark", {"concurrency": 3}, {"esp_api_key": "pm-token"}).mark_threads() == 3


def test_only_postgresql_has_a_connection_budget(engine):
    budget = connections.budget(engine)
    assert budget is None if engine.dialect.name == "sqlite" else budget.available > 0


def _locked_write(engine):
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))


def test_retries_spent_on_a_busy_database_stop_with_exit_13_and_on_an_unreachable_one_with_exit_5(tmp_path):
    """A scheduler retries exit 13 later and alerts on exit 5: the last error decides which a spent retry is."""
    from relmail.errors import DatabaseError, DatabaseUnavailable

    path = tmp_path / "busy.db"
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        retry = reconnect.DatabaseRetry(engine, sleep=lambda s: None, delays=(0.0, 0.0))
        with pytest.raises(DatabaseUnavailable) as busy:
            retry.run("claiming a batch", lambda: _locked_write(engine))
        assert busy.value.exit_code == 13
        assert "would not do the work while claiming a batch (database is locked); gave up after 3 attempts" in str(busy.value)
        assert str(busy.value).endswith("the ledger is consistent; re-run to resume")
        # A failed mark reports a sentence; the database error behind it decides the exit code.
        try:
            _locked_write(engine)
        except Exception as exc:  # noqa: BLE001 - the real driver error of a locked file
            cause = exc
        marks = reconnect.DatabaseRetry(engine, sleep=lambda s: None, delays=())
        with pytest.raises(DatabaseUnavailable):
            marks.failed("recording the point of no return", "the point-of-no-return mark failed: database is locked", cause)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    gone = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/test", connect_args={"connect_timeout": 2})
    retry = reconnect.DatabaseRetry(gone, sleep=lambda s: None, delays=(0.0,))
    with pytest.raises(DatabaseError) as down:
        retry.run("claiming a batch", lambda: gone.connect().close())
    assert type(down.value) is DatabaseError and down.value.exit_code == 5
    assert "stopped answering while claiming a batch" in str(down.value)
