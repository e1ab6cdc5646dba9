"""Erasure (forget) and access (export) of one customer's data."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, update

from relmail.cli import cli
from relmail.demo import ROLES, generate
from relmail.errors import NotFound
from relmail.store import consent_log
from relmail.store.addresses import address_hash, salt
from relmail.store.erasure import export, forget
from relmail.store.models import Customer, Decision, Delivery, Event, Preference, Run, ShopAccount, Suppression

T0 = datetime(2026, 11, 1, 9, tzinfo=UTC)
C, P, E, DEC, DEL, S, RUNS = (m.__table__ for m in (Customer, Preference, Event, Decision, Delivery, Suppression, Run))
PERSONAL = (C, P, E)


def _customer(conn, cid: str, email: str, events: int = 3, decisions: tuple[str, ...] = ("planned",)) -> None:
    conn.execute(C.insert().values(id=cid, email=email, first_name="Anna", last_name="Bakker", locale="nl_NL",
                                   timezone="Europe/Amsterdam", created_at=T0, attributes={"city": "Delft"}))
    conn.execute(P.insert(), [dict(customer_id=cid, topic=t, opted_in=True, updated_at=T0, source="import")
                              for t in ("newsletter", "promotions")])
    if events:
        conn.execute(E.insert(), [dict(customer_id=cid, type="view", occurred_at=T0 + timedelta(hours=k), product_id="EB-200")
                                  for k in range(events)])
    for k, status in enumerate(decisions):
        # Decisions belong to a run, as every plan writes them (a customer's ledger rows are found run by run).
        if conn.execute(select(RUNS.c.id).where(RUNS.c.id == f"r{k}")).first() is None:
            conn.execute(RUNS.insert().values(id=f"r{k}", campaign="weekly", window=f"2026-W{40 + k}", as_of=T0 + timedelta(weeks=k), seed=0,
                                              config_hash="", status="planned", created_at=T0, updated_at=T0))
        dec_id = conn.execute(DEC.insert().values(run_id=f"r{k}", customer_id=cid, message_id="m", action="send", score=0.7,
                                                  reasons="ok", features={"views_30d": events}, created_at=T0)).inserted_primary_key[0]
        conn.execute(DEL.insert().values(decision_id=dec_id, run_id=f"r{k}", customer_id=cid, message_id="m", status=status,
                                         last_error="550 anna@x.example: mailbox full" if status == "deferred" else None,
                                         next_attempt_at=T0 if status == "deferred" else None, updated_at=T0))


def test_why_after_erasure_says_the_customer_was_erased_not_that_a_hard_rule_applied(engine):
    from relmail.planning.why import ALL_PASSED, explain, format_explanations
    from relmail.rules import REASON_CODES

    with engine.begin() as conn:
        _customer(conn, "C1", "anna@example.org", decisions=("accepted",))
        conn.execute(update(DEC).where(DEC.c.customer_id == "C1").values(action="suppress", reasons="COMPLAINED"))
    forget(engine, "C1")
    facts, (exp,) = explain(engine, "C1", "r0")
    assert facts["erased"] is True and exp.features == {}
    assert exp.because == [("COMPLAINED", REASON_CODES["COMPLAINED"])]  # the code's meaning, no sentence about zeros
    text = format_explanations(facts, [exp])
    assert "The customer was erased" in text and "hard rule applies" not in text and ALL_PASSED not in text
    assert "m: SUPPRESS  score 0.70" in text


def _count(conn, table, cid=None) -> int:
    stmt = select(func.count()).select_from(table)
    if cid is not None:
        stmt = stmt.where(table.c.customer_id == cid if "customer_id" in table.c else table.c.id == cid)
    return conn.execute(stmt).scalar_one()


def test_forget_deletes_personal_data_keeps_a_salted_hash_and_a_stripped_ledger(engine):
    with engine.begin() as conn:
        _customer(conn, "C1", "  Anna.Bakker@Example.org ", events=4, decisions=("accepted", "planned", "deferred"))
        _customer(conn, "C2", "other@example.org", events=2)
        consent_log.record(conn, [{"customer_id": c, "topic": "*", "opted_in": False, "changed_at": T0, "source": "import",
                                   "detail": "customers.csv"} for c in ("C1", "C2")])
        conn.execute(ShopAccount.__table__.insert(), [{"source": "woocommerce", "account": a, "customer_id": c}
                                                      for a, c in (("12", "C1"), ("13", "C2"))])
    result = forget(engine, "C1")
    assert result["deleted"] == {"customers": 1, "preferences": 2, "consent_changes": 1, "events": 4, "shop_accounts": 1,
                                  "feedback_rejects": 0}
    with engine.connect() as conn:
        assert conn.execute(select(ShopAccount.__table__.c.account, ShopAccount.__table__.c.customer_id)).all() == [
            ("13", "C2")], "the shop's account number of the erased customer is gone, the other's kept"
    with engine.connect() as conn:
        assert consent_log.change_in_force(conn, "C2", "*", datetime.now(UTC)).detail == "customers.csv", "the other customer's history is kept"
    assert result["ledger_kept"] == {"decisions": 3, "deliveries": 3}
    assert result["deliveries_cancelled"] == 2
    with engine.connect() as conn:
        assert [_count(conn, t, "C1") for t in PERSONAL] == [0, 0, 0]
        assert [_count(conn, t, "C2") for t in PERSONAL] == [1, 2, 2], "other customers untouched"
        expected = address_hash("anna.bakker@example.org", salt(conn))
        assert conn.execute(select(S.c.email_hash, S.c.reason)).all() == [(expected, "erased")]
        assert result["suppression"] == {"email_hash": expected, "reason": "erased", "added": True, "previous_reason": None}
        assert [f for (f,) in conn.execute(select(DEC.c.features).where(DEC.c.customer_id == "C1"))] == [{}, {}, {}]
        assert conn.execute(select(DEC.c.features).where(DEC.c.customer_id == "C2")).scalar_one() == {"views_30d": 2}
        states = dict(conn.execute(select(DEL.c.run_id, DEL.c.status).where(DEL.c.customer_id == "C1")).all())
        assert states == {"r0": "accepted", "r1": "failed", "r2": "failed"}
        errors = {e for (e,) in conn.execute(select(DEL.c.last_error).where(DEL.c.customer_id == "C1"))}
        assert errors == {"customer erased"}, "provider texts quoting the address are gone"
        assert conn.execute(select(DEL.c.status).where(DEL.c.customer_id == "C2")).scalar_one() == "planned"
    with pytest.raises(NotFound):
        forget(engine, "C1")
    with pytest.raises(NotFound):
        export(engine, "C1")


def test_export_covers_every_table_and_is_json(engine):
    with engine.begin() as conn:
        _customer(conn, "C1", "anna@example.org", events=3, decisions=("accepted", "deferred"))
        _customer(conn, "C2", "other@example.org")
    data = export(engine, "C1")
    assert set(data) == {"customer", "preferences", "consent_changes", "shop_accounts", "events", "decisions", "deliveries",
                         "suppressed"}
    assert data["customer"]["email"] == "anna@example.org" and data["customer"]["attributes"] == {"city": "Delft"}
    assert data["customer"]["created_at"] == "2026-11-01T09:00:00+00:00"
    assert [p["topic"] for p in data["preferences"]] == ["newsletter", "promotions"]
    assert [e["occurred_at"] for e in data["events"]] == sorted(e["occurred_at"] for e in data["events"])
    assert len(data["events"]) == 3 and len(data["decisions"]) == 2 and len(data["deliveries"]) == 2
    assert {d["customer_id"] for d in data["decisions"] + data["deliveries"]} == {"C1"}
    assert data["suppressed"] is None
    assert json.loads(json.dumps(data)) == data


def test_a_duplicate_record_of_an_erased_address_shows_as_suppressed(engine):
    with engine.begin() as conn:
        _customer(conn, "C1", "anna@example.org")
        _customer(conn, "C2", "ANNA@example.org")
    forget(engine, "C1")
    assert export(engine, "C2")["suppressed"] == {"reason": "erased"}
    second = forget(engine, "C2")
    assert (second["suppression"]["added"], second["suppression"]["previous_reason"]) == (False, "erased")
    with engine.connect() as conn:
        assert _count(conn, S) == 1


@pytest.mark.parametrize("reason", ["unsubscribed", "complained", "bounced", "cleaned"])
def test_forget_of_an_address_already_suppressed_records_the_erasure_whatever_the_reason(engine, tmp_path, reason):
    """The row becomes ``erased``, dated at the erasure: a re-import gets the documented opt-out, also after ``cleaned``."""
    from relmail.importers import import_file

    listed_at = datetime(2025, 3, 1, tzinfo=UTC)
    with engine.begin() as conn:
        _customer(conn, "C1", "anna@example.org")
        conn.execute(S.insert().values(email_hash=address_hash("anna@example.org", salt(conn)), reason=reason, created_at=listed_at))
    before = datetime.now(UTC)
    result = forget(engine, "C1")
    assert result["suppression"]["reason"] == "erased"
    assert (result["suppression"]["added"], result["suppression"]["previous_reason"]) == (False, reason)
    with engine.connect() as conn:
        ((stored, at),) = conn.execute(select(S.c.reason, S.c.created_at)).all()
    assert stored == "erased"
    assert (at if at.tzinfo else at.replace(tzinfo=UTC)) >= before - timedelta(seconds=1)  # the erasure's time, not the listing's

    # The address comes back in a sync: a global opt-out, dated at the erasure, so a global opt-in
    # given after the listing but before the erasure is not fresh consent.
    customers = tmp_path / "c.csv"
    customers.write_text("id,email,first_name,last_name,locale,timezone,created_at\n"
                         "C9,Anna@example.org,Anna,Bakker,nl_NL,Europe/Amsterdam,2024-01-01T00:00:00Z\n", encoding="utf-8")
    assert import_file(engine, "customers", customers).suppressed_opt_outs == 1
    consent = tmp_path / "p.csv"
    consent.write_text("customer_id,topic,opted_in,updated_at,source\nC9,*,true,2025-06-01T00:00:00Z,signup-form\n", encoding="utf-8")
    import_file(engine, "preferences", consent)
    with engine.connect() as conn:
        assert conn.execute(select(P.c.topic, P.c.opted_in, P.c.source).where(P.c.customer_id == "C9")).all() == [
            ("*", False, "suppression-list")]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.lists(st.tuples(st.integers(0, 4), st.lists(st.sampled_from(["planned", "accepted", "deferred", "failed", "withdrawn"]), max_size=2)),
                   min_size=1, max_size=5),
    pick=st.integers(0, 4),
)
def test_forget_removes_exactly_one_customers_rows(engine, shape, pick):
    with engine.begin() as conn:
        for table in (E, P, C, DEL, DEC, S):
            conn.execute(delete(table))
        for i, (events, decisions) in enumerate(shape):
            _customer(conn, f"C{i}", f"c{i}@example.org", events=events, decisions=tuple(decisions))
    target = f"C{pick % len(shape)}"
    with engine.connect() as conn:
        before = {t.name: _count(conn, t) for t in (*PERSONAL, DEC, DEL)}
        mine = {t.name: _count(conn, t, target) for t in PERSONAL}
    forget(engine, target)
    with engine.connect() as conn:
        after = {t.name: _count(conn, t) for t in (*PERSONAL, DEC, DEL)}
        assert {t.name: _count(conn, t, target) for t in PERSONAL} == {t.name: 0 for t in PERSONAL}
        assert conn.execute(select(func.count()).select_from(S)).scalar_one() == 1
        unsent = conn.execute(select(func.count()).where(DEL.c.customer_id == target, DEL.c.status.in_(["planned", "deferred"]))).scalar_one()
    assert unsent == 0
    assert after == {k: before[k] - mine.get(k, 0) for k in before}


def test_forget_a_demo_customer_then_the_summary_no_longer_names_them(engine):
    from relmail.store.summary import store_summary

    generate(engine, customers=60, seed=2, as_of=T0)
    victim = ROLES["unsubscribed"]
    before = store_summary(engine)
    result = forget(engine, victim)
    after = store_summary(engine)
    assert after["customers"]["total"] == before["customers"]["total"] - 1
    assert after["events"]["total"] == before["events"]["total"] - result["deleted"]["events"]
    assert victim not in after["demo"]["special_customers"].values()
    assert after["suppressions"] == 1


def test_cli_show_export_forget(project, tmp_path):
    runner = CliRunner()
    base = ["--project", str(project.root), "customers"]
    from relmail.store.db import connect

    engine = connect(project.database_url)
    with engine.begin() as conn:
        _customer(conn, "C1", "anna@example.org", events=2, decisions=("accepted",))

    shown = runner.invoke(cli, [*base, "show", "C1"])
    assert shown.exit_code == 0, shown.output
    assert "Anna Bakker <anna@example.org>" in shown.output and "promotions" in shown.output and "view" in shown.output

    out = tmp_path / "c1.json"
    exported = runner.invoke(cli, [*base, "export", "C1", "-o", str(out)])
    assert exported.exit_code == 0, exported.output
    assert json.loads(out.read_text())["customer"]["id"] == "C1"
    assert json.loads(runner.invoke(cli, [*base, "export", "C1"]).output)["events"][0]["type"] == "view"

    declined = runner.invoke(cli, [*base, "forget", "C1"], input="n\n")
    assert declined.exit_code == 1
    assert runner.invoke(cli, [*base, "show", "C1"]).exit_code == 0, "declining keeps the customer"

    erased = runner.invoke(cli, [*base, "forget", "C1", "--yes", "--json"])
    assert erased.exit_code == 0, erased.output
    assert json.loads(erased.output)["deleted"]["events"] == 2

    for command in ("show", "export", "forget"):
        gone = runner.invoke(cli, [*base, command, "C1", *(["--yes"] if command == "forget" else [])])
        assert gone.exit_code == 8 and "C1" in gone.output
    engine.dispose()


def test_cli_forget_says_which_suppression_the_erasure_replaced(project):
    from relmail.store.db import connect

    engine = connect(project.database_url)
    with engine.begin() as conn:
        _customer(conn, "C1", "anna@example.org")
        conn.execute(S.insert().values(email_hash=address_hash("anna@example.org", salt(conn)), reason="cleaned", created_at=T0))
    out = CliRunner().invoke(cli, ["--project", str(project.root), "customers", "forget", "C1", "--yes"])
    assert out.exit_code == 0, out.output
    assert "address hash already on the suppression list as 'cleaned', now 'erased'." in out.output
    engine.dispose()


@pytest.mark.parametrize("fmt", ["eml", "mbox"])
def test_forget_removes_the_customers_outbox_mail_and_the_ledger_pointers_to_it(project, fmt):
    from tests.sendkit import WINDOW, build

    from relmail.sending.run import send

    if fmt == "mbox":
        toml = project.root / "relmail.toml"
        toml.write_text(toml.read_text() + '\n[delivery.file]\nformat = "mbox"\n')
        from relmail.project import Project

        project = Project.load(project.root)
    engine = build(project, customers=30)
    send(project, engine, "sendtest", WINDOW, now=lambda: datetime(2026, 11, 20, 12, 0, tzinfo=UTC))
    with engine.connect() as conn:
        rows = conn.execute(select(DEL.c.customer_id, DEL.c.provider_id).where(DEL.c.status == "accepted")).all()
        email = conn.execute(select(C.c.email).where(C.c.id == rows[0][0])).scalar_one()
    victim, pointer = rows[0]
    outbox = project.root / "outbox"
    before = sorted(p.name for p in outbox.iterdir())
    assert email.encode() in b"".join(p.read_bytes() for p in outbox.iterdir())

    result = CliRunner().invoke(cli, ["--project", str(project.root), "customers", "forget", victim, "--yes"])
    assert result.exit_code == 0, result.output
    if fmt == "eml":
        assert f"removed {pointer}" in result.output and "1 .eml file(s)" in result.output
        assert sorted(p.name for p in outbox.iterdir()) == sorted(set(before) - {Path(pointer).name})
    else:
        assert "1 mbox entr(ies) removed" in result.output
        import mailbox

        assert len(mailbox.mbox(outbox / "outbox.mbox")) == len(rows) - 1
    # Nothing relmail wrote names the person any more, and the ledger points at nothing.
    assert email.encode() not in b"".join(p.read_bytes() for p in outbox.iterdir())
    with engine.connect() as conn:
        assert conn.execute(select(DEL.c.provider_id).where(DEL.c.customer_id == victim)).scalar_one() is None
        others = conn.execute(select(func.count()).where(DEL.c.provider_id.is_not(None))).scalar_one()
    assert others == len(rows) - 1


def test_forget_never_removes_a_file_the_ledger_was_made_to_point_at(engine, tmp_path):
    precious = tmp_path / "precious.eml"
    precious.write_text("not relmail's")
    with engine.begin() as conn:
        _customer(conn, "C1", "anna@example.org", decisions=("accepted",))
        conn.execute(update(DEL).where(DEL.c.customer_id == "C1").values(provider_id=str(precious)))
    out = forget(engine, "C1")
    assert precious.exists() and out["outbox"]["files_removed"] == []


def test_forget_deletes_recorded_invalid_provider_events_naming_the_address(engine):
    from relmail.store.models import FeedbackReject

    R = FeedbackReject.__table__
    with engine.begin() as conn:
        _customer(conn, "C1", "Anna@Example.org")
        conn.execute(R.insert(), [
            {"received_at": datetime.now(UTC), "provider": "sendgrid", "source": "webhook", "position": i, "line": None,
             "field": "timestamp", "reason": "bad", "raw_event": json.dumps({"email": email, "timestamp": "x"})}
            for i, email in enumerate(["anna@example.org", "someone@example.org"])])
    out = forget(engine, "C1")
    assert out["deleted"]["feedback_rejects"] == 1
    with engine.connect() as conn:
        assert [json.loads(r)["email"] for r in conn.execute(select(R.c.raw_event)).scalars()] == ["someone@example.org"]
