"""Applying feedback to the store, importing export files, and the CLI (both backends)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from relmail import tokens
from relmail.cli import cli
from relmail.errors import ValidationError
from relmail.feedback import apply_events, import_file
from relmail.feedback.apply import tie_to_deliveries
from relmail.feedback.events import FeedbackEvent
from relmail.store.models import Customer, Delivery, Event, FeedbackReject, Preference

DATA = Path(__file__).parent / "data" / "feedback"
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
RUN = "weekly-2026-W48"
CUSTOMERS = [
    ("C0000001", "anna@example.com"),
    ("C0000002", "bram@example.com"),
    ("C0000003", "carla@example.com"),
    ("C0000004", "DAAN@Example.com"),  # stored with its original case
]


def add_customers(engine, rows=CUSTOMERS) -> None:
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [
            {"id": cid, "email": email, "created_at": T0 - timedelta(days=400), "attributes": {}} for cid, email in rows
        ])


def add_sent(engine, customer: str, message: str, topic: str, run: str = RUN) -> None:
    with engine.begin() as conn:
        conn.execute(Event.__table__.insert(), [{
            "event_id": f"sent:{run}:{customer}:{message}", "customer_id": customer, "type": "email_sent",
            "occurred_at": T0, "message_id": message, "run_id": run, "topic": topic,
        }])


def events(engine, kind: str | None = None) -> list[tuple]:
    table = Event.__table__
    query = select(table.c.customer_id, table.c.type, table.c.run_id, table.c.message_id, table.c.topic).where(
        table.c.type != "email_sent")
    if kind:
        query = query.where(table.c.type == kind)
    with engine.connect() as conn:
        return sorted(conn.execute(query).all())


def prefs(engine) -> dict[tuple[str, str], tuple[bool, str]]:
    table = Preference.__table__
    with engine.connect() as conn:
        return {(c, t): (o, s) for c, t, o, s in conn.execute(
            select(table.c.customer_id, table.c.topic, table.c.opted_in, table.c.source))}


def event(kind="delivered", recipient="anna@example.com", eid="e1", when=T0, **kw) -> FeedbackEvent:
    return FeedbackEvent(kind, when, recipient, "test", eid, **kw)


def test_apply_writes_events_and_is_idempotent(engine):
    add_customers(engine)
    batch = [event(eid="1"), event("bounced_hard", "bram@example.com", "2"), event("opened", "nobody@x.example", "3")]
    first = apply_events(engine, batch)
    assert (dict(first.applied), first.duplicates, first.unknown_recipients) == ({"delivered": 1, "bounced_hard": 1}, 0, 1)
    again = apply_events(engine, batch)
    assert (again.total_applied, again.duplicates) == (0, 2)
    assert events(engine) == [("C0000001", "email_delivered", None, None, None),
                              ("C0000002", "email_bounced_hard", None, None, None)]


def test_a_large_feedback_batch_refreshes_postgresql_statistics_of_events(engine):
    """An ESP export applied in one batch is a bulk load: the next plan must see the events it added."""
    add_customers(engine)
    applied = apply_events(engine, [event(eid=f"e{i}") for i in range(80)])  # >= 50 rows into an empty table
    assert applied.total_applied == 80
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT reltuples FROM pg_class WHERE oid = 'events'::regclass").scalar() == 80


def test_recipient_lookup_ignores_case_and_metadata_wins_when_the_customer_exists(engine):
    add_customers(engine)
    apply_events(engine, [
        event("complained", " Daan@EXAMPLE.com ", "1"),
        event("opened", "someone-else@example.com", "2", customer_id="C0000003"),
        # Metadata naming a customer that is gone (erased) falls back to the address.
        event("clicked", "anna@example.com", "3", customer_id="C9999999"),
    ])
    assert [(c, t) for c, t, *_ in events(engine)] == [
        ("C0000001", "email_clicked"), ("C0000003", "email_opened"), ("C0000004", "email_complained")]


def test_a_bounce_for_the_idna_form_of_an_umlaut_domain_finds_its_customer(engine):
    # relmail hands info@müller-kaffee.example over as info@xn--mller-kaffee-dlb.example; the
    # provider's bounce names that form, and must still suppress the customer.
    add_customers(engine, [("C0000001", "info@müller-kaffee.example"), ("C0000002", "anna@example.com")])
    result = apply_events(engine, [event("bounced_hard", "Info@XN--MLLER-KAFFEE-DLB.example", "b1"),
                                   event("delivered", "anna@example.com", "d1")])
    assert result.applied["bounced_hard"] == 1 and result.unknown_recipients == 0
    assert [(c, t) for c, t, *_ in events(engine, "email_bounced_hard")] == [("C0000001", "email_bounced_hard")]


def test_a_bounce_for_the_idna_2008_form_of_a_domain_with_sharp_s_finds_its_customer(engine):
    # gärtnerei-süß is xn--grtnerei-s-f4a4c1v (IDNA 2008), not IDNA 2003's gärtnerei-süss (xn--grtnerei-sss-gcb95a).
    add_customers(engine, [("C0000001", "lena@gärtnerei-süß.example"), ("C0000002", "lena@gärtnerei-süss.example")])
    result = apply_events(engine, [event("bounced_hard", "lena@xn--grtnerei-s-f4a4c1v.example", "b1")])
    assert result.applied["bounced_hard"] == 1 and result.unknown_recipients == 0
    assert [(c, t) for c, t, *_ in events(engine, "email_bounced_hard")] == [("C0000001", "email_bounced_hard")]


def test_an_address_shared_by_two_customers_suppresses_both(engine):
    add_customers(engine, [("C0000001", "shared@example.com"), ("C0000002", "Shared@example.com")])
    result = apply_events(engine, [event("bounced_hard", "shared@example.com", "b1")])
    assert result.applied["bounced_hard"] == 2
    assert apply_events(engine, [event("bounced_hard", "shared@example.com", "b1")]).total_applied == 0


def test_complaints_and_unsubscribes_opt_out_and_take_the_sent_topic(engine):
    add_customers(engine)
    add_sent(engine, "C0000001", "ebike-launch", "promotions")
    apply_events(engine, [
        event("unsubscribed", "anna@example.com", "u1", customer_id="C0000001", run_id=RUN,
              message_id="ebike-launch", scope="topic"),
        event("unsubscribed", "bram@example.com", "u2"),
        event("complained", "carla@example.com", "c1"),
        # A list-level unsubscribe whose topic is unknown falls back to everything.
        event("unsubscribed", "DAAN@example.com", "u3", scope="topic"),
    ])
    assert prefs(engine) == {
        ("C0000001", "promotions"): (False, "esp-webhook"),
        ("C0000002", "*"): (False, "esp-webhook"),
        ("C0000003", "*"): (False, "esp-webhook"),
        ("C0000004", "*"): (False, "esp-webhook"),
    }
    assert ("C0000001", "email_unsubscribed", RUN, "ebike-launch", "promotions") in events(engine)


@pytest.mark.parametrize("run", [tokens.PROOF_RUN, tokens.PREVIEW_RUN])
def test_what_happens_to_a_proof_is_not_applied_to_the_customer_it_shows(engine, run):
    """A proof carries a customer's id in its metadata but went to someone testing: their mailbox's complaint,
    bounce or unsubscribe must not opt the customer out."""
    add_customers(engine)
    result = apply_events(engine, [
        event("complained", "tester@shop.example", "p1", customer_id="C0000001", run_id=run, message_id="ebike-launch"),
        event("unsubscribed", "tester@shop.example", "p2", customer_id="C0000002", run_id=run, message_id="ebike-launch"),
        event("bounced_hard", "tester@shop.example", "p3", customer_id="C0000003", run_id=run, message_id="ebike-launch"),
        event("complained", "daan@example.com", "real", customer_id="C0000004", run_id=RUN, message_id="ebike-launch"),
    ])
    assert (result.proofs, result.total_applied, result.as_dict()["proofs"]) == (3, 1, 3)
    assert [(c, t) for c, t, *_ in events(engine)] == [("C0000004", "email_complained")]
    assert prefs(engine) == {("C0000004", "*"): (False, "esp-webhook")}


def test_a_providers_id_of_the_e_mail_finds_only_a_delivery_that_provider_carried(engine):
    # Two providers' ids of their e-mails are independent: SES's id of one e-mail may equal another provider's
    # id of another. A delivery names its adapter; one claimed before the ledger did (None) is matched by the id alone.
    add_customers(engine)
    with engine.begin() as conn:
        conn.execute(Delivery.__table__.insert(), [
            {"decision_id": i, "run_id": run, "customer_id": cid, "message_id": "promo", "status": "accepted",
             "adapter": adapter, "provider_id": sent_id, "updated_at": T0}
            for i, (run, cid, adapter, sent_id) in enumerate([("a:2026-W48", "C0000001", "ses", "same-id"),
                                                              ("b:2026-W48", "C0000002", "sendgrid", "same-id"),
                                                              ("old:2026-W40", "C0000003", None, "old-id"),
                                                              ("b:2026-W48", "C0000004", "sendgrid", "sg-only")], start=1)])
    asked = [FeedbackEvent("bounced_hard", T0, "x@example.com", "ses", f"e{i}", sent_id=sent_id)
             for i, sent_id in enumerate(("same-id", "old-id", "sg-only"))]
    with engine.connect() as conn:
        tied = [(e.customer_id, e.run_id) for e in tie_to_deliveries(conn, asked)]
    assert tied == [("C0000001", "a:2026-W48"), ("C0000003", "old:2026-W40"), (None, None)]


def test_an_old_unsubscribe_does_not_undo_a_newer_opt_in(engine):
    add_customers(engine)
    with engine.begin() as conn:
        conn.execute(Preference.__table__.insert(), [
            {"customer_id": "C0000001", "topic": "*", "opted_in": True, "updated_at": T0, "source": "signup-form"},
            {"customer_id": "C0000002", "topic": "*", "opted_in": True, "updated_at": T0, "source": "signup-form"},
        ])
    result = apply_events(engine, [
        event("unsubscribed", "anna@example.com", "old", when=T0 - timedelta(days=3)),
        event("unsubscribed", "bram@example.com", "new", when=T0 + timedelta(days=1)),
    ])
    assert result.opt_outs == 1
    assert prefs(engine) == {("C0000001", "*"): (True, "signup-form"), ("C0000002", "*"): (False, "esp-webhook")}
    # Both events are still on record: the rules see the history.
    assert len(events(engine, "email_unsubscribed")) == 2


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["delivered", "bounced_hard", "complained", "unsubscribed", "opened"]),
                          st.sampled_from(["anna@example.com", "BRAM@example.com", "x@nowhere.example"]),
                          st.integers(0, 6)), max_size=12))
def test_applying_any_batch_twice_equals_applying_it_once(engine, batch):
    with engine.begin() as conn:
        for table in (Event.__table__, Preference.__table__, Customer.__table__):
            conn.execute(table.delete())
    add_customers(engine)
    items = [event(kind, rcpt, f"id{n}", when=T0 + timedelta(minutes=n)) for kind, rcpt, n in batch]
    apply_events(engine, items)
    once = (events(engine), prefs(engine))
    second = apply_events(engine, items)
    assert second.total_applied == 0 and second.opt_outs == 0
    assert (events(engine), prefs(engine)) == once
    assert len(once[0]) == len({e.event_id for e in items if "nowhere" not in e.recipient})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.tuples(st.sampled_from(["complained", "unsubscribed", "delivered"]),
                                   st.sampled_from(["anna@example.com", "bram@example.com"]),
                                   st.sampled_from(["all", "topic"]), st.integers(-3, 6)), max_size=5), max_size=4))
def test_the_consent_history_ends_in_every_preference_row_and_records_only_changes(engine, batches):
    """Whatever opt-outs arrive, in whatever order and batches: per (customer, topic) the latest history row is
    the preference row's state and time, and the history holds exactly the rows each batch reported changed."""
    from relmail.store.models import ConsentChange

    with engine.begin() as conn:
        for table in (Event.__table__, Preference.__table__, Customer.__table__, ConsentChange.__table__):
            conn.execute(table.delete())
    add_customers(engine)
    changed = 0
    for b, batch in enumerate(batches):
        items = [event(kind, rcpt, f"id{b}-{n}", when=T0 + timedelta(hours=h), scope=scope,
                       topic="promotions" if scope == "topic" else None)
                 for n, (kind, rcpt, scope, h) in enumerate(batch)]
        changed += apply_events(engine, items).opt_outs
    H, P = ConsentChange.__table__, Preference.__table__
    with engine.connect() as conn:
        history = conn.execute(select(H.c.customer_id, H.c.topic, H.c.opted_in, H.c.changed_at).order_by(H.c.id)).all()
        state = {(c, t): (o, at) for c, t, o, at in conn.execute(select(P.c.customer_id, P.c.topic, P.c.opted_in, P.c.updated_at))}
    assert len(history) == changed
    latest = {(c, t): (o, at) for c, t, o, at in history}
    assert latest == state


@pytest.mark.parametrize(
    "name, fmt, applied, unknown",
    [
        ("sendgrid_events.json", "sendgrid", {"delivered": 1, "opened": 1, "clicked": 1, "bounced_hard": 2,
                                              "bounced_blocked": 1, "complained": 1, "unsubscribed": 2}, 1),
        ("mailgun_events.json", "mailgun", {"delivered": 1, "bounced_hard": 1, "bounced_soft": 1, "opened": 1,
                                            "clicked": 1, "complained": 1, "unsubscribed": 1}, 0),
        ("postmark_webhooks.jsonl", "postmark", {"delivered": 1, "bounced_hard": 1, "bounced_soft": 1,
                                                 "complained": 1, "opened": 1, "clicked": 1, "unsubscribed": 1}, 0),
        ("ses_events.jsonl", "ses", {"delivered": 1, "bounced_hard": 2, "bounced_soft": 1, "complained": 1,
                                     "opened": 1, "clicked": 1}, 0),
    ],
)
def test_import_each_provider_with_exact_counts_then_again_as_duplicates(engine, name, fmt, applied, unknown):
    add_customers(engine)
    add_sent(engine, "C0000001", "ebike-launch", "promotions")
    result = import_file(engine, DATA / name, fmt)
    assert (dict(result.applied), result.unknown_recipients, result.duplicates) == (applied, unknown, 0)
    # What the plan reads: the suppressing events per customer.
    suppressing = {(c, t) for c, t, *_ in events(engine) if t in ("email_bounced_hard", "email_complained", "email_unsubscribed")}
    assert ("C0000002", "email_bounced_hard") in suppressing
    assert ("C0000004", "email_complained") in suppressing and prefs(engine)[("C0000004", "*")] == (False, "esp-import")
    again = import_file(engine, DATA / name, fmt)
    assert (again.total_applied, again.duplicates) == (0, sum(applied.values()))


def test_sendgrid_group_unsubscribe_leaves_only_the_messages_topic(engine):
    add_customers(engine)
    add_sent(engine, "C0000001", "ebike-launch", "promotions")
    import_file(engine, DATA / "sendgrid_events.json", "sendgrid")
    got = prefs(engine)
    assert got[("C0000001", "promotions")] == (False, "esp-import") and ("C0000001", "*") not in got
    assert got[("C0000002", "*")] == (False, "esp-import")  # plain "unsubscribe" is global


def test_one_bad_event_in_an_export_is_recorded_and_the_others_applied(engine, tmp_path):
    add_customers(engine)
    bad = tmp_path / "mailgun.json"
    page = json.loads((DATA / "mailgun_events.json").read_text())
    page["items"][4]["timestamp"] = "last tuesday"
    bad.write_text(json.dumps(page, indent=2))
    result = import_file(engine, bad, "mailgun")
    assert [(b.index, b.field) for b in result.invalid] == [(4, "timestamp")] and result.invalid[0].line > 1
    assert result.total_applied == 6  # the other six valid events of the page
    with engine.connect() as conn:
        row = conn.execute(select(FeedbackReject.__table__)).mappings().one()
    assert (row["provider"], row["source"], row["position"], row["field"]) == ("mailgun", str(bad), 4, "timestamp")
    assert json.loads(row["raw_event"])["timestamp"] == "last tuesday"  # the provider's event, kept
    with pytest.raises(ValidationError):
        import_file(engine, bad, "mailgun", strict=True)


def test_an_unreadable_export_file_writes_nothing(engine, tmp_path):
    add_customers(engine)
    bad = tmp_path / "mailgun.json"
    bad.write_text((DATA / "mailgun_events.json").read_text()[:-40])
    with pytest.raises(ValidationError) as exc:
        import_file(engine, bad, "mailgun")
    assert exc.value.problems[0].file == str(bad) and "invalid JSON" in exc.value.problems[0].message
    assert events(engine) == [] and prefs(engine) == {}


def test_cli_import_prints_counts_and_fails_with_exit_code_4(project, engine, tmp_path):
    add_customers(engine)
    runner = CliRunner()
    ok = runner.invoke(cli, ["-p", str(project.root), "feedback", "import", str(DATA / "ses_events.jsonl"),
                             "--format", "ses", "--json"])
    assert ok.exit_code == 0, ok.output
    out = json.loads(ok.output)
    assert out["applied"] == {"bounced_hard": 2, "bounced_soft": 1, "clicked": 1, "complained": 1, "delivered": 1, "opened": 1}
    text = runner.invoke(cli, ["-p", str(project.root), "feedback", "import", str(DATA / "ses_events.jsonl"), "--format", "ses"])
    assert text.exit_code == 0 and "0 new, 7 already stored" in text.output
    bad = tmp_path / "bad.jsonl"
    shutil.copy(DATA / "ses_events.jsonl", bad)
    bad.write_text(bad.read_text().replace('"bounceType": "Transient", ', ""))
    fail = runner.invoke(cli, ["-p", str(project.root), "feedback", "import", str(bad), "--format", "ses"])
    assert fail.exit_code == 4
    assert f"{bad}:4: field 'bounceType': event #3: is missing" in fail.output
    assert "the valid events were applied, the invalid ones recorded" in fail.output


def test_cli_dry_run_writes_nothing(project, engine):
    add_customers(engine)
    out = CliRunner().invoke(cli, ["-p", str(project.root), "feedback", "import", str(DATA / "sendgrid_events.csv"),
                                   "--format", "sendgrid", "--dry-run"])
    assert out.exit_code == 0 and "3 valid event(s), 0 invalid; nothing written" in out.output
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Event.__table__)).scalar_one() == 0
