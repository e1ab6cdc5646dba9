"""Every documented event and error of the five ESPs, taken from their own examples (tests/fixtures/providers).

Each fixture file names its source (documentation page or SDK test data)
per entry. For events: what relmail records and what it does to consent;
for errors: whether the message is rejected for good, deferred and tried
again, or the run stops (every e-mail not yet accepted deferred) with a
message that says what to fix.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import responses
from sqlalchemy import select

from delivery_messages import FakeTime, message
from relmail.delivery import DeliveryAborted, get_adapter
from relmail.feedback import ingest, provider
from relmail.feedback.records import Record
from relmail.store.models import Customer, Event, Preference

FIXTURES = Path(__file__).parent / "fixtures" / "providers"
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

HARD, SOFT, DELIVERED, OPENED, CLICKED = "bounced_hard", "bounced_soft", "delivered", "opened", "clicked"
#: The receiving side refused the sender or the message, not the mailbox: stored, never counted as a soft bounce.
BLOCKED = "bounced_blocked"
COMPLAINED, UNSUBSCRIBED = "complained", "unsubscribed"

#: provider -> fixture name -> (relmail types recorded, consent withdrawn: None, "*" or a topic)
EVENTS = {
    "sendgrid": {
        "processed": ([], None), "dropped": ([HARD], None), "delivered": ([DELIVERED], None), "deferred": ([], None),
        "bounce": ([HARD], None), "blocked": ([BLOCKED], None), "bounce, classified Reputation": ([BLOCKED], None), "open": ([OPENED], None), "click": ([CLICKED], None),
        "spamreport": ([COMPLAINED], "*"), "unsubscribe": ([UNSUBSCRIBED], "*"),
        # No groups configured and no relmail metadata in the example: the message's topic is unknown, so every
        # topic is left (tests/test_sendgrid_groups.py: a project's groups).
        "group_unsubscribe": ([UNSUBSCRIBED], "*"),
        "group_resubscribe": ([], None),  # a group the project does not list: nothing known to opt back in
        "dropped: Invalid SMTPAPI header": ([], None),  # our request, not the address
        "dropped: Spam Content (if Spam Checker app is enabled)": ([], None),
        "dropped: Unsubscribed Address": ([UNSUBSCRIBED], "*"),
        "dropped: Bounced Address": ([HARD], None),
        "dropped: Spam Reporting Address": ([COMPLAINED], "*"),
        "dropped: Invalid": ([HARD], None),  # a bad address
        "dropped: Recipient List over Package Quota": ([], None),
        "delivered, millisecond timestamp": ([DELIVERED], None),
    },
    "mailgun": {
        "accepted": ([], None), "delivered": ([DELIVERED], None), "failed, permanent": ([HARD], None),
        "failed, temporary": ([SOFT], None), "rejected": ([], None), "complained": ([COMPLAINED], "*"),
        "unsubscribed": ([UNSUBSCRIBED], "*"), "opened": ([OPENED], None), "clicked": ([CLICKED], None),
        "failed, permanent, suppress-bounce": ([HARD], None),
        "failed, permanent, suppress-unsubscribe": ([UNSUBSCRIBED], "*"),
        "failed, permanent, suppress-complaint": ([COMPLAINED], "*"),
        "failed, temporary, espblock": ([BLOCKED], None), "failed, temporary, policy reply": ([BLOCKED], None),
    },
    "postmark": {
        "Bounce": ([HARD], None), "Delivery": ([DELIVERED], None), "Open": ([OPENED], None), "Click": ([CLICKED], None),
        "SpamComplaint": ([COMPLAINED], "*"),
        "SubscriptionChange: ManualSuppression": ([UNSUBSCRIBED], "*"),
        "SubscriptionChange: HardBounce": ([HARD], None),
        "SubscriptionChange: reactivated": ([], None),
        "Bounce: Transient": ([SOFT], None), "Bounce: Unsubscribe": ([UNSUBSCRIBED], "*"), "Bounce: Subscribe": ([], None),
        "Bounce: AutoResponder": ([], None), "Bounce: AddressChange": ([], None), "Bounce: DnsError": ([SOFT], None),
        # The receiving filter's verdict, not the recipient's complaint: a block, consent untouched.
        "Bounce: SpamNotification": ([BLOCKED], None),
        "Bounce: OpenRelayTest": ([], None), "Bounce: Unknown": ([SOFT], None), "Bounce: SoftBounce": ([SOFT], None),
        "Bounce: VirusNotification": ([BLOCKED], None), "Bounce: ChallengeVerification": ([], None),
        "Bounce: BadEmailAddress": ([HARD], None), "Bounce: SpamComplaint": ([COMPLAINED], "*"),
        "Bounce: ManuallyDeactivated": ([HARD], None), "Bounce: Unconfirmed": ([], None), "Bounce: Blocked": ([BLOCKED], None),
        "Bounce: SMTPApiError": ([], None), "Bounce: InboundError": ([], None), "Bounce: DMARCPolicy": ([BLOCKED], None),
        "Bounce: TemplateRenderingFailed": ([], None),
    },
    "ses": {
        "Bounce": ([HARD], None), "Complaint": ([COMPLAINED], "*"), "Delivery": ([DELIVERED], None), "Send": ([], None),
        "Reject": ([], None), "Open": ([OPENED], None), "Click": ([CLICKED], None), "Rendering Failure": ([], None),
        "DeliveryDelay": ([], None), "Subscription": ([UNSUBSCRIBED], "*"), "Bounce, Transient": ([SOFT], None),
        "Subscription, one topic": ([UNSUBSCRIBED], "ExampleTopicName"),
        "Bounce, Transient ContentRejected": ([BLOCKED], None), "Bounce, Transient General, policy status": ([BLOCKED], None),
        "Bounce, Transient General": ([SOFT], None),
        # Identity notifications: no tags, so the recipient's address finds the customer when no delivery has the id.
        "Bounce, identity notification": ([HARD], None), "Complaint, identity notification": ([COMPLAINED], "*"),
    },
    "brevo": {
        "request": ([], None), "delivered": ([DELIVERED], None), "hard_bounce": ([HARD], None), "soft_bounce": ([SOFT], None),
        # Brevo's own block list: the event that put the address there came on its own.
        "blocked": ([BLOCKED], None), "spam": ([COMPLAINED], "*"), "invalid_email": ([HARD], None), "deferred": ([], None),
        "opened": ([OPENED], None), "unique_opened": ([OPENED], None), "click": ([CLICKED], None),
        # A privacy proxy fetched the images, not the customer.
        "proxy_open": ([], None), "unique_proxy_open": ([], None),
        "unsubscribed": ([UNSUBSCRIBED], "*"), "error": ([], None),
    },
}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def cases(kind: str, expectations: dict) -> list:
    """One pytest case per fixture entry of ``kind`` (``events`` or ``errors``), with its expectation."""
    out = []
    for name, expected in expectations.items():
        entries = {e["name"]: e for e in fixture(f"{name}_{kind}.json")[kind]}
        assert set(entries) == set(expected), f"{name}: fixtures and expectations differ"
        out += [pytest.param(name, entry, expected[entry_name], id=f"{name}: {entry_name}") for entry_name, entry in entries.items()]
    return out


def test_every_fixture_entry_cites_its_source():
    for path in sorted(FIXTURES.glob("*.json")):
        data = json.loads(path.read_text())
        assert data["source"].startswith("https://"), path
        for entry in data.get("events", data.get("errors", [])):
            assert entry["source"].startswith("https://"), (path.name, entry["name"])


@pytest.mark.parametrize("name, entry, expected", cases("events", EVENTS))
def test_each_documented_event_is_recorded_and_changes_consent_as_documented(engine, name, entry, expected):
    types, consent = expected
    batch = provider(name, now=lambda: NOW).parse_records([Record(0, entry["payload"])], "fixture")
    assert batch.invalid == [], batch.invalid
    assert [e.type for e in batch.events] == types
    recipients = sorted({e.recipient for e in batch.events})
    if recipients:
        with engine.begin() as conn:
            conn.execute(Customer.__table__.insert(), [
                {"id": f"C{i}", "email": address, "created_at": datetime(2010, 1, 1, tzinfo=UTC), "attributes": {}}
                for i, address in enumerate(recipients)])
    result = ingest(engine, batch)
    assert result.total_applied == len(types) and result.unknown_recipients == 0
    P, E = Preference.__table__, Event.__table__
    with engine.connect() as conn:
        stored = sorted(conn.execute(select(E.c.type)).scalars())
        opted_out = sorted(conn.execute(select(P.c.topic).where(P.c.opted_in.is_(False))).scalars())
    assert stored == sorted(f"email_{t}" for t in types)
    assert opted_out == ([] if consent is None else [consent])


# -- documented error responses ------------------------------------------------------

REJECTED, DEFERRED, STOPPED = "rejected", "deferred", "stopped"
ERRORS = {
    "sendgrid": {
        "400 invalid recipient": REJECTED, "400 duplicate category": REJECTED, "400 unknown unsubscribe group": STOPPED,
        "400 unknown IP pool": STOPPED, "401 unauthorized": STOPPED, "403 unverified sender identity": STOPPED,
        "413 payload too large": REJECTED, "429 too many requests": DEFERRED, "500 server unavailable": DEFERRED,
        "503 service not available": DEFERRED,
    },
    "mailgun": {
        "400 sandbox domain": STOPPED, "400 free account": STOPPED, "400 unverified domain": STOPPED,
        "400 account not activated": STOPPED, "400 invalid recipient": REJECTED, "400 options too large": REJECTED,
        "401 forbidden": STOPPED, "403 large batches not allowed yet": STOPPED, "404 domain not found": STOPPED,
        "413 request too large": REJECTED, "429 request limit": DEFERRED, "500 internal error": DEFERRED,
    },
    "postmark": {
        "401 bad or missing server token (10)": STOPPED, "422 invalid email request (300)": REJECTED,
        "422 sender signature not found (400)": STOPPED, "422 sender signature not confirmed (401)": STOPPED,
        "422 not allowed to send (405)": STOPPED, "422 account is pending (412)": STOPPED,
        "422 account may not send (413)": STOPPED, "200 batch entry: inactive recipient (406)": REJECTED,
        "200 batch entry: sender signature not found (400)": STOPPED, "429 rate limit exceeded": DEFERRED,
        "500 internal server error": DEFERRED,
    },
    "ses": {
        "400 AccountSuspendedException": STOPPED, "400 BadRequestException": REJECTED, "400 LimitExceededException": DEFERRED,
        "400 MailFromDomainNotVerifiedException": STOPPED, "400 MessageRejected": REJECTED,
        "400 MessageRejected (unverified identity)": STOPPED, "404 NotFoundException": STOPPED,
        "400 SendingPausedException": STOPPED, "429 TooManyRequestsException": DEFERRED,
    },
    "brevo": {
        "400 invalid_parameter": REJECTED, "400 missing_parameter": REJECTED, "401 unauthorized": STOPPED,
        "401 unrecognised IP address": STOPPED, "402 not_enough_credits": STOPPED, "403 permission_denied": STOPPED,
        "429 rate limited": DEFERRED, "500 internal error": DEFERRED,
    },
}
URLS = {
    "sendgrid": "https://api.sendgrid.com/v3/mail/send",
    "mailgun": "https://api.mailgun.net/v3/mg.fietsenwinkel.example/messages",
    "postmark": "https://api.postmarkapp.com/email/batch",
    "ses": "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails",
    "brevo": "https://api.brevo.com/v3/smtp/email",
}
CONFIG = {
    "sendgrid": {}, "postmark": {},
    "mailgun": {"domain": "mg.fietsenwinkel.example", "concurrency": 1},
    "ses": {"region": "eu-west-1", "concurrency": 1},
    "brevo": {"concurrency": 1},
}


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTESTRELMAIL")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-test")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.parametrize("name, entry, expected", cases("errors", ERRORS))
@responses.activate
def test_each_documented_error_rejects_defers_or_stops_the_run(aws_env, name, entry, expected):
    messages = [message(1, same_content=True), message(2, same_content=True)]
    # Mailgun sends a batch to /messages and single messages to /messages.mime: both answer the same.
    for url in (URLS[name], URLS[name] + ".mime") if name == "mailgun" else (URLS[name],):
        if entry.get("entry"):  # Postmark: one answer per message inside a 200
            responses.add(responses.POST, url, json=[entry["body"]] * len(messages), status=200)
        elif "text" in entry:
            responses.add(responses.POST, url, body=entry["text"], status=entry["status"], headers=entry.get("headers"))
        else:
            responses.add(responses.POST, url, json=entry["body"], status=entry["status"], headers=entry.get("headers"))
    ft = FakeTime()
    adapter = get_adapter(name, CONFIG[name], {"esp_api_key": "test-key"}, clock=ft.clock, sleep=ft.sleep)
    if expected == STOPPED:
        with pytest.raises(DeliveryAborted) as info:
            adapter.send(messages)
        results = info.value.results
        assert [r.status for r in results] == ["deferred"] * len(messages)  # resumable after the fix
        reason = str(info.value)
        assert "refused the credentials" not in reason or entry["status"] == 401
    else:
        results = adapter.send(messages)
        assert [r.status for r in results] == [expected] * len(messages), [r.reason for r in results]
