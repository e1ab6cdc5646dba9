"""The schema is versioned: created and upgraded by a command, checked on use."""

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select

from relmail.db import connect, current_revision, head_revision, make_engine, redact, upgrade
from relmail.errors import DatabaseError
from relmail.models import Customer


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
    with pytest.raises(Exception, match="naive datetime"):
        with engine.begin() as conn:
            conn.execute(insert(Customer.__table__).values(id="C1", email="a@example.com", created_at=datetime(2026, 1, 1), attributes={}))


def test_redact_hides_the_password_only():
    assert redact("postgresql://bob:s3cret@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert redact("sqlite:///relmail.db") == "sqlite:///relmail.db"
