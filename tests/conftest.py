"""Shared fixtures: real databases (SQLite and PostgreSQL) and a project folder.

Every test that takes ``db_url`` (or ``engine`` / ``project``) runs once per
backend. PostgreSQL tests use a fresh database on the server named by
``RELMAIL_TEST_POSTGRES_URL`` (default: the local server, database ``test``)
and are skipped when it cannot be reached, unless
``RELMAIL_TEST_REQUIRE_POSTGRES=1`` (set by CI), which makes that a failure.
``RELMAIL_TEST_BACKENDS=sqlite`` limits a run to one backend.
"""

from __future__ import annotations

import os
import shutil
import uuid

import pytest
from sqlalchemy import create_engine, text
from tests.browser import browser  # noqa: F401 (the headless Chromium fixture, for every test module)

from relmail.project import init_project
from relmail.store.db import make_engine, upgrade
from relmail.store.models import Meta

PG_URL = os.environ.get("RELMAIL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = [b.strip() for b in os.environ.get("RELMAIL_TEST_BACKENDS", "sqlite,postgresql").split(",") if b.strip()]
REQUIRE_PG = os.environ.get("RELMAIL_TEST_REQUIRE_POSTGRES") == "1"

#: Tables kept between tests: the schema version and the address salt.
KEEP = {"alembic_version", "meta"}


def _pg_admin():
    return create_engine(PG_URL, isolation_level="AUTOCOMMIT")


def _pg_available() -> str | None:
    admin = _pg_admin()
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
        return None
    except Exception as exc:  # any failure to connect means "not here"
        return f"PostgreSQL not reachable at {PG_URL}: {exc.__class__.__name__}"
    finally:
        admin.dispose()


class PostgresDatabases:
    """Creates throw-away databases on the test server and drops them at the end."""

    def __init__(self):
        self.admin = _pg_admin()
        self.created: list[str] = []

    def create(self, options: str = "") -> str:
        """A new database; ``options`` are CREATE DATABASE's (``LOCALE_PROVIDER icu ...``)."""
        name = f"relmail_test_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" {options}'.strip()))
        self.created.append(name)
        return PG_URL.rsplit("/", 1)[0] + "/" + name

    def drop_all(self):
        with self.admin.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def pg_databases():
    reason = _pg_available()
    if reason:
        if REQUIRE_PG:
            pytest.fail(reason + " (RELMAIL_TEST_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    dbs = PostgresDatabases()
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session")
def pg_template_url(pg_databases):
    url = pg_databases.create()
    engine = make_engine(url)
    upgrade(engine)
    with engine.connect() as conn:
        _UPGRADED_META[url] = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM meta"))]
    engine.dispose()
    return url


#: The ``meta`` rows of each PostgreSQL test database just after its upgrade, restored before every test.
_UPGRADED_META: dict[str, list[dict]] = {}


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("sqlite-template") / "relmail.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


def _truncate(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        tables = [
            r[0]
            for r in conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"))
            if r[0] not in KEEP
        ]
        if tables:
            conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY"))
        # As upgraded, like the SQLite copy of the template: a previous test's aggregates state (the event and
        # change-log ids it covered) would otherwise outlive its events, and match the restarted ids by chance.
        conn.execute(text("DELETE FROM meta"))
        if _UPGRADED_META.get(url):
            conn.execute(Meta.__table__.insert(), _UPGRADED_META[url])
    engine.dispose()


@pytest.fixture
def reset_pg():
    """What every PostgreSQL test's database goes through first: emptied and its ``meta`` as upgraded."""
    return _truncate


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    """URL of an upgraded, empty relmail database on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "relmail.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_template_url")
        _truncate(url)
        return url
    raise ValueError(f"unknown backend {request.param!r} in RELMAIL_TEST_BACKENDS")


@pytest.fixture(params=BACKENDS)
def empty_db_url(request, tmp_path):
    """URL of a database with no relmail schema at all, on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return request.getfixturevalue("pg_databases").create()


@pytest.fixture
def limited_role():
    """``limited_role(url, n)``: ``url`` as a new role allowed ``n`` connections (PostgreSQL); dropped after the test.

    The role is the test's own (``CONNECTION LIMIT`` on it changes nothing
    for anyone else on the shared server); it may use every relmail table.
    """
    made: list[tuple[str, str]] = []

    def make(url: str, limit: int) -> str:
        role = f"relmail_limited_{uuid.uuid4().hex[:8]}"
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT {int(limit)}'))
            conn.execute(text(f'GRANT ALL ON DATABASE "{url.rsplit("/", 1)[1]}" TO "{role}"'))
            conn.execute(text(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"'))
            conn.execute(text(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}"'))
        admin.dispose()
        made.append((url, role))
        return url.replace("://postgres@", f"://{role}@")

    yield make
    for url, role in made:
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"), {"r": role})
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def project(tmp_path, db_url, monkeypatch):
    """A project made by ``relmail init`` whose database is ``db_url``."""
    monkeypatch.setenv("RELMAIL_DATABASE_URL", db_url)
    monkeypatch.setenv("RELMAIL_SIGNING_KEY", "test-signing-key-not-secret")
    yield init_project(tmp_path / "shop")
    from tests import sendkit

    while sendkit.BUILT:  # a test's shop engine: closed here, not left to the garbage collector
        sendkit.BUILT.pop().dispose()


def pytest_terminal_summary(terminalreporter):
    """The fault suite's figures (tests/test_faults.py), one line per run, passed or failed."""
    reports = terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
    lines = dict.fromkeys(value for r in reports for name, value in getattr(r, "user_properties", ()) if name == "fault suite")
    if lines:
        terminalreporter.section("fault suite")
        for line in lines:
            terminalreporter.write_line(line)
