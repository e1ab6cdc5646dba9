"""Mandrill webhooks through ``relmail serve``'s WSGI app: the signature over the configured URL, the URL check, each event."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from tests.webkit import T0, feedback_events
from werkzeug.test import Client

from relmail.cli import cli
from relmail.feedback import ingest, provider
from relmail.feedback.apply import apply_events
from relmail.feedback.events import derived_id
from relmail.feedback.records import Record
from relmail.project import Project
from relmail.store.models import Customer, Event, Preference
from relmail.web.app import make_app
from test_provider_fixtures import BLOCKED, CLICKED, COMPLAINED, DELIVERED, HARD, OPENED, SOFT, UNSUBSCRIBED, cases

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
KEY = "mandrill-webhook-key-not-secret"
#: What `relmail init` writes as [unsubscribe] base_url, + /webhooks/mandrill: the URL entered in Mandrill.
PUBLIC = "https://fietsenwinkel.example/relmail/webhooks/mandrill"

#: fixture name -> (relmail types recorded, consent withdrawn: None or "*")
EVENTS = {"mandrill": {
    "send": ([DELIVERED], None), "delivered": ([DELIVERED], None), "deferral": ([], None), "hard_bounce": ([HARD], None), "soft_bounce": ([SOFT], None),
    "open": ([OPENED], None), "click": ([CLICKED], None), "spam": ([COMPLAINED], "*"), "unsub": ([UNSUBSCRIBED], "*"),
    # Mandrill did not send: the event that put the address on its denylist came on its own.
    "reject": ([BLOCKED], None),
    "blacklist sync": ([], None), "whitelist sync": ([], None),  # Mandrill's lists changed, not an e-mail
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
    assert batch.events[0].sent_id == "exampleaaaaaaaaaaaaaaaaaaaaaaaaa"  # the message's _id, which the send answered with
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [{"id": "C1", "email": batch.events[0].recipient,
                                                    "created_at": datetime(2010, 1, 1, tzinfo=UTC), "attributes": {}}])
    assert ingest(engine, batch).total_applied == len(types)
    assert ingest(engine, batch).duplicates == len(types)  # a redelivery writes nothing
    P = Preference.__table__
    with engine.connect() as conn:
        opted_out = sorted(conn.execute(select(P.c.topic).where(P.c.opted_in.is_(False))).scalars())
    assert opted_out == ([] if consent is None else [consent])


def signed(events, key: str = KEY, url: str = PUBLIC) -> dict:
    """The POST Mandrill makes: the form field, and the signature computed as Mandrill's documentation says."""
    fields = {"mandrill_events": events if isinstance(events, str) else json.dumps(events)}
    data = url + "".join(k + fields[k] for k in sorted(fields))
    sig = base64.b64encode(hmac.new(key.encode(), data.encode(), hashlib.sha1).digest()).decode()
    return {"data": urlencode(fields), "content_type": "application/x-www-form-urlencoded",
            "headers": {"X-Mandrill-Signature": sig}}


def event(kind: str, email: str, seconds: int, msg_id: str = "", **extra) -> dict:
    ts = int((T0 + timedelta(seconds=seconds)).timestamp())
    msg_id = msg_id or f"mid{seconds:05d}"
    msg = {"ts": ts - 1, "_id": msg_id, "state": "sent", "subject": "Nieuwe e-bike", "email": email,
           "sender": "news@fietsenwinkel.example", "tags": [], "metadata": {}, **extra.pop("msg", {})}
    return {"event": kind, "ts": ts, "_id": msg_id, "msg": msg, **extra}


@pytest.fixture
def mandrill_shop(project, engine, monkeypatch):
    monkeypatch.setenv("RELMAIL_MANDRILL_WEBHOOK_KEY", KEY)
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [
            {"id": f"C000000{i}", "email": email, "created_at": T0 - timedelta(days=400), "attributes": {}}
            for i, email in enumerate(["anna@example.com", "bram@example.com", "cas@example.com"], 1)])
    return Client(make_app(Project.load(project.root), engine)), engine


def test_each_mandrill_event_is_recorded_as_documented_and_a_redelivery_writes_nothing(mandrill_shop):
    client, engine = mandrill_shop
    events = [
        event("send", "anna@example.com", 1),
        event("open", "anna@example.com", 2),
        event("click", "anna@example.com", 3, url="https://fietsenwinkel.example/e-bikes"),
        event("hard_bounce", "bram@example.com", 4, msg={"state": "bounced", "bounce_description": "bad_mailbox",
                                                           "diag": "smtp;550 5.1.1 The email account does not exist."}),
        # The receiving server refused the sender (5.7.1): a block, never counted against the mailbox.
        event("hard_bounce", "bram@example.com", 104, msg={"diag": "smtp;550 5.7.1 Message rejected due to local policy"}),
        event("soft_bounce", "bram@example.com", 5, msg={"diag": "smtp;554 5.7.1 Service unavailable; client host blocked"}),
        event("soft_bounce", "bram@example.com", 6, msg={"diag": "smtp;452 4.2.2 Mailbox full"}),
        event("spam", "cas@example.com", 7),
        event("reject", "bram@example.com", 8, msg={"state": "rejected"}),
        event("deferral", "anna@example.com", 9, msg={"state": "deferred"}),
        {"type": "blacklist", "action": "add", "ts": int(T0.timestamp()),
         "reject": {"email": "bram@example.com", "reason": "hard-bounce", "detail": "bounced"}},
        {"type": "whitelist", "action": "remove", "ts": int(T0.timestamp()), "entry": {"email": "anna@example.com"}},
    ]
    answer = client.post("/webhooks/mandrill", **signed(events))
    assert answer.status_code == 200, answer.json
    assert answer.json["applied"] == {"bounced_blocked": 3, "bounced_hard": 1, "bounced_soft": 1, "clicked": 1,
                                      "complained": 1, "delivered": 1, "opened": 1}
    assert answer.json["ignored"] == {"deferral": 1, "blacklist": 1, "whitelist": 1} and answer.json["received"] == 12
    again = client.post("/webhooks/mandrill", **signed(events))
    assert again.json["total_applied"] == 0 and again.json["duplicates"] == 9  # Mandrill retries a failed POST
    rows = [(c, t) for c, t, _, _, _ in feedback_events(engine)]
    assert rows == sorted([("C0000001", "email_delivered"), ("C0000001", "email_opened"), ("C0000001", "email_clicked"),
                           ("C0000002", "email_bounced_hard"), ("C0000002", "email_bounced_blocked"),
                           ("C0000002", "email_bounced_soft"), ("C0000002", "email_bounced_blocked"),
                           ("C0000002", "email_bounced_blocked"),
                           ("C0000003", "email_complained")])


def test_an_unsubscribe_leaves_every_topic(mandrill_shop):
    client, engine = mandrill_shop
    answer = client.post("/webhooks/mandrill", **signed([event("unsub", "anna@example.com", 10)]))
    assert answer.json["applied"] == {"unsubscribed": 1} and answer.json["opt_outs"] == 1
    P = Preference.__table__
    with engine.connect() as conn:
        assert conn.execute(select(P.c.customer_id, P.c.topic).where(P.c.opted_in.is_(False))).all() == [("C0000001", "*")]


def test_mandrills_url_check_gets_a_200_before_the_webhook_key_exists(project, engine, monkeypatch):
    monkeypatch.delenv("RELMAIL_MANDRILL_WEBHOOK_KEY", raising=False)
    client = Client(make_app(Project.load(project.root), engine))
    assert client.head("/webhooks/mandrill").status_code == 200
    assert client.head("/relmail/webhooks/mandrill").status_code == 200  # a proxy that passes base_url's path on
    # HEAD failing, Mandrill POSTs an empty array signed with the key 'test-webhook'.
    check = client.post("/webhooks/mandrill", **signed([], key="test-webhook"))
    assert check.status_code == 200 and check.json["received"] == 0
    # Real events need the real key: set it, and the endpoint refuses until then (503: Mandrill retries).
    assert client.post("/webhooks/mandrill", **signed([event("send", "anna@example.com", 1)])).status_code == 503
    assert client.head("/webhooks/mailjet").status_code == 405  # only providers that check with HEAD answer it


def test_a_wrong_missing_or_test_key_signature_writes_nothing(mandrill_shop):
    client, engine = mandrill_shop
    events = [event("spam", "anna@example.com", 11)]
    unsigned = signed(events)
    del unsigned["headers"]
    assert client.post("/webhooks/mandrill", **unsigned).status_code == 401
    assert client.post("/webhooks/mandrill", **signed(events, key="guess")).status_code == 403
    # The check's generic key signs an empty array only.
    assert client.post("/webhooks/mandrill", **signed(events, key="test-webhook")).status_code == 403
    # Signed for the address the request reached (behind the proxy), not the one entered in Mandrill.
    refused = client.post("/webhooks/mandrill", **signed(events, url="http://localhost/webhooks/mandrill"))
    assert refused.status_code == 403 and PUBLIC in refused.json["error"]
    # A form whose fields were changed after signing.
    tampered = signed(events)
    tampered["data"] = urlencode({"mandrill_events": json.dumps([event("spam", "bram@example.com", 11)])})
    assert client.post("/webhooks/mandrill", **tampered).status_code == 403
    assert feedback_events(engine) == []


def test_the_url_entered_in_mandrill_can_be_set_when_it_is_not_base_urls(mandrill_shop, project):
    _, engine = mandrill_shop
    config = project.root / "relmail.toml"
    url = "https://hooks.fietsenwinkel.example/mandrill?from=mc"
    config.write_text(config.read_text() + f'\n[feedback.mandrill]\nurl = "{url}"\n')
    client = Client(make_app(Project.load(project.root), engine))
    events = [event("open", "anna@example.com", 12)]
    assert client.post("/webhooks/mandrill", **signed(events)).status_code == 403
    assert client.post("/webhooks/mandrill", **signed(events, url=url)).json["applied"] == {"opened": 1}


def test_a_body_that_is_not_mandrills_form_is_a_400(mandrill_shop):
    client, _ = mandrill_shop
    # The POST is a form: what is not JSON is its field, named so.
    answer = client.post("/webhooks/mandrill", **signed("[{not json"))
    assert answer.status_code == 400
    assert answer.get_json()["error"].startswith("mandrill webhook: field 'mandrill_events' is not JSON: Expecting")
    answer = client.post("/webhooks/mandrill", **signed('{"event": "send"}'))
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "mandrill webhook: field 'mandrill_events' must be a JSON array of events"


def test_feedback_import_reads_a_saved_mandrill_events_array(mandrill_shop, project, tmp_path, monkeypatch):
    _, engine = mandrill_shop
    saved = tmp_path / "mandrill-events.json"
    saved.write_text(json.dumps([event("click", "bram@example.com", 13, url="https://fietsenwinkel.example/"),
                                 event("click", "bram@example.com", 14)]))  # a click without its url: invalid
    monkeypatch.chdir(project.root)
    result = CliRunner().invoke(cli, ["feedback", "import", str(saved), "--format", "mandrill", "--json"])
    assert result.exit_code == 4, result.output
    data = json.loads(result.output[: result.output.rindex("}") + 1])
    assert data["applied"] == {"clicked": 1} and data["invalid"][0]["field"] == "url" and data["invalid"][0]["index"] == 1


def test_the_id_ties_the_event_to_the_send_and_a_redelivered_event_keeps_its_id():
    p = provider("mandrill", now=lambda: NOW)
    [first] = p.parse_event(event("open", "anna@example.com", 15, msg_id="abc123"))
    assert first.sent_id == "abc123" and first.occurred_at == T0 + timedelta(seconds=15)
    assert first.event_id == p.parse_event(event("open", "anna@example.com", 15, msg_id="abc123"))[0].event_id
    assert first.event_id != p.parse_event(event("open", "anna@example.com", 16, msg_id="abc123"))[0].event_id


def test_the_relmail_ids_mandrill_echoes_in_msg_metadata_name_the_customer_run_and_message(mandrill_shop):
    """X-MC-Metadata comes back as msg.metadata: it wins over the address, which a forward or a typo changes."""
    client, engine = mandrill_shop
    ids = {"relmail_customer": "C0000002", "relmail_run": "weekly:2026-W49", "relmail_message": "ebike-launch"}
    answer = client.post("/webhooks/mandrill", **signed([
        event("click", "someone.else@example.org", 20, url="https://fietsenwinkel.example/e-bikes", msg={"metadata": ids})]))
    assert answer.json["applied"] == {"clicked": 1}
    E = Event.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(E.c.customer_id, E.c.type, E.c.run_id, E.c.message_id).where(E.c.type == "email_clicked")).all()
    assert rows == [("C0000002", "email_clicked", "weekly:2026-W49", "ebike-launch")]


def test_send_and_delivered_of_one_email_record_one_delivery():
    """Mailchimp's 'delivered' (the receiving server's answer) follows its 'send': the e-mail arrived once."""
    p = provider("mandrill", now=lambda: NOW)
    [sent] = p.parse_event(event("send", "anna@example.com", 30, msg_id="m30"))
    [delivered] = p.parse_event(event("delivered", "anna@example.com", 95, msg_id="m30"))
    assert sent.type == delivered.type == "delivered" and sent.event_id == delivered.event_id
    assert p.parse_event(event("delivered", "anna@example.com", 95, msg_id="m31"))[0].event_id != sent.event_id


def test_an_event_whose_msg_mandrill_left_empty_is_read_by_its_id():
    """Mandrill sends an empty msg for an open or click of an e-mail older than 30 days, or not yet indexed."""
    p = provider("mandrill", now=lambda: NOW)
    bare = {"event": "open", "ts": int(T0.timestamp()), "_id": "abc123", "msg": {}}
    [opened] = p.parse_event(bare)
    assert (opened.type, opened.sent_id, opened.recipient) == ("opened", "abc123", "")
    batch = p.parse_records([Record(0, {**bare, "_id": None})], "webhook")
    assert batch.events == [] and batch.invalid[0].field == "email"  # neither id nor address: nothing to tie it to


# -- the parser -------------------------------------------------------------------

ANY = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**64), st.floats(allow_nan=True), st.text(max_size=12),
                st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
MSG = st.fixed_dictionaries({}, optional={
    "email": st.one_of(st.sampled_from(["anna@example.com", "not-an-address"]), ANY),
    "_id": st.one_of(st.just("m1"), ANY),
    "diag": st.one_of(st.sampled_from(["smtp;550 5.1.1 unknown", "smtp;550 5.7.1 blocked"]), ANY),
    "metadata": st.one_of(st.fixed_dictionaries({}, optional={"relmail_customer": ANY, "relmail_run": ANY}), ANY),
})
RECORDS = st.fixed_dictionaries({}, optional={
    "event": st.one_of(st.sampled_from(["send", "delivered", "open", "click", "hard_bounce", "soft_bounce", "spam", "unsub",
                                        "reject", "deferral", "typo"]), ANY),
    "type": st.one_of(st.sampled_from(["blacklist", "whitelist", "denylist", "allowlist"]), ANY),
    "ts": st.one_of(st.integers(1_700_000_000, 1_760_000_000), ANY),
    "_id": st.one_of(st.just("m1"), ANY),
    "url": st.one_of(st.just("https://fietsenwinkel.example/"), ANY),
    "msg": st.one_of(MSG, ANY),
})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(RECORDS, ANY), max_size=6))
def test_any_event_is_read_rejected_with_its_field_or_skipped_never_misread(records):
    batch = provider("mandrill", now=lambda: NOW).parse_records([Record(i, r) for i, r in enumerate(records)], "webhook")
    assert len(batch.events) + len(batch.invalid) + sum(batch.ignored.values()) == len(records)
    assert all(bad.reason for bad in batch.invalid)
    usable = [r for r in records if isinstance(r, dict) and isinstance(r.get("msg"), dict)]
    assert len(batch.events) <= len(usable)  # an event without its msg object is never guessed at
    for e in batch.events:
        # An address, or none at all when an empty msg leaves the event's _id alone to find the e-mail.
        assert ("@" in e.recipient or (e.recipient == "" and e.sent_id)) and e.provider == "mandrill"


@pytest.mark.parametrize("kind", ["blacklist", "whitelist", "denylist", "allowlist"])
def test_a_sync_event_under_the_lists_old_or_current_name_is_ignored_not_invalid(kind):
    sync = {"type": kind, "action": "add", "ts": int(NOW.timestamp()),
            "reject": {"email": "anna@example.com", "reason": "hard-bounce", "detail": "", "created_at": "2026-12-04 11:00:00"}}
    batch = provider("mandrill", now=lambda: NOW).parse_records([Record(0, sync)], "webhook")
    assert (batch.events, batch.invalid, batch.ignored) == ([], [], {kind: 1})



# -- a store written before relmail read 'delivered' -------------------------------------------------------------


def old_id(entry: dict) -> str:
    """The event id relmail derived before it read 'delivered' (commit b9674c2): msg._id first, a send by its time."""
    msg = entry["msg"]
    sent = msg.get("_id") or entry.get("_id")
    return derived_id(sent, msg["email"].lower(), entry["event"], entry["ts"], entry.get("url"))


def store_as_before(engine, events) -> None:
    """Write ``events`` as the earlier relmail did: under their old ids."""
    apply_events(engine, [replace(e, provider_event_id=old_id(e.esp_event), former_ids=(), one_per_email=False)
                          for e in events])


IDS = {"relmail_customer": "C1", "relmail_run": "weekly:2026-W49", "relmail_message": "ebike-launch"}


def test_a_redelivery_of_events_stored_under_their_old_ids_writes_nothing(engine):
    # Mandrill's samples give the event an _id of its own beside msg._id, which the earlier relmail read first.
    entries = [event("send", "Anna@Example.com", 10, msg={"_id": "inner10"}),
               event("hard_bounce", "anna@example.com", 20, msg={"_id": "inner20", "diag": "smtp;550 5.1.1 unknown"}),
               event("open", "anna@example.com", 30, msg={"_id": "inner30"}),
               event("click", "anna@example.com", 40, url="https://fietsenwinkel.example/", msg={"_id": "inner40"})]
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [{"id": "C1", "email": "anna@example.com",
                                                    "created_at": datetime(2010, 1, 1, tzinfo=UTC), "attributes": {}}])
    batch = provider("mandrill", now=lambda: NOW).parse_records([Record(i, e) for i, e in enumerate(entries)], "webhook")
    assert len(batch.events) == 4 and all(e.event_id != f"mandrill:{old_id(e.esp_event)}" for e in batch.events)
    store_as_before(engine, batch.events)
    assert len(feedback_events(engine)) == 4

    again = ingest(engine, batch)
    assert again.total_applied == 0 and again.duplicates == 4
    assert len(feedback_events(engine)) == 4


def test_a_delivered_event_after_a_send_stored_under_its_old_id_writes_no_second_delivery(engine):
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [{"id": "C1", "email": "anna@example.com",
                                                    "created_at": datetime(2010, 1, 1, tzinfo=UTC), "attributes": {}}])
    p = provider("mandrill", now=lambda: NOW)
    send = p.parse_records([Record(0, event("send", "anna@example.com", 10, msg_id="m10", msg={"metadata": IDS}))], "webhook")
    store_as_before(engine, send.events)
    # Mandrill's 'delivered' of that e-mail (which the earlier relmail ignored), and of another e-mail of the customer.
    other = {**IDS, "relmail_message": "lock-tips"}
    later = p.parse_records([Record(0, event("delivered", "anna@example.com", 70, msg_id="m10", msg={"metadata": IDS})),
                             Record(1, event("delivered", "anna@example.com", 75, msg_id="m11", msg={"metadata": other}))],
                            "webhook")
    result = ingest(engine, later)
    assert result.duplicates == 1 and result.applied == {"delivered": 1}
    E = Event.__table__
    with engine.connect() as conn:
        rows = sorted(conn.execute(select(E.c.message_id).where(E.c.type == "email_delivered")).scalars())
    assert rows == ["ebike-launch", "lock-tips"]
