"""Database faults are one line naming the problem and a documented exit code, on every command.

The faults are made from SQL on a database of the test's own (a timeout, a
read-only database, a terminated backend, a connection limit on a role of
its own), never by touching the shared server. ``--verbose`` adds the
driver's message and the statement; without it no SQL and no traceback.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from tests.sendkit import WINDOW, build

from relmail.cli import cli
from relmail.project import init_project
from relmail.store.db import make_engine, upgrade

#: A segment whose query sleeps per customer: slower than the statement timeout set below.
SLOW_SEGMENT = """\
name: everyone
description: Every customer, slowly
sql: SELECT id AS customer_id FROM customers WHERE pg_sleep(0.02) IS NOT NULL
"""
#: A segment whose query ends its own database connection, as pg_terminate_backend from another session would.
TERMINATING_SEGMENT = """\
name: everyone
description: Every customer, on a connection that is terminated
sql: SELECT id AS customer_id FROM customers WHERE pg_terminate_backend(pg_backend_pid())
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def own_url(request, tmp_path):
    """An upgraded database of this test alone (its settings may be changed), on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'own.db'}"
    else:
        url = request.getfixturevalue("pg_databases").create()
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def shop(tmp_path, own_url, monkeypatch):
    """A project on ``own_url`` with the demo store and the send-test campaign."""
    monkeypatch.setenv("RELMAIL_DATABASE_URL", own_url)
    monkeypatch.setenv("RELMAIL_SIGNING_KEY", "test-signing-key-not-secret")
    project = init_project(tmp_path / "shop")
    engine = build(project)
    engine.dispose()
    yield project


def pg_only(url: str) -> None:
    if not url.startswith("postgresql"):
        pytest.skip("a PostgreSQL server setting")


def alter_database(url: str, setting: str) -> None:
    """``ALTER DATABASE <the test's own database> SET ...``: new connections get it, the server is untouched."""
    name = url.rsplit("/", 1)[1]
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" SET {setting}'))
    admin.dispose()


def read_only(url: str, monkeypatch) -> None:
    """Make the project's database refuse writes: a read-only PostgreSQL database, SQLite connections ``query_only``."""
    if url.startswith("postgresql"):
        alter_database(url, "default_transaction_read_only = on")
        return
    from relmail.store import db

    pragmas = db._sqlite_pragmas

    def query_only(dbapi_conn, record) -> None:
        pragmas(dbapi_conn, record)
        dbapi_conn.execute("PRAGMA query_only = ON")

    monkeypatch.setattr(db, "_sqlite_pragmas", query_only)


def invoke(project, *args):
    return CliRunner().invoke(cli, ["-p", str(project.root), *args])


def assert_one_line(result, code: int) -> str:
    """Exit ``code``, and stderr is exactly one ``Error:`` line with no SQL and no traceback in it."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output and "[SQL:" not in result.output and "sqlalche.me" not in result.output
    return lines[0]


def test_a_statement_timeout_while_planning_is_exit_13_and_not_blamed_on_the_segment_file(shop, own_url):
    pg_only(own_url)
    (shop.root / "segments" / "everyone.yml").write_text(SLOW_SEGMENT)
    alter_database(own_url, "statement_timeout = '300ms'")
    line = assert_one_line(invoke(shop, "plan", "sendtest", "--window", WINDOW), 13)
    assert "statement_timeout" in line
    assert "segment" not in line and "everyone.yml" not in line


def test_verbose_adds_the_databases_own_message_and_the_statement(shop, own_url):
    pg_only(own_url)
    (shop.root / "segments" / "everyone.yml").write_text(SLOW_SEGMENT)
    alter_database(own_url, "statement_timeout = '300ms'")
    result = CliRunner().invoke(cli, ["-p", str(shop.root), "--verbose", "plan", "sendtest", "--window", WINDOW])
    assert result.exit_code == 13
    assert result.stderr.startswith("Error: ")
    assert "canceling statement due to statement timeout" in result.stderr and "pg_sleep" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_broken_segment_query_is_still_the_segment_files_error(shop):
    (shop.root / "segments" / "everyone.yml").write_text("name: everyone\nsql: SELECT nope FROM nowhere\n")
    line = assert_one_line(invoke(shop, "plan", "sendtest", "--window", WINDOW), 4)
    assert "segment query failed" in line and "everyone.yml" in line


def test_a_lock_timeout_while_another_session_holds_the_ledger_is_exit_13(shop, own_url):
    pg_only(own_url)
    alter_database(own_url, "lock_timeout = '200ms'")
    other = create_engine(own_url)
    holder = other.connect()
    try:
        holder.execute(text("LOCK TABLE decisions IN ACCESS EXCLUSIVE MODE"))  # held until the rollback below
        line = assert_one_line(invoke(shop, "plan", "sendtest", "--window", WINDOW), 13)
        assert "lock_timeout" in line
    finally:
        holder.rollback()
        holder.close()
        other.dispose()


def test_a_terminated_backend_while_planning_is_exit_5(shop, own_url):
    pg_only(own_url)
    (shop.root / "segments" / "everyone.yml").write_text(TERMINATING_SEGMENT)
    line = assert_one_line(invoke(shop, "plan", "sendtest", "--window", WINDOW), 5)
    assert "terminated" in line and "segment" not in line


@pytest.mark.parametrize("command", ["import", "plan", "send"])
def test_a_read_only_database_is_one_line_and_exit_13(shop, own_url, monkeypatch, tmp_path, command):
    if command == "send":
        assert invoke(shop, "plan", "sendtest", "--window", WINDOW).exit_code == 0
        args = ["send", "sendtest", "--window", WINDOW, "--workers", "1"]
    elif command == "plan":
        args = ["plan", "sendtest", "--window", WINDOW]
    else:
        csv = tmp_path / "more.csv"
        csv.write_text("id,email,created_at\nX1,x1@example.com,2024-01-01T00:00:00Z\n")
        args = ["import", "customers", str(csv)]
    read_only(own_url, monkeypatch)
    line = assert_one_line(invoke(shop, *args), 13)
    assert "read-only" in line or "accepts no writes" in line


def test_a_terminated_sender_process_connection_comes_back_as_one_line_exit_5(shop, own_url):
    """A worker's database error reaches the command as the same one-line error, not a traceback."""
    pg_only(own_url)
    assert invoke(shop, "plan", "sendtest", "--window", WINDOW).exit_code == 0
    # Every claim by a sender ends its own connection, as an operator's pg_terminate_backend would.
    admin = create_engine(own_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("""
            CREATE FUNCTION end_claimer() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.status = 'sending' THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER end_claimer BEFORE UPDATE ON deliveries FOR EACH ROW EXECUTE FUNCTION end_claimer();
        """))
    admin.dispose()
    result = invoke(shop, "send", "sendtest", "--window", WINDOW, "--workers", "2", "--batch-size", "10")
    line = assert_one_line(result, 5)
    assert "connection" in line


def test_a_connection_limit_is_named_and_exit_5(shop, own_url, monkeypatch, limited_role):
    pg_only(own_url)
    monkeypatch.setenv("RELMAIL_DATABASE_URL", limited_role(own_url, 1))
    line = assert_one_line(invoke(shop, "plan", "sendtest", "--window", WINDOW), 5)
    assert "too many connections" in line


def test_an_unreachable_database_is_exit_5_in_one_line(shop, monkeypatch):
    monkeypatch.setenv("RELMAIL_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:9/nowhere")
    line = assert_one_line(invoke(shop, "plan", "sendtest", "--window", WINDOW), 5)
    assert "cannot reach the database" in line


def test_the_real_command_prints_one_line_and_no_traceback(shop, own_url):
    """The same through a real process: what a scheduler's log shows."""
    pg_only(own_url)
    (shop.root / "segments" / "everyone.yml").write_text(SLOW_SEGMENT)
    alter_database(own_url, "statement_timeout = '300ms'")
    env = {**os.environ, "RELMAIL_DATABASE_URL": own_url, "RELMAIL_SIGNING_KEY": "test-signing-key-not-secret"}
    relmail = Path(sys.executable).with_name("relmail")
    proc = subprocess.run([str(relmail), "-p", str(shop.root), "plan", "sendtest", "--window", WINDOW],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 13, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("Error: ") and "Traceback" not in proc.stderr


def test_sqlites_database_is_locked_is_unavailable_and_a_syntax_error_is_no_fault(tmp_path):
    from relmail.errors import DatabaseError, DatabaseUnavailable
    from relmail.store.faults import as_relmail_error, database_fault

    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (a)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as locked:
        other.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.OperationalError) as syntax:
        other.execute("SELEC 1")
    holder.close()
    other.close()
    fault = database_fault(locked.value)
    assert type(fault) is DatabaseUnavailable and fault.exit_code == 13 and "locked" in str(fault)
    assert database_fault(syntax.value) is None
    generic = as_relmail_error(syntax.value)
    assert type(generic) is DatabaseError and generic.exit_code == 5 and "syntax error" in generic.detail
    assert as_relmail_error(ValueError("not a database error")) is None


def test_python_callers_catch_relmails_database_errors_too(shop, own_url, monkeypatch):
    """``relmail.plan()`` raises the same classified error the command prints, with the driver's error as its cause."""
    import relmail

    read_only(own_url, monkeypatch)
    engine = make_engine(shop.database_url if own_url.startswith("postgresql") else own_url)
    try:
        with pytest.raises(relmail.DatabaseError) as raised:
            relmail.plan(shop, engine, "sendtest", WINDOW)
    finally:
        engine.dispose()
    assert raised.value.exit_code == 13 and raised.value.__cause__ is not None


def test_a_cancelled_statement_is_not_called_a_timeout(own_url):
    """pg_cancel_backend shares the timeout's SQLSTATE; the line says which it was."""
    pg_only(own_url)
    import threading
    import time

    from relmail.errors import DatabaseUnavailable
    from relmail.store.faults import database_fault

    engine = create_engine(own_url)
    with engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()

        def cancel() -> None:
            time.sleep(0.5)
            with engine.connect() as other:
                other.exec_driver_sql(f"SELECT pg_cancel_backend({pid})")

        canceller = threading.Thread(target=cancel)
        canceller.start()
        with pytest.raises(OperationalError) as raised:
            conn.exec_driver_sql("SELECT pg_sleep(30)")
        canceller.join()
    engine.dispose()
    fault = database_fault(raised.value)
    assert type(fault) is DatabaseUnavailable and "pg_cancel_backend" in str(fault)
    assert "statement_timeout" not in str(fault)


@pytest.fixture
def ci_role(own_url):
    """``own_url`` as a new role with the grants the CI page gives its dry runs (SELECT only); dropped after."""
    pg_only(own_url)
    role = f"relmail_ci_{os.urandom(4).hex()}"
    admin = create_engine(own_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text(f'GRANT CONNECT ON DATABASE "{own_url.rsplit("/", 1)[1]}" TO "{role}"'))
        conn.execute(text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
        conn.execute(text(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"'))
    yield own_url.replace("://postgres@", f"://{role}@")
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"), {"r": role})
        conn.execute(text(f'DROP OWNED BY "{role}"'))
        conn.execute(text(f'DROP ROLE "{role}"'))
    admin.dispose()


def test_a_read_only_role_dry_runs_and_a_write_it_may_not_do_names_the_missing_privilege(shop, ci_role, monkeypatch):
    """The CI role plans --dry-run; asked to write (a plan that records its run), the one line says which
    privilege the role lacks and what to do, instead of the server's bare 'permission denied'."""
    monkeypatch.setenv("RELMAIL_DATABASE_URL", ci_role)
    assert invoke(shop, "plan", "sendtest", "--window", WINDOW, "--dry-run").exit_code == 0
    line = assert_one_line(invoke(shop, "plan", "sendtest", "--window", WINDOW), 5)
    assert "role lacks a privilege (permission denied for table " in line and "grant" in line


def test_a_full_disk_under_sqlite_says_so_and_what_to_do(tmp_path):
    """SQLite's "database or disk is full" (here a page limit: the same SQLITE_FULL), and the bare "disk I/O
    error" SQLite gives when a full disk stops it growing the -shm file of a WAL database, even for a read."""
    from relmail.store.faults import database_fault

    conn = sqlite3.connect(tmp_path / "full.db", isolation_level=None)
    conn.execute("CREATE TABLE t (a)")
    conn.execute("PRAGMA max_page_count = 3")
    with pytest.raises(sqlite3.OperationalError) as full:
        conn.execute("INSERT INTO t VALUES (zeroblob(100000))")
    conn.close()
    shm = sqlite3.OperationalError("disk I/O error")
    shm.sqlite_errorname = "SQLITE_IOERR_SHMSIZE"  # what the sqlite3 module sets from the extended result code
    for error in (full.value, shm):
        fault = database_fault(error)
        assert fault.exit_code == 5 and "disk is full" in str(fault) and "free space" in str(fault), str(fault)
    other = sqlite3.OperationalError("disk I/O error")
    other.sqlite_errorname = "SQLITE_IOERR_WRITE"
    assert "check the disk" in str(database_fault(other))


def test_verbose_leaves_out_the_values_a_failed_statement_carried(shop, own_url):
    """An erasure stopped by a lock: --verbose shows the statement, never the address it was looking for."""
    pg_only(own_url)
    alter_database(own_url, "lock_timeout = '200ms'")
    other = create_engine(own_url)
    with other.connect() as conn:
        customer, email = conn.execute(text("SELECT id, email FROM customers ORDER BY id LIMIT 1")).one()
    holder = other.connect()
    try:
        holder.execute(text("LOCK TABLE feedback_rejects IN EXCLUSIVE MODE"))  # held until the rollback below
        result = CliRunner().invoke(cli, ["-p", str(shop.root), "--verbose", "customers", "forget", customer, "--yes"])
    finally:
        holder.rollback()
        holder.close()
        other.dispose()
    assert result.exit_code == 13 and "DELETE FROM feedback_rejects" in result.stderr, result.stderr
    assert email.lower() not in result.output.lower() and email.lower() not in result.stderr.lower()
