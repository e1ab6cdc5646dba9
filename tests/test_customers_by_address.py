"""Customers by e-mail address: one bulk look-up for events, orders and ``match: email``, the same owner as a plain reading of the rule.

The rule (relmail.importers.addresses): upper and lower case are one
address; of several customers with it, the one spelled as asked, else the
lowest id. Each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select

from relmail.errors import ValidationError
from relmail.importers import import_file
from relmail.importers.addresses import BATCH, _conditions, customers_by_address
from relmail.store.db import make_engine, upgrade
from relmail.store.models import EMAIL_LOWER, Customer, Event

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
C = Customer.__table__
#: Few mailboxes, so customers share them and files repeat them.
LOCALS = ["kim.dekker", "anna", "jo+news", "mees_kok"]
DOMAINS = ["mail.example", "post.example"]
#: Ids whose code point order is not their order in a language's collation ("B2" < "a1" < "a10").
IDS = st.text(alphabet="aBc019_", min_size=1, max_size=4)


def spelled(address: str, upper: list[bool]) -> str:
    return "".join(c.upper() if u else c for c, u in zip(address, upper))


@st.composite
def spellings(draw, unknown: bool = False) -> str:
    """One of the mailboxes (or, with ``unknown``, perhaps one nobody has) in a random mix of cases."""
    local = draw(st.sampled_from(LOCALS + (["nobody"] if unknown else [])))
    address = f"{local}@{draw(st.sampled_from(DOMAINS))}"
    return spelled(address, draw(st.lists(st.booleans(), min_size=len(address), max_size=len(address))))


def reference(stored: dict[str, str], address: str) -> str | None:
    """The rule read plainly: the lowest id spelled as asked, else the lowest id in any case."""
    exact = [cid for cid, email in stored.items() if email == address]
    folded = [cid for cid, email in stored.items() if email.lower() == address.lower()]
    return min(exact or folded, default=None)


def store(engine, customers: dict[str, str]) -> None:
    with engine.begin() as conn:
        conn.execute(Event.__table__.delete())
        conn.execute(C.delete())
        if customers:
            conn.execute(insert(C), [{"id": cid, "email": email, "attributes": {}} for cid, email in customers.items()])


@SETTINGS
@given(customers=st.dictionaries(IDS, spellings(), max_size=12), asked=st.lists(spellings(unknown=True), max_size=12))
def test_the_bulk_look_up_names_the_owner_a_plain_reading_of_the_rule_names(engine, customers, asked):
    store(engine, customers)
    with engine.connect() as conn:
        found = customers_by_address(conn, asked)
    assert found == {a: reference(customers, a) for a in asked if reference(customers, a) is not None}


def test_more_addresses_than_one_statement_takes_are_all_found(engine):
    customers = {f"C{i:04d}": f"klant.{i}@mail.example" for i in range(BATCH * 2 + 7)}
    store(engine, customers)
    asked = [email.upper() if i % 3 else email for i, email in enumerate(customers.values())] + ["nobody@mail.example"]
    with engine.connect() as conn:
        found = customers_by_address(conn, asked)
    assert found == {a: f"C{i:04d}" for i, a in enumerate(asked[:-1])}


OPENS = """\
kind: events
times: {format: "%Y-%m-%d %H:%M:%S", timezone: UTC}
columns:
  Email Address: email
  Timestamp: {to: occurred_at, parse: time}
fields:
  type: {value: email_opened}
  event_id: {template: "opened {Timestamp}", parse: slug}
"""


@pytest.mark.parametrize("chunk", [1, 2, 10_000])
def test_an_activity_export_names_its_people_by_address_whatever_the_chunks(engine, tmp_path, chunk):
    # Kim's mailbox has three customers (duplicate accounts): C5 spelled otherwise, C3 the lowest id.
    store(engine, {"C5": "Kim.Dekker@mail.example", "C3": "kim.dekker@mail.example", "C9": "kim.dekker@mail.example",
                   "C4": "anna@mail.example"})
    mapping = tmp_path / "opens.yml"
    mapping.write_text(OPENS)
    opens = tmp_path / "opens.csv"
    opens.write_text("Email Address,Timestamp\n"
                     "Kim.Dekker@mail.example,2026-11-20 09:00:00\n"
                     "KIM.DEKKER@MAIL.EXAMPLE,2026-11-20 09:01:00\n"
                     "kim.dekker@mail.example,2026-11-20 09:02:00\n"
                     "ANNA@mail.example,2026-11-20 09:03:00\n", encoding="utf-8")
    assert import_file(engine, "events", opens, mapping=mapping, chunk_size=chunk).rows_imported == 4
    with engine.connect() as conn:
        got = dict(conn.execute(select(Event.__table__.c.event_id, Event.__table__.c.customer_id)).all())
    assert got == {"opened-2026-11-20-09-00-00": "C5", "opened-2026-11-20-09-01-00": "C3",
                   "opened-2026-11-20-09-02-00": "C3", "opened-2026-11-20-09-03-00": "C4"}


@pytest.mark.parametrize("chunk", [1, 3, 10_000])
def test_an_unknown_address_is_named_after_the_rows_other_problems_and_nothing_is_imported(engine, tmp_path, chunk):
    store(engine, {"C4": "anna@mail.example"})
    mapping = tmp_path / "opens.yml"
    mapping.write_text(OPENS)
    opens = tmp_path / "opens.csv"
    opens.write_text("Email Address,Timestamp\n"
                     "anna@mail.example,2026-11-20 09:00:00\n"
                     "nobody@mail.example,gestern\n"
                     "Nobody@Mail.Example,2026-11-20 09:02:00\n"
                     "anna@mail.example,2026-11-20 09:03:00\n", encoding="utf-8")
    with pytest.raises(ValidationError) as caught:
        import_file(engine, "events", opens, mapping=mapping, chunk_size=chunk)
    unknown = "no customer has this e-mail address (import customers first)"
    assert [(p.line, p.field, p.message) for p in caught.value.problems][1:] == [
        (3, "Email Address", unknown), (4, "Email Address", unknown)]
    assert [(p.line, p.field) for p in caught.value.problems][0] == (3, "Timestamp")
    with engine.connect() as conn:
        assert conn.execute(select(Event.__table__.c.event_id)).all() == []


def test_a_store_made_before_the_index_gets_it_on_upgrade_and_the_look_up_reads_it(empty_db_url):
    engine = make_engine(empty_db_url)
    try:
        upgrade(engine, "0011")
        with engine.begin() as conn:
            conn.execute(insert(C), [{"id": f"C{i}", "email": f"klant.{i}@mail.example", "attributes": {}} for i in range(50)])
        upgrade(engine)
        with engine.begin() as conn:
            (batch, condition), = _conditions(conn, ["Klant.7@mail.example"])
            statement = select(C.c.id, C.c.email, EMAIL_LOWER).where(condition)
            if conn.dialect.name == "sqlite":
                sql = str(statement.compile(conn, compile_kwargs={"literal_binds": True}))
                plan = " ".join(row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
            else:
                conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # 50 rows: a scan would be cheaper
                compiled = statement.compile(conn)
                plan = " ".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params))
            assert "ix_customers_email_lower" in plan
            assert customers_by_address(conn, batch) == {"Klant.7@mail.example": "C7"}
    finally:
        engine.dispose()


def test_feedback_finds_every_owner_of_an_address_in_any_case_through_the_index(engine):
    # A bounce or an opt-out is the mailbox's: every customer with the address, found through lower(email).
    from sqlalchemy import event

    from relmail.feedback.apply import owners_by_address

    with engine.begin() as conn:
        conn.execute(insert(C), [{"id": cid, "email": email, "attributes": {}} for cid, email in
                                 (("C1", "Kim.Dekker@Mail.example"), ("C2", "kim.dekker@mail.example"), ("C3", "anna@mail.example"))])
    seen: list[tuple[str, object]] = []
    with engine.connect() as conn:
        event.listen(conn, "before_cursor_execute", lambda c, cur, sql, params, ctx, many: seen.append((sql, params)))
        assert owners_by_address(conn, {"kim.dekker@mail.example"}) == {"kim.dekker@mail.example": ["C1", "C2"]}
        sql, params = next((s, p) for s, p in seen if "customers" in s)
        if conn.dialect.name == "sqlite":
            plan = " ".join(row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))
        else:
            conn.exec_driver_sql("SET enable_seqscan = off")  # three rows: a scan would be cheaper
            plan = " ".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {sql}", params))
        assert "ix_customers_email_lower" in plan
