"""What ESP events and errors mean, checked through the CLI and the adapters (one test per defect of issue 23)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import responses
from click.testing import CliRunner
from sqlalchemy import select

from delivery_messages import FakeTime, message
from relmail.cli import cli
from relmail.delivery import DeliveryAborted, get_adapter
from relmail.errors import ConfigError, UnsupportedFeature
from relmail.store.models import Customer, Event, Preference

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
SENDGRID = "https://api.sendgrid.com/v3/mail/send"
MAILGUN = "https://api.mailgun.net/v3/mg.fietsenwinkel.example"


def add_customers(engine, *emails: str) -> None:
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [
            {"id": f"C{i}", "email": email, "created_at": T0, "attributes": {}} for i, email in enumerate(emails, 1)])


def stored(engine) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(customer, event type) rows and (customer, topic) opt-outs."""
    E, P = Event.__table__, Preference.__table__
    with engine.connect() as conn:
        events = sorted(map(tuple, conn.execute(select(E.c.customer_id, E.c.type))))
        outs = sorted(map(tuple, conn.execute(select(P.c.customer_id, P.c.topic).where(P.c.opted_in.is_(False)))))
    return events, outs


def feedback_import(project, path, fmt):
    return CliRunner().invoke(cli, ["--project", str(project.root), "feedback", "import", str(path), "--format", fmt])


# -- 1. Postmark SpamNotification is the receiving filter's verdict, not a complaint ------

def test_postmark_spam_notification_is_a_block_and_keeps_consent(project, engine, tmp_path):
    add_customers(engine, "filtered@example.com", "complainer@example.com")
    bounce = {"RecordType": "Bounce", "ID": 7, "TypeCode": 512, "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
              "Email": "filtered@example.com", "BouncedAt": "2026-11-23T10:00:00Z", "Type": "SpamNotification"}
    complaint = {**bounce, "ID": 8, "RecordType": "SpamComplaint", "Type": "SpamComplaint", "TypeCode": 100001,
                 "Email": "complainer@example.com"}
    path = tmp_path / "postmark.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (bounce, complaint)) + "\n")
    assert feedback_import(project, path, "postmark").exit_code == 0
    events, outs = stored(engine)
    assert events == [("C1", "email_bounced_blocked"), ("C2", "email_complained")]
    assert outs == [("C2", "*")]  # only the recipient who complained left


# -- 1b. A refusal of the sender is a block, which REPEATED_SOFT_BOUNCE does not count -----

def _bounces(provider: str, address: str, blocked: bool) -> list[dict]:
    """Three e-mails to ``address`` that bounced, as ``provider`` reports a sender block or a full mailbox."""
    out = []
    for i in range(3):
        at = 1795428000 + i * 7 * 86400  # a week apart, as a weekly campaign is sent
        iso = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if provider == "sendgrid":
            # SendGrid reports both as blocks; its classification tells the mailbox's from the sender's.
            out.append({"email": address, "timestamp": at, "event": "bounce", "sg_event_id": f"sg-{i}", "type": "blocked",
                        "status": "5.7.1" if blocked else "4.2.2",
                        "reason": "550 5.7.1 blocked using Spamhaus" if blocked else "452 4.2.2 mailbox full",
                        "bounce_classification": "Reputation" if blocked else "Mailbox Unavailable"})
        elif provider == "mailgun":
            out.append({"event": "failed", "severity": "temporary", "id": f"mg-{i}", "timestamp": at,
                        "recipient": address, "reason": "espblock" if blocked else "generic",
                        "delivery-status": {"code": 421 if blocked else 452,
                                            "message": "4.7.0 deferred due to user complaints" if blocked
                                            else "4.2.2 The email account that you tried to reach is over quota"}})
        elif provider == "postmark":
            out.append({"RecordType": "Bounce", "ID": 100 + i, "Type": "Blocked" if blocked else "SoftBounce",
                        "TypeCode": 100006 if blocked else 4096, "MessageID": f"pm-{i}", "Email": address,
                        "BouncedAt": iso, "Details": "smtp; 452 4.2.2 mailbox full" if not blocked else "ISP block"})
        else:
            out.append({"eventType": "Bounce", "mail": {"messageId": f"ses-{i}", "destination": [address]},
                        "bounce": {"bounceType": "Transient", "bounceSubType": "ContentRejected" if blocked else "MailboxFull",
                                   "feedbackId": f"fb-{i}", "timestamp": iso,
                                   "bouncedRecipients": [{"emailAddress": address, "status": "5.7.1" if blocked else "4.2.2"}]}})
    return out


@pytest.mark.parametrize("provider", ["sendgrid", "mailgun", "postmark", "ses"])
def test_sender_blocks_are_stored_as_blocks_and_do_not_rest_the_address(project, engine, tmp_path, provider):
    """Three blocks of the sender leave the address mailable; three full-mailbox bounces rest it."""
    from relmail.features import compute_features

    add_customers(engine, "blocked@example.com", "full@example.com")
    path = tmp_path / f"{provider}.jsonl"
    rows = _bounces(provider, "blocked@example.com", True) + _bounces(provider, "full@example.com", False)
    for n, row in enumerate(rows):  # every event its own id
        for key in ("sg_event_id", "id", "ID"):
            if key in row:
                row[key] = f"{row[key]}-{n}" if isinstance(row[key], str) else row[key] + n
        if "feedbackId" in row.get("bounce", {}):
            row["bounce"]["feedbackId"] += f"-{n}"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = feedback_import(project, path, provider)
    assert result.exit_code == 0, result.output
    events, outs = stored(engine)
    assert events == [("C1", "email_bounced_blocked")] * 3 + [("C2", "email_bounced_soft")] * 3
    assert outs == []
    features = compute_features(engine, ["C1", "C2"], datetime(2027, 1, 1, tzinfo=UTC), {})
    assert features["soft_bounces"].tolist() == [0, 3]  # REPEATED_SOFT_BOUNCE fires at 3 for C2 only


# -- 2. SendGrid dropped reasons, matched exactly --------------------------------------

def test_sendgrid_dropped_invalid_smtpapi_header_suppresses_nobody_but_invalid_does(project, engine, tmp_path):
    add_customers(engine, "ok@example.com", "bad@example.com")
    events = [
        {"email": "ok@example.com", "timestamp": 1795428000, "event": "dropped", "reason": "Invalid SMTPAPI header", "sg_event_id": "d1"},
        {"email": "bad@example.com", "timestamp": 1795428000, "event": "dropped", "reason": "Invalid", "sg_event_id": "d2"},
    ]
    path = tmp_path / "sendgrid.json"
    path.write_text(json.dumps(events))
    assert feedback_import(project, path, "sendgrid").exit_code == 0
    assert stored(engine) == ([("C2", "email_bounced_hard")], [])


# -- 3. Each provider's documented limits, checked before sending ----------------------

@responses.activate
def test_a_campaign_named_like_its_message_sends_each_sendgrid_category_once():
    responses.add(responses.POST, SENDGRID, status=202, headers={"X-Message-Id": "m1"})
    sg = get_adapter("sendgrid", {}, {"esp_api_key": "k"}, clock=FakeTime().clock, sleep=FakeTime().sleep)
    [result] = sg.send([message(1, tags=("newsletter", "newsletter"))])
    assert result.status == "accepted"
    assert json.loads(responses.calls[0].request.body)["categories"] == ["newsletter"]


def test_sendgrid_limits_are_refused_before_anything_is_sent():
    sg = get_adapter("sendgrid", {}, {"esp_api_key": "k"})
    with pytest.raises(UnsupportedFeature, match="ASCII"):
        sg.send([message(1, tags=("nieuwsbrief-été",))])
    with pytest.raises(UnsupportedFeature, match="11 categories"):
        sg.send([message(1, tags=tuple(f"t{i}" for i in range(11)))])
    with pytest.raises(UnsupportedFeature, match="empty"):
        sg.send([message(1, text="", html="", raw=False)])
    with pytest.raises(ConfigError, match="ip_pool_name"):
        get_adapter("sendgrid", {"ip_pool_name": "x"}, {"esp_api_key": "k"})
    with pytest.raises(ConfigError, match="ip_pool_name"):
        get_adapter("sendgrid", {"ip_pool_name": "p" * 65}, {"esp_api_key": "k"})


def test_mailgun_limits_are_refused_before_anything_is_sent():
    mg = get_adapter("mailgun", {"domain": "mg.fietsenwinkel.example"}, {"esp_api_key": "k"})
    with pytest.raises(UnsupportedFeature, match="at most 128 characters"):
        mg.send([message(1, tags=("x" * 129,))])
    with pytest.raises(UnsupportedFeature, match="ASCII"):
        mg.send([message(1, tags=("zomer-actie-€",))])
    with pytest.raises(UnsupportedFeature, match="16,000"):
        mg.send([message(1, metadata={"relmail_customer": "C1", "note": "n" * 16_000})])


@responses.activate
def test_mailgun_tags_are_sent_once_each():
    responses.add(responses.POST, MAILGUN + "/messages.mime", json={"id": "<a@mg>"})
    mg = get_adapter("mailgun", {"domain": "mg.fietsenwinkel.example"}, {"esp_api_key": "k"})
    mg.send([message(1, tags=("weekly", "weekly"))])
    assert responses.calls[0].request.body.count(b'name="o:tag"') == 1


# -- 4. Account and domain refusals stop the run, everything deferred ---------------------

@responses.activate
def test_mailgun_domain_not_allowed_to_send_defers_everything_with_what_to_fix():
    refusal = {"message": "Domain mg.fietsenwinkel.example is not allowed to send: Free accounts are for test purposes only. "
                          "Please upgrade or add the address to authorized recipients in Account Settings."}
    responses.add(responses.POST, MAILGUN + "/messages", status=400, json=refusal)
    responses.add(responses.POST, MAILGUN + "/messages.mime", status=400, json=refusal)
    ft = FakeTime()
    mg = get_adapter("mailgun", {"domain": "mg.fietsenwinkel.example", "concurrency": 1}, {"esp_api_key": "k"},
                     clock=ft.clock, sleep=ft.sleep)
    with pytest.raises(DeliveryAborted, match="upgrade the Mailgun account") as info:
        mg.send([message(i, same_content=True) for i in range(1, 4)])
    assert [r.status for r in info.value.results] == ["deferred"] * 3  # nothing rejected for good
    assert len(responses.calls) == 1  # not retried message by message


@responses.activate
def test_mailgun_large_batch_refusal_is_not_called_bad_credentials():
    responses.add(responses.POST, MAILGUN + "/messages", status=403,
                  json={"message": "Domain mg.fietsenwinkel.example is not allowed to send large batches yet"})
    ft = FakeTime()
    mg = get_adapter("mailgun", {"domain": "mg.fietsenwinkel.example"}, {"esp_api_key": "k"}, clock=ft.clock, sleep=ft.sleep)
    with pytest.raises(DeliveryAborted) as info:
        mg.send([message(i, same_content=True) for i in range(1, 4)])
    assert "credentials" not in str(info.value) and "batch_identical = false" in str(info.value)
    assert [r.status for r in info.value.results] == ["deferred"] * 3


# -- 5. One odd event among valid ones: the valid ones are applied -------------------------

def test_feedback_import_applies_the_valid_events_and_reports_the_invalid_one_with_its_index(project, engine, tmp_path):
    add_customers(engine, "anna@example.com", "bram@example.com", "carla@example.com")
    events = [
        {"email": "anna@example.com", "timestamp": 1795428000, "event": "delivered", "sg_event_id": "e0"},
        {"email": "bram@example.com", "timestamp": 1795428000000, "event": "bounce", "type": "bounce", "sg_event_id": "e1"},
        {"email": "carla@example.com", "timestamp": 1795428000, "event": "spamreport"},  # no sg_event_id
    ]
    path = tmp_path / "sendgrid.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    result = feedback_import(project, path, "sendgrid")
    assert result.exit_code == 4
    assert f"{path}:3: field 'sg_event_id': event #2: is missing" in result.stderr
    assert stored(engine) == ([("C1", "email_delivered"), ("C2", "email_bounced_hard")], [])
