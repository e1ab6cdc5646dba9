"""``relmail send`` through the Mailjet adapter (``responses`` at the HTTP boundary), and its events tied back."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import responses
from click.testing import CliRunner
from sqlalchemy import select
from tests.sendkit import AS_OF, RUN, WINDOW, build, ledger_pairs

from relmail.cli import cli
from relmail.feedback import ingest, provider
from relmail.feedback.records import Record
from relmail.store.models import Delivery, Event

URL = "https://api.mailjet.com/v3.1/send"
SECRET = "mj-secret-key-e2e"


@pytest.fixture
def mailjet_project(project, monkeypatch):
    monkeypatch.setenv("RELMAIL_ESP_API_KEY", "mj-api-key-e2e")
    monkeypatch.setenv("RELMAIL_ESP_API_SECRET", SECRET)
    engine = build(project, customers=120)
    toml = project.root / "relmail.toml"
    toml.write_text(toml.read_text().replace('adapter = "file"', 'adapter = "mailjet"')
                    + '\n[delivery.mailjet]\ntrack_clicks = "disabled"\n')
    return project, engine


#: Some of the headers Mailjet's guide lists as forbidden in ``Headers`` (its send-0011), lower case.
FORBIDDEN = {"message-id", "date", "list-id", "x-feedback-id", "reply-to", "x-mj-customid"}


def _answer(request):
    """Mailjet's answer: every message accepted with its own MessageID, except one invalid address and any message
    with a forbidden header."""
    items = json.loads(request.body)["Messages"]
    entries = []
    for item in items:
        number = int(item["CustomID"][1:])
        refused = sorted(h for h in item.get("Headers", {}) if h.lower() in FORBIDDEN)
        if refused:
            entries.append({"Status": "error", "Errors": [{"ErrorIdentifier": "x", "ErrorCode": "send-0011", "StatusCode": 400,
                                                          "ErrorMessage": f"Header {refused[0]!r} is forbidden",
                                                          "ErrorRelatedTo": [f"Headers[\"{refused[0]}\"]"]}]})
        elif number == 7:
            entries.append({"Status": "error", "Errors": [{"ErrorIdentifier": "x", "ErrorCode": "mj-0013", "StatusCode": 400,
                                                          "ErrorMessage": "invalid email address", "ErrorRelatedTo": ["To[0].Email"]}]})
        else:
            entries.append({"Status": "success", "CustomID": item["CustomID"], "To": [
                {"Email": item["To"][0]["Email"], "MessageUUID": f"u-{number}", "MessageID": 9_000_000_000 + number,
                 "MessageHref": f"https://api.mailjet.com/v3/REST/message/{9_000_000_000 + number}"}]})
    status = 400 if any(e["Status"] == "error" for e in entries) else 200
    return status, {}, json.dumps({"Messages": entries})


def _send(project):
    return CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW, "--json"])


@responses.activate
def test_relmail_send_through_mailjet_hands_each_email_over_once_and_ties_its_events_back(mailjet_project):
    project, engine = mailjet_project
    responses.add_callback(responses.POST, URL, callback=_answer)
    out = _send(project)
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output)
    bodies = [json.loads(c.request.body) for c in responses.calls]
    items = [i for b in bodies for i in b["Messages"]]
    assert all(len(b["Messages"]) <= 50 for b in bodies) and len(bodies) >= 2
    keys = [i["CustomID"] for i in items]
    assert len(keys) == len(set(keys)) == summary["done"]["accepted"] + summary["done"]["rejected"]
    for item in items:
        assert item["Headers"]["List-Unsubscribe"].startswith("<https://fietsenwinkel.example/relmail/unsubscribe/")
        assert item["Headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "Message-ID" not in item["Headers"] and item["TrackClicks"] == "disabled"  # Mailjet writes its own
        assert json.loads(item["EventPayload"])["relmail_run"] == RUN
    assert summary["done"]["rejected"] == 1  # d7's address, as Mailjet answered for it alone

    sends, accepted, sent = ledger_pairs(engine)
    assert len(accepted) == len(sends) - 1 and accepted == sent
    D = Delivery.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(D.c.id, D.c.customer_id, D.c.message_id, D.c.provider_id, D.c.status)).all()
    assert {r.provider_id for r in rows if r.status == "accepted"} == {str(9_000_000_000 + r.id) for r in rows if r.status == "accepted"}

    # A re-run hands nothing over again.
    calls = len(responses.calls)
    assert _send(project).exit_code == 0 and len(responses.calls) == calls

    # A bounce that carries only Mailjet's MessageID (no payload) finds its delivery, and so its run and message.
    target = next(r for r in rows if r.status == "accepted")
    event = {"event": "bounce", "time": int((AS_OF + timedelta(hours=2)).timestamp()), "MessageID": 9_000_000_000 + target.id, "email": "someone@else.example",
             "CustomID": f"d{target.id}", "Payload": "", "hard_bounce": True, "blocked": True,
             "error_related_to": "recipient", "error": "user unknown"}
    batch = provider("mailjet", now=lambda: AS_OF + timedelta(days=1)).parse_records([Record(0, event)], "webhook")
    assert not batch.invalid, batch.invalid
    result = ingest(engine, batch)
    assert result.applied == {"bounced_hard": 1}
    E = Event.__table__
    with engine.connect() as conn:
        stored = conn.execute(select(E.c.customer_id, E.c.run_id, E.c.message_id).where(E.c.event_id.like("mailjet:%"))).one()
    assert tuple(stored) == (target.customer_id, RUN, target.message_id)


@responses.activate
def test_a_refused_key_stops_relmail_send_with_exit_7_and_never_prints_the_secret(mailjet_project):
    project, engine = mailjet_project
    responses.add(responses.POST, URL, status=401, json={"ErrorIdentifier": "x", "ErrorCode": "mj-0015", "StatusCode": 401,
                                                         "ErrorMessage": "API key authentication/authorization failure."})
    out = _send(project)
    assert out.exit_code == 7, out.output
    assert "esp_api_secret" in out.output and SECRET not in out.output
    assert len(responses.calls) == 1
    _, accepted, _ = ledger_pairs(engine)
    assert accepted == []  # every e-mail waits for the fix; the next 'relmail send' resumes
    responses.reset()
    responses.add_callback(responses.POST, URL, callback=_answer)
    time.sleep(1.1)  # the ledger never retries within the second of the answer
    again = _send(project)
    assert again.exit_code == 0, again.output
    sends, accepted, _ = ledger_pairs(engine)
    assert len(accepted) == len(sends) - 1


def _stray_bounce(item: dict, date) -> bytes:
    """A DSN that reached the shop's mailbox (sent to the From address): the e-mail's headers as Mailjet sent them,
    with Mailjet's own Message-ID and the custom headers of ``Headers``."""
    returned = (f"Message-ID: <{item['CustomID']}.mailjet@mailjet.com>\nFrom: {item['From']['Email']}\n"
                f"To: {item['To'][0]['Email']}\nSubject: {item['Subject']}\n"
                + "".join(f"{k}: {v}\n" for k, v in item["Headers"].items()))
    return (f"Date: {date:%a, %d %b %Y %H:%M:%S +0000}\nFrom: MAILER-DAEMON@mx.example\n"
            f"To: {item['From']['Email']}\nMessage-ID: <stray-{item['CustomID']}@mx.example>\nMIME-Version: 1.0\n"
            "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\nContent-Type: text/plain\n\n"
            "The mail system\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n\n"
            "Final-Recipient: rfc822; gone@elsewhere.example\nAction: failed\nStatus: 5.1.1\n"
            "Diagnostic-Code: smtp; 550 5.1.1 User unknown\n\n"
            f"--b\nContent-Type: text/rfc822-headers\n\n{returned}\n--b--\n").encode()


@responses.activate
def test_a_bounce_in_the_shops_mailbox_finds_its_mailjet_email_by_the_relmail_message_id_it_returns(mailjet_project, tmp_path):
    """Mailjet writes the Message-ID itself; the one relmail rendered travels as X-Relmail-Message-ID."""
    project, engine = mailjet_project
    responses.add_callback(responses.POST, URL, callback=_answer)
    assert _send(project).exit_code == 0
    items = [i for c in responses.calls for i in json.loads(c.request.body)["Messages"]]
    D = Delivery.__table__
    with engine.connect() as conn:
        ledger = {f"d{r.id}": r for r in conn.execute(select(D.c.id, D.c.customer_id, D.c.message_id, D.c.rfc_message_id,
                                                                  D.c.status))}
    item = next(i for i in items if ledger[i["CustomID"]].status == "accepted")
    target = ledger[item["CustomID"]]
    assert item["Headers"]["X-Relmail-Message-ID"] == target.rfc_message_id

    # Another recipient's address in the report: only the returned header can name the delivery.
    (tmp_path / "bounce.eml").write_bytes(_stray_bounce(item, AS_OF + timedelta(hours=3)))
    out = CliRunner().invoke(cli, ["-p", str(project.root), "feedback", "bounces", str(tmp_path / "bounce.eml"), "--json"])
    assert out.exit_code == 0, out.output
    assert "sends through Mailjet" in out.stderr and "/webhooks/mailjet" in out.stderr
    result = json.loads(out.stdout)
    assert result["applied"] == {"bounced_hard": 1} and result["matched_by"] == {"message-id": 1}
    E = Event.__table__
    with engine.connect() as conn:
        stored = conn.execute(select(E.c.customer_id, E.c.run_id, E.c.message_id)
                              .where(E.c.type == "email_bounced_hard", E.c.event_id.like("smtp:%"))).one()
    assert tuple(stored) == (target.customer_id, RUN, target.message_id)


@responses.activate
def test_an_email_mailjet_answered_with_a_uuid_only_is_found_by_the_message_guid_of_its_events(mailjet_project):
    project, engine = mailjet_project

    def uuid_only(request):
        items = json.loads(request.body)["Messages"]
        return 200, {}, json.dumps({"Messages": [{"Status": "success", "CustomID": i["CustomID"], "To": [
            {"Email": i["To"][0]["Email"], "MessageUUID": f"1ab23cd4-e567-8901-2345-{int(i['CustomID'][1:]):012d}"}]}
            for i in items]})

    responses.add_callback(responses.POST, URL, callback=uuid_only)
    assert _send(project).exit_code == 0
    D = Delivery.__table__
    with engine.connect() as conn:
        target = conn.execute(select(D.c.id, D.c.customer_id, D.c.message_id, D.c.provider_id)
                              .where(D.c.status == "accepted").order_by(D.c.id)).first()
    assert target.provider_id == f"1ab23cd4-e567-8901-2345-{target.id:012d}"
    event = {"event": "spam", "time": int((AS_OF + timedelta(hours=2)).timestamp()), "email": "someone@else.example",
             "Message_GUID": target.provider_id, "CustomID": f"d{target.id}", "Payload": "", "source": "JMRPP"}
    batch = provider("mailjet", now=lambda: AS_OF + timedelta(days=1)).parse_records([Record(0, event)], "webhook")
    assert not batch.invalid and batch.events[0].sent_id == target.provider_id
    assert ingest(engine, batch).applied == {"complained": 1}
    E = Event.__table__
    with engine.connect() as conn:
        stored = conn.execute(select(E.c.customer_id, E.c.run_id, E.c.message_id).where(E.c.event_id.like("mailjet:%"))).one()
    assert tuple(stored) == (target.customer_id, RUN, target.message_id)
