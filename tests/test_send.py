"""relmail send: every send decision is delivered once, opted-out people never, broken e-mails never."""

from __future__ import annotations

import email
from datetime import timedelta
from email import policy

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select, update
from tests.sendkit import AS_OF, WINDOW, build, edit_template

from relmail.cli import cli
from relmail.feedback import apply_events
from relmail.feedback.events import FeedbackEvent
from relmail.planning.why import explain, format_explanations
from relmail.sending import ledger
from relmail.sending.run import send
from relmail.store.models import Decision, Delivery, Event, Preference

NOW = lambda: AS_OF  # noqa: E731


def outbox(project):
    return sorted((project.root / "outbox").glob("*.eml"))


def decisions(engine, action=None):
    D = Decision.__table__
    q = select(D.c.customer_id, D.c.message_id, D.c.action, D.c.reasons)
    if action:
        q = q.where(D.c.action == action)
    with engine.connect() as conn:
        return conn.execute(q).all()


def test_send_delivers_every_send_decision_once_and_a_rerun_sends_nothing(project):
    engine = build(project)
    first = send(project, engine, "sendtest", WINDOW, now=NOW)
    sends = decisions(engine, "send")
    assert first.planned_now and len(sends) > 50
    assert first.done["accepted"] == len(sends) == len(outbox(project))
    again = send(project, engine, "sendtest", WINDOW, now=NOW)
    assert again.done == {} and not again.planned_now
    assert len(outbox(project)) == len(sends)
    with engine.connect() as conn:
        sent = conn.execute(select(Event.__table__.c.customer_id).where(Event.__table__.c.type == "email_sent",
                                                                        Event.__table__.c.run_id == "sendtest:2026-W48")).scalars().all()
    assert sorted(sent) == sorted(c for c, *_ in sends)


def test_each_eml_is_addressed_to_its_customer_with_one_click_unsubscribe(project):
    engine = build(project)
    send(project, engine, "sendtest", WINDOW, now=NOW)
    from relmail.store.models import Customer

    with engine.connect() as conn:
        emails = dict(conn.execute(select(Customer.__table__.c.id, Customer.__table__.c.email)).all())
    for path in outbox(project)[:20]:
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        customer = msg["X-Relmail-Customer"]
        assert msg["To"].addresses[0].addr_spec == emails[customer]
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg["List-Unsubscribe"].startswith("<https://")


def test_limit_and_resume_hand_over_the_rest_exactly_once(project):
    engine = build(project)
    part = send(project, engine, "sendtest", WINDOW, limit=10, batch_size=4, now=NOW)
    assert part.done["accepted"] == 10 and len(outbox(project)) == 10
    rest = send(project, engine, "sendtest", WINDOW, now=NOW)
    assert part.done["accepted"] + rest.done["accepted"] == len(decisions(engine, "send")) == len(outbox(project))


def test_a_crash_leaves_claimed_mail_resumable_not_lost(project):
    engine = build(project)
    send(project, engine, "sendtest", WINDOW, limit=1, now=NOW)
    # a sender died after claiming a batch, before the point of no return
    ledger.claim(engine, "sendtest:2026-W48", AS_OF, limit=5)
    result = send(project, engine, "sendtest", WINDOW, now=NOW)
    assert result.recovered == {"requeued": 5, "answered": 0, "assumed_delivered": 0}
    assert len(outbox(project)) == len(decisions(engine, "send"))
    assert ledger.status_counts(engine, "sendtest:2026-W48") == {"accepted": len(decisions(engine, "send"))}


def test_an_opt_out_after_planning_is_never_mailed(project):
    engine = build(project)
    send(project, engine, "sendtest", WINDOW, limit=1, now=NOW)
    victim = decisions(engine, "send")[-1][0]
    with engine.begin() as conn:
        conn.execute(insert(Preference.__table__).values(customer_id=victim, topic="*", opted_in=False, updated_at=AS_OF,
                                                          source="unsubscribe-link"))
    send(project, engine, "sendtest", WINDOW, now=NOW)
    assert not any(victim in p.read_text() for p in outbox(project))
    D = Delivery.__table__
    with engine.connect() as conn:
        status, error = conn.execute(select(D.c.status, D.c.last_error).where(D.c.customer_id == victim)).one()
    assert status == "withdrawn" and "opted out" in error
    # why says the e-mail planned as a send was not delivered, and why.
    facts, (exp,) = explain(engine, victim, "sendtest:2026-W48")
    assert exp.action == "send" and exp.delivery["status"] == "withdrawn" and exp.as_dict()["delivery"]["error"] == error
    assert f"  delivery: withdrawn ({error})" in format_explanations(facts, [exp])


def test_a_delivery_names_the_adapter_that_carried_it_and_why_says_it(project):
    # Which provider carried an e-mail: the adapter's registry name, written when the send claims the delivery.
    engine = build(project)
    send(project, engine, "sendtest", WINDOW, now=NOW)
    D = Delivery.__table__
    with engine.connect() as conn:
        assert set(conn.execute(select(D.c.status, D.c.adapter)).all()) == {("accepted", "file")}
    customer = decisions(engine, "send")[0][0]
    facts, explanations = explain(engine, customer, "sendtest:2026-W48")
    sent = next(e for e in explanations if e.action == "send")
    assert sent.as_dict()["delivery"]["adapter"] == "file"
    assert "  delivery: accepted via file, " in format_explanations(facts, explanations)


def test_why_says_what_came_back_of_a_sent_e_mail(project):
    # A hard bounce, a complaint or opens arrive as events after the send; the delivery row stays "accepted".
    # why said no more than that, so a bounced customer's e-mail read as delivered.
    engine = build(project)
    send(project, engine, "sendtest", WINDOW, now=NOW)
    (customer, message), other = decisions(engine, "send")[0][:2], decisions(engine, "send")[1]
    run = "sendtest:2026-W48"
    tied = {"customer_id": customer, "run_id": run, "message_id": message}
    at = AS_OF + timedelta(hours=2)
    apply_events(engine, [FeedbackEvent("bounced_hard", at, "x@example.com", "sendgrid", "b1", **tied),
                          FeedbackEvent("opened", at - timedelta(minutes=5), "x@example.com", "sendgrid", "o1", **tied),
                          FeedbackEvent("opened", at + timedelta(hours=1), "x@example.com", "sendgrid", "o2", **tied),
                          FeedbackEvent("delivered", at, "y@example.com", "sendgrid", "d1",
                                        customer_id=other[0], run_id=run, message_id=other[1])])
    facts, explanations = explain(engine, customer, run)
    sent = next(e for e in explanations if e.action == "send")
    text = format_explanations(facts, explanations)
    assert f"  came back: hard bounce {at:%Y-%m-%d %H:%M} UTC; opened 2 times, first {at - timedelta(minutes=5):%Y-%m-%d %H:%M} UTC" in text
    assert [(c["type"], c["n"]) for c in sent.as_dict()["delivery"]["came_back"]] == [("bounced_hard", 1), ("opened", 2)]


def test_why_does_not_say_a_bounce_came_back_of_an_email_refused_at_send(project):
    engine = build(project)
    run = "sendtest:2026-W48"
    from relmail.planning.run import plan

    plan(project, engine, "sendtest", WINDOW, as_of=AS_OF)
    at = AS_OF + timedelta(hours=1)
    ledger.prepare(engine, run, at)
    claim = ledger.claim(engine, run, at, limit=1)[0]
    ledger.record(engine, [ledger.Settlement(claim.delivery_id, "rejected", reason="550 5.1.1 no such user",
                                             hard_bounce=True)], at, {})
    text = format_explanations(*explain(engine, claim.customer_id, run))
    assert "  delivery: rejected (550 5.1.1 no such user)" in text
    assert f"  recorded at send: hard bounce {at:%Y-%m-%d %H:%M} UTC" in text and "came back" not in text


@pytest.mark.parametrize("kind", ["email_bounced_hard", "email_complained"])
def test_a_bounce_or_complaint_recorded_after_the_plan_is_never_mailed_whatever_its_date(project, kind):
    # A bounce mailbox read on Saturday holds Friday's bounce: dated before the plan's as-of, recorded after the
    # plan was made. The plan never saw it, so the send must not trust the date to say what the plan knew.
    engine = build(project)
    send(project, engine, "sendtest", WINDOW, limit=1, now=NOW)
    victim = decisions(engine, "send")[-1][0]
    with engine.begin() as conn:
        conn.execute(insert(Event.__table__).values(customer_id=victim, type=kind, occurred_at=AS_OF - timedelta(hours=2)))
    send(project, engine, "sendtest", WINDOW, now=NOW)
    assert not any(victim in p.read_text() for p in outbox(project))
    D = Delivery.__table__
    with engine.connect() as conn:
        status, error = conn.execute(select(D.c.status, D.c.last_error).where(D.c.customer_id == victim)).one()
    assert status == "withdrawn" and error == f"SUPPRESSED: {kind} after the plan"


def test_the_summary_and_the_report_count_opt_outs_honoured_as_withdrawn_not_failed(project, monkeypatch):
    # A marketer read "failed 2" after a send and took it for a fault: they were the customers who
    # unsubscribed or complained between the plan and the send, withdrawn on purpose.
    engine = build(project)
    monkeypatch.setenv("RELMAIL_NOW", AS_OF.isoformat())
    args = ["-p", str(project.root), "send", "sendtest", "--window", WINDOW, "--workers", "1"]
    assert CliRunner().invoke(cli, [*args, "--limit", "1"]).exit_code == 0
    left, spam = [c for c, *_ in decisions(engine, "send")][-2:]
    with engine.begin() as conn:
        conn.execute(insert(Preference.__table__).values(customer_id=left, topic="*", opted_in=False, updated_at=AS_OF,
                                                          source="unsubscribe-link"))
        conn.execute(insert(Event.__table__).values(customer_id=spam, type="email_complained", occurred_at=AS_OF))
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    assert ("2 e-mail(s) withdrawn, not sent on purpose: the customer opted out, complained, hard-bounced or was "
            "removed from the shop after the plan (relmail why CUSTOMER --run sendtest:2026-W48 says when).") in out.output
    assert "failed                 0" in out.output.splitlines()
    report = CliRunner().invoke(cli, ["-p", str(project.root), "report", "sendtest:2026-W48", "--out", str(project.root / "r.html")])
    assert report.exit_code == 0, report.output
    assert ", 0 failed, 2 withdrawn (opted out, complained or hard-bounced after the plan)" in report.output


def test_a_hard_bounce_before_a_later_delivery_does_not_stop_the_send(project):
    # The plan's HARD_BOUNCE rule: a delivery, open or click after the bounce shows the address works again.
    engine = build(project)
    send(project, engine, "sendtest", WINDOW, limit=1, now=NOW)
    victim = decisions(engine, "send")[-1][0]
    with engine.begin() as conn:
        conn.execute(insert(Event.__table__), [
            {"customer_id": victim, "type": "email_bounced_hard", "occurred_at": AS_OF - timedelta(days=40)},
            {"customer_id": victim, "type": "email_opened", "occurred_at": AS_OF - timedelta(days=3)}])
    send(project, engine, "sendtest", WINDOW, now=NOW)
    assert any(victim in p.read_text() for p in outbox(project))


def test_a_template_failing_for_one_customer_marks_render_error_and_the_batch_goes_on(project):
    engine = build(project)
    edit_template(project, "newsletter", "{% block content %}", "{% block content %}{{ customer.attributes.city.upper() }}")
    with engine.begin() as conn:
        from relmail.store.models import Customer

        C = Customer.__table__
        victim = conn.execute(select(C.c.id).order_by(C.c.id).limit(1)).scalar_one()
        conn.execute(update(C).where(C.c.id == victim).values(attributes={}))
    result = send(project, engine, "sendtest", WINDOW, now=NOW)
    assert [(c, m) for c, m, _ in result.render_errors] == [(victim, "sendtest-news")]
    assert result.done["accepted"] == len(outbox(project)) > 50
    (row,) = [d for d in decisions(engine) if d[0] == victim]
    assert row[2] == "suppress" and "RENDER_ERROR" in row[3]
    # why names what failed, as the send reported it.
    facts, (exp,) = explain(engine, victim, "sendtest:2026-W48")
    sentence = dict(exp.because)["RENDER_ERROR"]
    assert sentence.startswith("the e-mail could not be rendered for this customer") and "undefined variable" in sentence
    assert "RENDER_ERROR: the e-mail could not be rendered" in format_explanations(facts, [exp])


def test_a_send_with_render_errors_exits_19_after_sending_the_rest_unless_allowed(project, monkeypatch):
    # A scheduled send whose template failed for a customer must not stay green: that customer got nothing.
    engine = build(project)
    edit_template(project, "newsletter", "{% block content %}", "{% block content %}{{ customer.attributes.city.upper() }}")
    monkeypatch.setenv("RELMAIL_NOW", AS_OF.isoformat())
    args = ["-p", str(project.root), "send", "sendtest", "--window", WINDOW, "--workers", "1"]
    assert CliRunner().invoke(cli, ["-p", str(project.root), "plan", "sendtest", "--window", WINDOW]).exit_code == 0
    first, second = sorted(c for c, m, *_ in decisions(engine, "send") if m == "sendtest-news")[:2]
    from relmail.store.models import Customer

    C = Customer.__table__
    with engine.begin() as conn:
        conn.execute(update(C).where(C.c.id.in_([first, second])).values(attributes={}))
    out = CliRunner().invoke(cli, [*args, "--only-customer", first])
    assert out.exit_code == 19, out.output
    assert (f"1 e-mail(s) failed to render and were not sent (more than --max-render-errors 0); first: customer {first}, "
            "message sendtest-news: ") in out.output
    out = CliRunner().invoke(cli, [*args, "--max-render-errors", "1"])
    assert out.exit_code == 0, out.output  # one more, within the allowance; everyone else got theirs
    assert len(outbox(project)) == len(decisions(engine, "send")) > 50
    assert sorted(c for c, m, a, r in decisions(engine) if m == "sendtest-news" and "RENDER_ERROR" in r) == [first, second]
    # Reported once: the next start has nothing left to send and nothing failed.
    assert CliRunner().invoke(cli, args).exit_code == 0


def test_dry_run_renders_everything_and_writes_nothing(project):
    engine = build(project)
    result = send(project, engine, "sendtest", WINDOW, dry_run=True, now=NOW)
    assert result.done["rendered"] > 50 and result.render_errors == []
    assert decisions(engine) == [] and outbox(project) == []


def test_proof_send_goes_only_to_the_seed_address_and_is_not_recorded(project):
    engine = build(project)
    send(project, engine, "sendtest", WINDOW, limit=1, now=NOW)
    customer = decisions(engine, "send")[5][0]
    result = send(project, engine, "sendtest", WINDOW, test_to="proof@fietsenwinkel.example", only_customers=[customer], now=NOW)
    assert result.done == {"rendered": 1, "accepted": 1}
    proofs = [p for p in outbox(project) if p.name.startswith("proof")]
    assert len(proofs) == 1
    msg = email.message_from_bytes(proofs[0].read_bytes(), policy=policy.default)
    assert msg["To"].addresses[0].addr_spec == "proof@fietsenwinkel.example"
    assert msg["X-Relmail-Customer"] == customer
    assert ledger.status_counts(engine, "sendtest:2026-W48") == {"accepted": 1, "planned": len(decisions(engine, "send")) - 1}


@pytest.mark.parametrize("test_to, to", [
    ("proof@fietsenwinkel.example", "proof@fietsenwinkel.example"),
    ("Rita Reviewer <proof@fietsenwinkel.example>", "Rita Reviewer <proof@fietsenwinkel.example>"),
], ids=["address", "reviewer-name"])
def test_a_proof_over_smtp_is_addressed_to_the_reviewer_alone_never_with_the_customers_name(project, tmp_path, monkeypatch,
                                                                                          test_to, to):
    # A reviewer received "To: Anna de Vries <proof@...>": a customer's name in someone else's inbox.
    from tests.sendkit import use_smtp
    from tests.smtp_server import PASSWORD, SmtpServer

    from relmail.planning.run import plan
    from relmail.project import Project
    from relmail.store.models import Customer

    monkeypatch.setenv("RELMAIL_SMTP_PASSWORD", PASSWORD)
    engine = build(project)
    plan(project, engine, "sendtest", WINDOW, as_of=AS_OF)
    C = Customer.__table__
    with engine.connect() as conn:
        named = dict(conn.execute(select(C.c.id, C.c.first_name).where(C.c.first_name.is_not(None), C.c.last_name.is_not(None))).all())
    customer = next(c for c, *_ in decisions(engine, "send") if c in named)
    with SmtpServer(tmp_path) as server:
        use_smtp(project, server)
        result = send(Project.load(project.root), engine, "sendtest", WINDOW, test_to=test_to, only_customers=[customer], now=NOW)
        (received,) = server.handler.messages
    assert result.done == {"rendered": 1, "accepted": 1}
    assert received.rcpt_tos == ["proof@fietsenwinkel.example"]
    msg = email.message_from_bytes(received.data, policy=policy.default)
    assert msg["To"] == to and msg["X-Relmail-Customer"] == customer
    # What the customer would read, their name included, is still what the reviewer reads.
    assert named[customer] in msg["Subject"]


def test_a_proof_to_something_that_is_not_one_address_is_refused_before_anything_is_sent(project):
    from relmail.errors import ValidationError

    engine = build(project)
    for test_to in ("proof at fietsenwinkel.example", "a@fietsenwinkel.example, b@fietsenwinkel.example"):
        with pytest.raises(ValidationError, match="is not one e-mail address"):
            send(project, engine, "sendtest", WINDOW, test_to=test_to, now=NOW)
    assert outbox(project) == [] and decisions(engine) == []


def test_a_proofs_links_and_metadata_belong_to_the_proof_run_not_to_the_customer(project, monkeypatch):
    """The proof shows a customer's data, but its unsubscribe link, its run header and its provider metadata
    are the proof run's: clicking the link or a bounce of the tester's mailbox cannot opt the customer out."""
    import re

    from werkzeug.test import Client

    from relmail import tokens
    from relmail.delivery.file import FileAdapter
    from relmail.web.app import make_app

    engine = build(project)
    send(project, engine, "sendtest", WINDOW, limit=1, now=NOW)
    customer = decisions(engine, "send")[5][0]
    handed = []
    real_send = FileAdapter.send
    monkeypatch.setattr(FileAdapter, "send", lambda self, messages: handed.extend(messages) or real_send(self, messages))
    send(project, engine, "sendtest", WINDOW, test_to="proof@fietsenwinkel.example", only_customers=[customer], now=NOW)
    (proof,) = [p for p in outbox(project) if p.name.startswith("proof")]
    msg = email.message_from_bytes(proof.read_bytes(), policy=policy.default)
    assert msg["X-Relmail-Run"] == tokens.PROOF_RUN and msg["X-Relmail-Customer"] == customer
    assert [m.metadata["relmail_run"] for m in handed] == [tokens.PROOF_RUN]
    link = re.search(r"<(https?://[^>]+/unsubscribe/([^>]+))>", msg["List-Unsubscribe"])
    claims = tokens.verify(project.secret("signing_key"), link.group(2), project.settings.name)
    assert (claims.customer_id, claims.run_id, claims.trial) == (customer, tokens.PROOF_RUN, True)
    before = decisions(engine)
    with engine.connect() as conn:
        prefs_before = conn.execute(select(Preference.__table__)).all()
    answer = Client(make_app(project, engine)).post(f"/unsubscribe/{link.group(2)}", data="List-Unsubscribe=One-Click",
                                                    content_type="application/x-www-form-urlencoded")
    assert answer.status_code == 200
    with engine.connect() as conn:
        assert conn.execute(select(Preference.__table__)).all() == prefs_before
    assert decisions(engine) == before
    # The customer's own e-mail of the run carries the run's token.
    (own,) = [p for p in outbox(project) if not p.name.startswith("proof")]
    own_link = re.search(r"/unsubscribe/([^>]+)>", email.message_from_bytes(own.read_bytes(), policy=policy.default)["List-Unsubscribe"])
    assert tokens.verify(project.secret("signing_key"), own_link.group(1), project.settings.name).run_id == "sendtest:2026-W48"


def test_proof_send_of_a_suppressed_customer_is_refused(project):
    engine = build(project)
    send(project, engine, "sendtest", WINDOW, limit=1, now=NOW)
    suppressed = decisions(engine, "suppress")[0][0]
    from relmail.errors import NotFound

    with pytest.raises(NotFound, match="never mailed"):
        send(project, engine, "sendtest", WINDOW, test_to="proof@fietsenwinkel.example", only_customers=[suppressed], now=NOW)


def test_cli_send_prints_the_ledger_and_json(project):
    build(project)
    runner = CliRunner()
    out = runner.invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW, "--json"])
    assert out.exit_code == 0, out.output
    import json

    summary = json.loads(out.output)
    assert summary["run"] == "sendtest:2026-W48"
    assert summary["states"] == {"accepted": summary["done"]["accepted"]}


def test_api_adapters_see_the_rendered_headers_and_the_run_metadata(project):
    from relmail.campaigns import load_campaign
    from relmail.sending.batcher import Batcher, outgoing

    engine = build(project, customers=40)
    send(project, engine, "sendtest", WINDOW, limit=1, now=NOW)
    customer = decisions(engine, "send")[0][0]
    batcher = Batcher(project, engine, load_campaign(project, "sendtest"), "sendtest:2026-W48", AS_OF)
    emails, errors = batcher.render([(customer, "sendtest-news")])
    email_, ctx = emails[(customer, "sendtest-news")]
    msg = outgoing(email_, ctx, project.settings, "d1", "sendtest:2026-W48")
    assert msg.headers["Message-ID"] == email_.rfc_message_id
    assert msg.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.headers["List-Unsubscribe"].startswith("<https://fietsenwinkel.example/relmail/unsubscribe/")
    assert dict(msg.metadata) == {"relmail_customer": customer, "relmail_run": "sendtest:2026-W48",
                                  "relmail_message": "sendtest-news"}


def test_a_project_renamed_after_a_send_still_honours_the_links_in_its_e_mails(project):
    """A token names its project; the links already in inboxes keep working under the project's new name."""
    from werkzeug.test import Client

    from relmail.project import Project
    from relmail.web.app import make_app

    engine = build(project)
    send(project, engine, "sendtest", WINDOW, now=NOW)
    msg = email.message_from_bytes(outbox(project)[0].read_bytes(), policy=policy.default)
    link = str(msg["List-Unsubscribe"]).split(",")[0].strip("<> ")
    path = "/unsubscribe/" + link.rsplit("/unsubscribe/", 1)[1]
    toml = project.root / "relmail.toml"
    toml.write_text(toml.read_text().replace(f'name = "{project.settings.name}"', 'name = "Fietsenwinkel & Zonen"', 1))
    renamed = Project.load(project.root)
    assert renamed.settings.name == "Fietsenwinkel & Zonen"
    answer = Client(make_app(renamed, engine)).post(path, data="List-Unsubscribe=One-Click",
                                                    content_type="application/x-www-form-urlencoded")
    assert answer.status_code == 200
    P = Preference.__table__
    with engine.connect() as conn:
        opted = conn.execute(select(P.c.opted_in).where(P.c.customer_id == msg["X-Relmail-Customer"], P.c.source == "unsubscribe-link")).all()
    assert opted and not any(o for (o,) in opted)
