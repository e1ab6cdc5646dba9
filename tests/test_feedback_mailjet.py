"""Mailjet: every documented event and send error (tests/fixtures/providers/mailjet_*.json), the webhook, the parser."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import responses
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from tests.webkit import RUN, T0, feedback_events
from werkzeug.test import Client

from delivery_messages import FakeTime, message
from relmail.cli import cli
from relmail.delivery import DeliveryAborted, get_adapter
from relmail.feedback import ingest, provider
from relmail.feedback.records import Record
from relmail.project import Project
from relmail.store.models import Customer, Event, Preference
from relmail.web.app import make_app
from test_provider_fixtures import BLOCKED, CLICKED, COMPLAINED, DELIVERED, HARD, OPENED, SOFT, UNSUBSCRIBED, cases

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
URL = "https://api.mailjet.com/v3.1/send"

#: fixture name -> (relmail types recorded, consent withdrawn: None or "*")
EVENTS = {"mailjet": {
    "sent": ([DELIVERED], None), "open": ([OPENED], None), "click": ([CLICKED], None), "bounce": ([HARD], None),
    "blocked": ([HARD], None), "spam": ([COMPLAINED], "*"), "unsub": ([UNSUBSCRIBED], "*"),
    "sent, grouped (Version 2, no MessageID)": ([DELIVERED], None),
    "bounce: quota exceeded, soft": ([SOFT], None), "bounce: greylisted, soft": ([SOFT], None),
    "bounce: no mail host, hard": ([HARD], None),
    # The receiving side refused the sender or the content: stored as a block, never counted against the mailbox.
    "bounce: relay/access denied, hard": ([BLOCKED], None), "bounce: content blocked, hard": ([BLOCKED], None),
    "bounce: policy issue, soft": ([BLOCKED], None),
    "bounce: connection issue, soft": ([], None),  # Mailjet's own fault
    "blocked: preblocked": ([HARD], None),  # on Mailjet's list of bounced addresses
    "blocked: duplicate in campaign": ([], None),  # our request's
    "blocked: sender blocked": ([BLOCKED], None),
    "blocked: spam reporter": ([COMPLAINED], "*"),
    "blocked: blacklisted": ([BLOCKED], None),  # excluded, Mailjet does not say why: no consent changed on a guess
    "blocked: typofix": ([HARD], None),
    # The message's template (relmail sends none): nothing about the recipient.
    "blocked: bad or empty template": ([], None), "blocked: error in template language": ([], None),
}}
REJECTED, DEFERRED, STOPPED = "rejected", "deferred", "stopped"
ERRORS = {"mailjet": {
    "400 global: malformed JSON (mj-0002)": REJECTED, "401 authentication failure (mj-0015)": STOPPED,
    "400 entry: type mismatch and missing To (mj-0004, mj-0005)": REJECTED, "400 entry: no content (send-0003)": REJECTED,
    "400 entry: forbidden header (send-0011)": STOPPED, "400 entry: invalid email address (mj-0013)": REJECTED,
    "403 entry: unauthorized sender (send-0008)": STOPPED, "403 entry: sender id not validated (send-0007)": STOPPED,
    "401 entry: API key suspended (mj-0001)": STOPPED, "429 too many requests": DEFERRED, "500 internal server error": DEFERRED,
}}


@pytest.mark.parametrize("name, entry, expected", cases("events", EVENTS))
def test_each_documented_event_is_recorded_and_changes_consent_as_documented(engine, name, entry, expected):
    types, consent = expected
    batch = provider(name, now=lambda: NOW).parse_records([Record(0, entry["payload"])], "fixture")
    assert batch.invalid == [], batch.invalid
    assert [e.type for e in batch.events] == types
    if not types:
        assert sum(batch.ignored.values()) == 1
        return
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [{"id": "C1", "email": batch.events[0].recipient,
                                                    "created_at": datetime(2010, 1, 1, tzinfo=UTC), "attributes": {}}])
    assert ingest(engine, batch).total_applied == len(types)
    assert ingest(engine, batch).duplicates == len(types)  # a redelivery writes nothing
    P = Preference.__table__
    with engine.connect() as conn:
        opted_out = sorted(conn.execute(select(P.c.topic).where(P.c.opted_in.is_(False))).scalars())
    assert opted_out == ([] if consent is None else [consent])


@pytest.mark.parametrize("name, entry, expected", cases("errors", ERRORS))
@responses.activate
def test_each_documented_send_error_rejects_defers_or_stops_the_run(name, entry, expected):
    messages = [message(1, raw=False), message(2, raw=False)]
    body = {"Messages": [entry["body"]] * len(messages)} if entry.get("entry") else entry["body"]
    responses.add(responses.POST, URL, json=body, status=entry["status"], headers=entry.get("headers"))
    ft = FakeTime()
    adapter = get_adapter("mailjet", {}, {"esp_api_key": "k", "esp_api_secret": "s"}, clock=ft.clock, sleep=ft.sleep)
    if expected == STOPPED:
        with pytest.raises(DeliveryAborted) as info:
            adapter.send(messages)
        assert [r.status for r in info.value.results] == ["deferred"] * len(messages)  # resumable after the fix
    else:
        results = adapter.send(messages)
        assert [r.status for r in results] == [expected] * len(messages), [r.reason for r in results]


# -- the webhook ------------------------------------------------------------------

def _event(kind: str, email: str, seconds: int, **extra) -> dict:
    return {"event": kind, "time": int((T0 + timedelta(seconds=seconds)).timestamp()), "email": email,
            "MessageID": 1000 + seconds, "mj_campaign_id": 0, "mj_contact_id": 0, "customcampaign": "weekly/ebike-launch",
            "CustomID": f"d{seconds}", "Payload": "", **extra}


@pytest.fixture
def mailjet_shop(project, engine, monkeypatch):
    monkeypatch.setenv("RELMAIL_MAILJET_WEBHOOK_PASSWORD", "mj-pass")
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [
            {"id": f"C000000{i}", "email": email, "created_at": T0 - timedelta(days=400), "attributes": {}}
            for i, email in enumerate(["anna@example.com", "bram@example.com"], 1)])
    return Client(make_app(Project.load(project.root), engine)), engine


def test_a_grouped_post_applies_each_event_once_and_counts_the_unknown(mailjet_shop):
    client, engine = mailjet_shop
    payload = json.dumps({"relmail_customer": "C0000001", "relmail_run": RUN, "relmail_message": "ebike-launch"})
    body = json.dumps([
        _event("sent", "anna@example.com", 1, Payload=payload),
        _event("open", "anna@example.com", 2, Payload=payload),
        _event("bounce", "bram@example.com", 3, hard_bounce=True, blocked=True, error_related_to="recipient", error="user unknown"),
        _event("typo", "bram@example.com", 4),  # a kind Mailjet may add
    ])
    answer = client.post("/webhooks/mailjet", data=body, auth=("mailjet", "mj-pass"), content_type="application/json")
    assert answer.status_code == 200, answer.json
    assert answer.json["applied"] == {"bounced_hard": 1, "delivered": 1, "opened": 1}
    assert answer.json["ignored"] == {"typo": 1} and answer.json["received"] == 4
    again = client.post("/webhooks/mailjet", data=body, auth=("mailjet", "mj-pass"), content_type="application/json")
    assert again.json["total_applied"] == 0 and again.json["duplicates"] == 3  # Mailjet retries until it gets a 200
    rows = [(c, t, m) for c, t, _, m, _ in feedback_events(engine)]
    assert rows == [("C0000001", "email_delivered", "ebike-launch"), ("C0000001", "email_opened", "ebike-launch"),
                    ("C0000002", "email_bounced_hard", None)]


def test_a_single_event_object_is_accepted_too(mailjet_shop):
    client, _ = mailjet_shop
    body = json.dumps(_event("spam", "anna@example.com", 5, source="JMRPP"))
    answer = client.post("/webhooks/mailjet", data=body, auth=("mailjet", "mj-pass"), content_type="application/json")
    assert answer.status_code == 200 and answer.json["applied"] == {"complained": 1} and answer.json["opt_outs"] == 1


def test_webhook_without_or_with_wrong_credentials_writes_nothing(mailjet_shop):
    client, engine = mailjet_shop
    body = json.dumps([_event("unsub", "anna@example.com", 6)])
    missing = client.post("/webhooks/mailjet", data=body)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == 'Basic realm="relmail"'
    assert client.post("/webhooks/mailjet", data=body, auth=("mailjet", "guess")).status_code == 403
    assert client.post("/webhooks/mailjet", data=body, auth=("someone", "mj-pass")).status_code == 403
    assert client.post("/webhooks/mailjet/guess", data=body).status_code == 403
    assert feedback_events(engine) == []
    # Where a URL cannot carry credentials, the password as its last segment does.
    assert client.post("/webhooks/mailjet/mj-pass", data=body).json["applied"] == {"unsubscribed": 1}


def test_feedback_import_reads_a_saved_webhook_body(mailjet_shop, project, tmp_path, monkeypatch):
    _, engine = mailjet_shop
    saved = tmp_path / "mailjet-events.json"
    saved.write_text(json.dumps([_event("click", "bram@example.com", 7, url="https://fietsenwinkel.example/e-bikes"),
                                 _event("click", "bram@example.com", 8)]))  # a click without its url: invalid
    monkeypatch.chdir(project.root)
    result = CliRunner().invoke(cli, ["feedback", "import", str(saved), "--format", "mailjet", "--json"])
    assert result.exit_code == 4, result.output  # the valid one applied, the invalid one recorded
    data = json.loads(result.output[: result.output.rindex("}") + 1])
    assert data["applied"] == {"clicked": 1} and data["invalid"][0]["field"] == "url" and data["invalid"][0]["index"] == 1


# -- the parser -------------------------------------------------------------------

ANY = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**64), st.floats(allow_nan=True), st.text(max_size=12),
                st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
GOOD = {
    "event": st.sampled_from(["sent", "open", "click", "bounce", "blocked", "spam", "unsub", "typo"]),
    "time": st.integers(1_700_000_000, 1_760_000_000),
    "email": st.sampled_from(["anna@example.com", "bram@example.com"]),
    "MessageID": st.integers(1, 2**63),
    "Message_GUID": st.sampled_from(["1ab23cd4-e567-8901-2345-6789f0gh1i2j", " ", ""]),
    "url": st.just("https://fietsenwinkel.example/"),
    "error": st.sampled_from(["user unknown", "quota exceeded", "preblocked", "something new"]),
    "error_related_to": st.sampled_from(["recipient", "domain", "spam", "system", "elsewhere"]),
    "hard_bounce": st.booleans(),
    "Payload": st.sampled_from(['{"relmail_customer":"C1","relmail_run":"r","relmail_message":"m"}', "", "not json",
                                '{"relmail_customer":["C1"],"relmail_run":"r"}', '{"other":"tool"}']),
}
#: Each field present with a good value, absent, or any other JSON value.
RECORDS = st.fixed_dictionaries({}, optional={k: st.one_of(v, ANY) for k, v in GOOD.items()})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(RECORDS, ANY), max_size=6))
def test_any_event_is_read_rejected_with_its_field_or_skipped_never_misread(records):
    batch = provider("mailjet", now=lambda: NOW).parse_records([Record(i, r) for i, r in enumerate(records)], "webhook")
    # Every record accounted for once: one event, one invalid event naming why, or one ignored kind.
    assert len(batch.events) + len(batch.invalid) + sum(batch.ignored.values()) == len(records)
    by_index = {bad.index for bad in batch.invalid}
    assert all(bad.reason for bad in batch.invalid)
    for event in batch.events:
        record = next(r for i, r in enumerate(records) if i not in by_index and isinstance(r, dict)
                      and r.get("email") == event.recipient and r.get("time") is not None)
        assert isinstance(record["email"], str)
        # The relmail ids come whole from a relmail payload, or not at all.
        ids = (event.customer_id, event.run_id, event.message_id)
        assert ids in ((None, None, None), ("C1", "r", "m"))
        # The delivery is only ever looked up by the MessageID Mailjet sent, as a whole number, else by its GUID.
        guid = record.get("Message_GUID")
        assert event.sent_id is None or event.sent_id.isdigit() or (isinstance(guid, str) and event.sent_id == guid.strip())


def test_a_payload_that_is_not_wholly_relmails_is_not_used():
    base = _event("open", "anna@example.com", 9)
    for payload in ['{"relmail_customer": 7, "relmail_run": "r", "relmail_message": "m"}', "[1]", '{"other": "tool"}', "{"]:
        [event] = provider("mailjet", now=lambda: NOW).parse_event({**base, "Payload": payload})
        assert (event.customer_id, event.run_id, event.message_id) == (None, None, None)
        assert event.sent_id == "1009"  # the delivery is still found by Mailjet's MessageID


def test_stored_event_ids_are_stable_for_a_redelivered_event():
    p = provider("mailjet", now=lambda: NOW)
    first = p.parse_event(_event("click", "anna@example.com", 10, url="https://a.example/"))
    other_url = p.parse_event(_event("click", "anna@example.com", 10, url="https://b.example/"))
    assert first[0].event_id == p.parse_event(_event("click", "anna@example.com", 10, url="https://a.example/"))[0].event_id
    assert first[0].event_id != other_url[0].event_id  # two links clicked in the same second are two clicks


def test_hard_bounce_must_be_a_flag():
    base = _event("bounce", "anna@example.com", 11, error_related_to="recipient", error="user unknown")
    p = provider("mailjet", now=lambda: NOW)
    assert p.parse_event({**base, "hard_bounce": "true"})[0].type == HARD  # as a CSV export writes it
    batch = p.parse_records([Record(0, base), Record(1, {**base, "hard_bounce": 3})], "webhook")
    assert [(bad.field, bad.index) for bad in batch.invalid] == [("hard_bounce", 0), ("hard_bounce", 1)]


def test_stored_events_keep_no_secret_and_the_time_mailjet_gave(mailjet_shop):
    client, engine = mailjet_shop
    body = json.dumps(_event("open", "anna@example.com", 12))
    client.post("/webhooks/mailjet", data=body, auth=("mailjet", "mj-pass"), content_type="application/json")
    E = Event.__table__
    with engine.connect() as conn:
        [when] = conn.execute(select(E.c.occurred_at).where(E.c.type == "email_opened")).scalars()
    assert when.replace(tzinfo=UTC) == T0 + timedelta(seconds=12)


def test_an_event_without_a_messageid_names_its_email_by_message_guid_and_keeps_its_stored_id():
    p = provider("mailjet", now=lambda: NOW)
    base = _event("open", "anna@example.com", 12)
    without = {k: v for k, v in base.items() if k not in ("MessageID", "mj_message_id")}
    [plain] = p.parse_event(without)
    [guided] = p.parse_event({**without, "Message_GUID": "1ab23cd4-e567-8901-2345-6789f0gh1i2j"})
    assert plain.sent_id is None and guided.sent_id == "1ab23cd4-e567-8901-2345-6789f0gh1i2j"
    # The id of an event stored before the GUID was read is the same: a redelivery writes nothing new.
    assert guided.event_id == plain.event_id
    [numbered] = p.parse_event({**base, "Message_GUID": "1ab23cd4-e567-8901-2345-6789f0gh1i2j"})
    assert numbered.sent_id == str(base["MessageID"])  # the number, which the adapter records first
