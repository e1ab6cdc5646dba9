"""The schema is versioned: created and upgraded by a command, checked on use."""

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select, text

from relmail.errors import DatabaseError
from relmail.store.db import connect, current_revision, head_revision, make_engine, redact, upgrade
from relmail.store.models import Customer


def test_connect_refuses_a_database_without_schema(empty_db_url):
    with pytest.raises(DatabaseError, match="relmail db upgrade"):
        connect(empty_db_url)


def test_upgrade_creates_the_head_schema_once(empty_db_url):
    engine = make_engine(empty_db_url)
    assert upgrade(engine) == (None, head_revision())
    assert upgrade(engine) == (head_revision(), head_revision())
    checked = connect(empty_db_url)
    assert current_revision(checked) == head_revision()
    checked.dispose()
    engine.dispose()


def test_times_come_back_in_utc_whatever_offset_went_in(engine):
    amsterdam = timezone(timedelta(hours=1))
    stored = datetime(2026, 11, 23, 9, 30, tzinfo=amsterdam)
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__).values(id="C1", email="a@example.com", created_at=stored, attributes={}))
        got = conn.execute(select(Customer.__table__.c.created_at)).scalar_one()
    assert got == stored
    assert got.utcoffset() == timedelta(0)
    assert got.hour == 8


def test_naive_times_are_refused(engine):
    with pytest.raises(Exception, match="naive datetime"), engine.begin() as conn:
        conn.execute(insert(Customer.__table__).values(id="C1", email="a@example.com", created_at=datetime(2026, 1, 1), attributes={}))


def test_redact_hides_the_password_only():
    assert redact("postgresql://bob:s3cret@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert redact("sqlite:///relmail.db") == "sqlite:///relmail.db"


@pytest.mark.parametrize("url, shown", [
    ("postgresql+psycopg://bob@db:5432/x?password=s3cret", "postgresql+psycopg://bob@db:5432/x?password=***"),
    ("postgresql+psycopg:///x?host=db&password=s3cret&user=bob", "postgresql+psycopg:///x?host=db&password=***&user=bob"),
    ("postgresql://bob:s3cret@db/x?sslmode=require&sslpassword=s3cret", "postgresql://bob:***@db/x?sslmode=require&sslpassword=***"),
    ("postgresql://bob@db/x?passfile=/home/bob/.pgpass", "postgresql://bob@db/x?passfile=/home/bob/.pgpass"),
])
def test_redact_hides_a_password_given_in_the_query_too(url, shown):
    assert redact(url) == shown


def test_no_command_prints_a_password_given_in_the_database_urls_query(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from relmail.cli import cli
    from relmail.project import init_project

    root = init_project(tmp_path / "shop").root
    # A server that does not answer: the error names the database, which must not show the password.
    monkeypatch.setenv("RELMAIL_DATABASE_URL", "postgresql+psycopg://bob@127.0.0.1:9/x?password=s3cret-pw&connect_timeout=1")
    for args in (["db", "upgrade"], ["db", "status", "--json"], ["summary"]):
        out = CliRunner().invoke(cli, ["-p", str(root), "-v", *args])
        assert out.exit_code != 0 and "password=***" in out.output and "s3cret-pw" not in out.output, (args, out.output)


def test_cli_commands_leave_no_connection_open(empty_db_url, tmp_path, monkeypatch):
    """A program (or test) running many commands in one process does not pile up open connections."""
    if not empty_db_url.startswith("postgresql"):
        pytest.skip("the server's own view of its connections is a PostgreSQL one")
    from click.testing import CliRunner
    from sqlalchemy import text
    from tests.conftest import _pg_admin

    from relmail.cli import cli
    from relmail.project import init_project

    monkeypatch.setenv("RELMAIL_DATABASE_URL", empty_db_url)
    root = init_project(tmp_path / "shop").root
    name = empty_db_url.rsplit("/", 1)[1]
    admin = _pg_admin()

    def open_connections() -> int:
        # A closed connection's server process leaves pg_stat_activity a moment after the client hangs up.
        for _ in range(50):
            with admin.connect() as conn:
                n = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = :n"), {"n": name}).scalar_one()
            if n == 0:
                break
            time.sleep(0.05)
        return n

    try:
        for args in (["db", "status"], ["db", "upgrade"], ["db", "status"], ["demo", "--customers", "30"], ["segments", "list"]):
            res = CliRunner().invoke(cli, ["-p", str(root), *args])
            assert res.exit_code == 0, res.output
            assert open_connections() == 0, args
    finally:
        admin.dispose()


def test_an_existing_store_gets_the_provider_id_index_and_the_consent_history_on_upgrade(empty_db_url):
    """A store made before them: ``relmail db upgrade`` adds both, and keeps its rows."""
    from sqlalchemy import inspect

    from relmail.store.models import Preference

    engine = make_engine(empty_db_url)
    upgrade(engine, "0011")
    when = datetime(2026, 11, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(insert(Preference.__table__).values(customer_id="C1", topic="*", opted_in=False, updated_at=when,
                                                         source="unsubscribe-link"))
    assert "consent_changes" not in inspect(engine).get_table_names()
    assert upgrade(engine) == ("0011", head_revision())
    found = inspect(engine)
    assert "ix_deliveries_provider_id" in {i["name"] for i in found.get_indexes("deliveries")}
    assert "ix_consent_changes_customer_topic" in {i["name"] for i in found.get_indexes("consent_changes")}
    with engine.connect() as conn:
        assert conn.execute(select(Preference.__table__.c.source)).scalar_one() == "unsubscribe-link"
    engine.dispose()


ONLINE_INDEXES = {"customers": "ix_customers_email_lower", "deliveries": "ix_deliveries_provider_id"}


def _index_states(engine) -> dict[str, bool | None]:
    """Each online index's pg_index.indisvalid (None: no such index)."""
    with engine.connect() as conn:
        return {name: conn.execute(text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:n)"),
                                    {"n": name}).scalar() for name in ONLINE_INDEXES.values()}


def test_an_upgrade_from_0011_builds_the_address_and_provider_id_indexes(empty_db_url):
    """On both backends; on PostgreSQL concurrently, and valid."""
    engine = make_engine(empty_db_url)
    try:
        upgrade(engine, "0011")
        with engine.begin() as conn:
            conn.execute(insert(Customer.__table__), [
                dict(id=f"C{i}", email=f"Person{i}@Example.com", locale="en_GB", timezone="UTC", attributes={})
                for i in range(50)])
        assert upgrade(engine) == ("0011", head_revision())
        if engine.dialect.name == "postgresql":
            assert _index_states(engine) == dict.fromkeys(ONLINE_INDEXES.values(), True)
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SET enable_seqscan = off"))  # 50 rows: only to see that the index is usable
            else:
                # SQLAlchemy's inspector leaves SQLite's expression indexes out.
                stored = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'index'")).scalars().all()
                assert set(ONLINE_INDEXES.values()) <= set(stored)
            explain = "EXPLAIN QUERY PLAN" if engine.dialect.name == "sqlite" else "EXPLAIN"
            plan = conn.execute(text(f"{explain} SELECT id FROM customers WHERE lower(email) = 'person7@example.com'")).all()
            assert "ix_customers_email_lower" in str(plan)
    finally:
        engine.dispose()


def test_a_concurrent_build_that_failed_is_built_again_by_the_next_upgrade(empty_db_url):
    """An INVALID index (a concurrent build cancelled or cut off) is dropped and built again; a valid one is kept."""
    engine = make_engine(empty_db_url)
    try:
        if engine.dialect.name != "postgresql":
            pytest.skip("concurrent index builds are PostgreSQL's")
        upgrade(engine, "0011")
        with engine.begin() as conn:
            # What a failed CREATE INDEX CONCURRENTLY leaves: the index, marked not valid (never read by a plan).
            conn.execute(text("CREATE INDEX ix_customers_email_lower ON customers (lower(email))"))
            conn.execute(text("UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass('ix_customers_email_lower')"))
            # What a crash after the build but before the revision was recorded leaves: a valid index.
            conn.execute(text("CREATE INDEX ix_deliveries_provider_id ON deliveries (provider_id)"))
        assert _index_states(engine) == {"ix_customers_email_lower": False, "ix_deliveries_provider_id": True}
        assert upgrade(engine) == ("0011", head_revision())
        assert _index_states(engine) == {"ix_customers_email_lower": True, "ix_deliveries_provider_id": True}
    finally:
        engine.dispose()


def test_writers_go_on_while_an_upgrade_builds_an_index(empty_db_url):
    """PostgreSQL: a plain CREATE INDEX queues for a lock that every later INSERT then queues behind.

    An import's open transaction on customers makes the build wait; a webhook's insert that comes
    after must not wait behind the build (here: it would run out of its 3 s lock_timeout).
    """
    import threading

    engine = make_engine(empty_db_url)
    try:
        if engine.dialect.name != "postgresql":
            pytest.skip("concurrent index builds are PostgreSQL's")
        upgrade(engine, "0011")
        row = dict(locale="en_GB", timezone="UTC", attributes={})
        importer = engine.connect()
        importer.begin()
        importer.execute(insert(Customer.__table__), [dict(id="A", email="a@example.com", **row)])
        done: list = []
        upgrading = threading.Thread(target=lambda: done.append(upgrade(engine)))
        upgrading.start()
        try:
            _insert_while_the_build_waits(engine, row)
        finally:
            importer.commit()
            importer.close()
            upgrading.join(30)
        assert done == [("0011", head_revision())]
        assert _index_states(engine) == dict.fromkeys(ONLINE_INDEXES.values(), True)
    finally:
        engine.dispose()


def _insert_while_the_build_waits(engine, row: dict) -> None:
    """Once the upgrade's index build waits for an open transaction, a new writer inserts a customer (3 s at most)."""
    with engine.connect() as watch:
        for _ in range(200):
            waiting = watch.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                         "AND query ILIKE 'CREATE INDEX%'")).scalar()
            watch.rollback()  # holds no snapshot the build would wait for
            if waiting:
                break
            time.sleep(0.05)
        assert waiting, "the build never waited for the open transaction"
    with engine.begin() as webhook:
        webhook.execute(text("SET LOCAL lock_timeout = '3s'"))
        webhook.execute(insert(Customer.__table__), [dict(id="B", email="b@example.com", **row)])


def test_an_upgrade_makes_the_opt_outs_an_earlier_send_recorded_failed_withdrawn_and_a_downgrade_takes_them_back(empty_db_url):
    """Only the deliveries the send did not send because the customer opted out, complained or hard-bounced
    after the plan: the other failures (deadline, template) stay ``failed``."""
    from alembic import command

    from relmail.store.db import _alembic_config
    from relmail.store.models import Delivery

    D = Delivery.__table__
    engine = make_engine(empty_db_url)
    upgrade(engine, "0017")
    when = datetime(2026, 11, 23, tzinfo=UTC)
    reasons = {
        1: ("failed", "OPTED_OUT: the customer opted out after the plan"),
        2: ("failed", "SUPPRESSED: email_complained under customer G-3 (the same address) after the plan"),
        3: ("failed", "RENDER_ERROR: undefined variable: customer.nickname"),
        4: ("failed", "deferred past the deadline: 451 4.3.0 OPTED_OUT: try later"),
        5: ("failed", "OPTEDXOUT: not the prefix, whatever LIKE's _ matches"),
        6: ("accepted", None),
        7: ("failed", None),
    }
    with engine.begin() as conn:
        conn.execute(insert(D), [{"id": i, "decision_id": i, "run_id": "weekly:2026-W48", "customer_id": f"C{i}",
                                  "message_id": "m", "status": s, "last_error": e, "attempts": 1, "updated_at": when}
                                 for i, (s, e) in reasons.items()])

    def states() -> dict[int, str]:
        with engine.connect() as conn:
            return dict(conn.execute(select(D.c.id, D.c.status)).all())

    assert upgrade(engine) == ("0017", head_revision())
    assert states() == {1: "withdrawn", 2: "withdrawn", 3: "failed", 4: "failed", 5: "failed", 6: "accepted", 7: "failed"}
    command.downgrade(_alembic_config(engine), "0017")
    assert states() == {i: s for i, (s, _) in reasons.items()}
    engine.dispose()
