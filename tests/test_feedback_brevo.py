"""Brevo's transactional webhook events: credentials, the mapping of each kind, de-duplication and matching.

The bodies follow Brevo's transactional webhook documentation (``event``, ``email``, ``message-id``,
``ts_event``, ``ts_epoch``, ``X-Mailin-custom``, ``reason``, ``link`` ...), and a page of its events API.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from tests.webkit import RUN, T0, feedback_events, prefs
from werkzeug.test import Client

from relmail.cli import cli
from relmail.errors import SignatureError
from relmail.feedback import provider
from relmail.feedback.records import Record
from relmail.feedback.webhook import MissingCredentials, WebhookConfig, WebhookRequest
from relmail.project import Project
from relmail.store.models import Customer, Delivery, Event
from relmail.web.app import make_app

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
TOKEN = "brevo-webhook-token-3f9a"
BV = provider("brevo", now=lambda: NOW)
META = '{"relmail_customer":"C0000001","relmail_run":"weekly-2026-W48","relmail_message":"ebike-launch"}'


def event(kind: str, email: str = "anna@example.com", at: datetime = NOW - timedelta(hours=1), **extra) -> dict:
    """A webhook body as Brevo documents it for ``kind``."""
    body = {
        "event": kind, "email": email, "id": 1234567, "date": at.strftime("%Y-%m-%d %H:%M:%S"),
        "ts": int(at.timestamp()), "message-id": "<202611230900.12345678901@smtp-relay.mailin.fr>",
        "ts_event": int(at.timestamp()), "ts_epoch": int(at.timestamp() * 1000), "subject": "Nieuwe e-bike",
        "X-Mailin-custom": META, "sending_ip": "185.41.28.109", "template_id": None, "tags": ["weekly", "ebike-launch"],
        "contact_id": 8,
    }
    return {**body, **extra}


def parsed(record: dict):
    batch = BV.parse_records([Record(0, record)], "webhook")
    assert not batch.invalid, batch.invalid
    return batch


# -- one test per kind ---------------------------------------------------------------

@pytest.mark.parametrize(("kind", "extra", "expected"), [
    ("delivered", {}, "delivered"),
    ("hard_bounce", {"reason": "550 5.1.1 <anna@example.com>: Recipient address rejected: User unknown"}, "bounced_hard"),
    ("invalid_email", {"reason": "invalid email address"}, "bounced_hard"),
    ("soft_bounce", {"reason": "452 4.2.2 Mailbox full"}, "bounced_soft"),
    ("blocked", {"reason": "blocked : due to blacklist user"}, "bounced_blocked"),
    ("spam", {}, "complained"),
    ("unsubscribed", {}, "unsubscribed"),
    ("opened", {}, "opened"),
    ("unique_opened", {}, "opened"),
    ("click", {"link": "https://fietsenwinkel.example/e-bike?utm_source=relmail"}, "clicked"),
])
def test_each_brevo_event_kind_becomes_its_relmail_type(kind, extra, expected):
    [e] = parsed(event(kind, **extra)).events
    assert e.type == expected and e.provider == "brevo" and e.recipient == "anna@example.com"
    assert (e.customer_id, e.run_id, e.message_id) == ("C0000001", "weekly-2026-W48", "ebike-launch")
    assert e.sent_id == "202611230900.12345678901@smtp-relay.mailin.fr"
    assert e.occurred_at == datetime.fromtimestamp(int((NOW - timedelta(hours=1)).timestamp()), UTC)
    assert e.scope == "all"


def test_a_click_keeps_its_link_and_a_bounce_its_reason():
    [click] = parsed(event("click", link="https://fietsenwinkel.example/a")).events
    [bounce] = parsed(event("hard_bounce", reason="550 5.1.1 user unknown")).events
    assert click.url == "https://fietsenwinkel.example/a" and bounce.reason == "550 5.1.1 user unknown"


@pytest.mark.parametrize("kind", ["hard_bounce", "soft_bounce", "invalid_email"])
def test_a_bounce_whose_status_blames_the_sender_is_a_block_not_the_mailboxs(kind):
    [e] = parsed(event(kind, reason="550 5.7.1 Service unavailable; client host blocked using Spamhaus")).events
    assert e.type == "bounced_blocked"


@pytest.mark.parametrize("kind", ["request", "deferred", "error", "proxy_open", "unique_proxy_open", "list_addition", "brand_new"])
def test_kinds_relmail_does_not_track_are_ignored_and_counted(kind):
    batch = parsed(event(kind))
    assert batch.events == [] and batch.ignored == {kind: 1}


def test_a_redelivered_event_and_a_first_open_reported_twice_have_one_id():
    first, again = parsed(event("opened")).events[0], parsed(event("opened", id=7654321)).events[0]
    unique = parsed(event("unique_opened")).events[0]
    later = parsed(event("opened", at=NOW - timedelta(minutes=5))).events[0]
    assert first.event_id == again.event_id == unique.event_id != later.event_id
    assert parsed(event("delivered")).events[0].event_id != first.event_id


def test_without_relmails_ids_the_message_id_is_what_finds_the_delivery():
    for custom in ("order-4711", '["x"]', ""):
        [e] = parsed(event("hard_bounce", **{"X-Mailin-custom": custom})).events
        assert (e.customer_id, e.run_id, e.message_id) == (None, None, None)
        assert e.sent_id == "202611230900.12345678901@smtp-relay.mailin.fr"


def test_bad_fields_are_invalid_events_naming_the_field_and_the_others_still_count():
    records = [
        event("delivered", email="not-an-address"),
        event("delivered", ts_event="yesterday"),
        event("delivered", **{"X-Mailin-custom": '{"relmail_customer": 7}'}),
        {k: v for k, v in event("click").items() if k != "link"},
        event("delivered", ts_event=None, ts_epoch=None, ts=None),  # only the local, offset-less date is left
        event("spam"),
    ]
    batch = BV.parse_records([Record(i, r) for i, r in enumerate(records)], "webhook")
    assert [(bad.index, bad.field) for bad in batch.invalid] == [
        (0, "email"), (1, "ts_event"), (2, "X-Mailin-custom"), (3, "link"), (4, "date")]
    assert [e.type for e in batch.events] == ["complained"]


def test_a_page_of_the_events_api_reads_with_its_own_names(tmp_path):
    page = {"events": [
        {"email": "anna@example.com", "date": "2026-11-23T09:30:00.000+01:00", "messageId": "<1.2@smtp-relay.mailin.fr>",
         "event": "hardBounces", "reason": "550 5.1.1 user unknown", "tag": "weekly", "from": "news@fietsenwinkel.example"},
        {"email": "bram@example.com", "date": "2026-11-23T09:31:00.000+01:00", "messageId": "<1.3@smtp-relay.mailin.fr>",
         "event": "clicks", "link": "https://fietsenwinkel.example/a"},
        {"email": "bram@example.com", "date": "2026-11-23T09:31:00.000+01:00", "messageId": "<1.3@smtp-relay.mailin.fr>",
         "event": "loadedByProxy"},
    ]}
    path = tmp_path / "brevo-events.json"
    path.write_text(json.dumps(page))
    batch = BV.read_export(path)
    assert [(e.type, e.sent_id, e.occurred_at) for e in batch.events] == [
        ("bounced_hard", "1.2@smtp-relay.mailin.fr", datetime(2026, 11, 23, 8, 30, tzinfo=UTC)),
        ("clicked", "1.3@smtp-relay.mailin.fr", datetime(2026, 11, 23, 8, 31, tzinfo=UTC))]
    assert batch.ignored == {"loadedByProxy": 1}


_FIELDS = ["event", "email", "message-id", "ts_event", "ts_epoch", "ts", "date", "X-Mailin-custom", "reason", "link"]
_VALUES = st.one_of(st.none(), st.text(max_size=12), st.integers(-10**13, 10**13), st.floats(allow_nan=True), st.booleans(),
                    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                    st.sampled_from(["delivered", "hard_bounce", "click", "spam", "unique_opened", "anna@example.com",
                                     META, '{"relmail_customer": "C9"}', "<a@b>"]))


@settings(max_examples=300, deadline=None)
@given(st.sets(st.sampled_from(_FIELDS)), st.dictionaries(st.sampled_from(_FIELDS), _VALUES))
def test_the_parser_skips_or_names_the_bad_field_and_never_matches_wrongly(omit, replace):
    record = {k: v for k, v in {**event("hard_bounce", link="https://x.example/"), **replace}.items() if k not in omit}
    batch = BV.parse_records([Record(0, record)], "hypothesis")
    assert len(batch.events) + len(batch.invalid) + sum(batch.ignored.values()) == 1
    for bad in batch.invalid:
        assert bad.field in _FIELDS and bad.reason
    for e in batch.events:
        # Every id comes from the event's own fields, never from elsewhere.
        meta = json.loads(record["X-Mailin-custom"]) if e.customer_id or e.run_id or e.message_id else {}
        assert (e.customer_id, e.run_id, e.message_id) == tuple(
            meta.get(k) for k in ("relmail_customer", "relmail_run", "relmail_message"))
        assert e.sent_id is None or e.sent_id == str(record["message-id"]).strip().strip("<>")
        assert e.recipient == str(record["email"]) and "@" in e.recipient


# -- credentials ---------------------------------------------------------------------

def config(token: str | None = TOKEN, settings: dict | None = None) -> WebhookConfig:
    return WebhookConfig(secret_lookup={"brevo_webhook_token": token}.get, settings=settings or {}, now=lambda: NOW)


@pytest.mark.parametrize("request_", [
    WebhookRequest(b"{}", {"authorization": f"Bearer {TOKEN}"}),
    WebhookRequest(b"{}", auth=("brevo", TOKEN)),
    WebhookRequest(b"{}", path_secret=TOKEN),
])
def test_the_token_is_accepted_as_bearer_basic_or_path(request_):
    assert BV.verify(request_, config()) is None


def test_wrong_or_missing_credentials_are_refused():
    for wrong in (WebhookRequest(b"{}", {"authorization": "Bearer guess"}), WebhookRequest(b"{}", auth=("brevo", "guess")),
                  WebhookRequest(b"{}", auth=("someone", TOKEN)), WebhookRequest(b"{}", path_secret="gu\u00e9ss")):
        with pytest.raises(SignatureError, match="wrong webhook credentials"):
            BV.verify(wrong, config())
    with pytest.raises(MissingCredentials):
        BV.verify(WebhookRequest(b"{}"), config())
    assert BV.verify(WebhookRequest(b"{}", auth=("shop", TOKEN)), config(settings={"brevo": {"username": "shop"}})) is None


# -- through relmail serve, into the store ---------------------------------------------

@pytest.fixture
def brevo_shop(project, engine, monkeypatch):
    """(client, engine): four customers, anna's e-mail sent through Brevo (provider id recorded), the token set."""
    monkeypatch.setenv("RELMAIL_BREVO_WEBHOOK_TOKEN", TOKEN)
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [
            {"id": f"C000000{i}", "email": email, "created_at": T0 - timedelta(days=400), "attributes": {}}
            for i, email in enumerate(["anna@example.com", "bram@example.com", "carla@example.com", "daan@example.com"], 1)])
        conn.execute(Event.__table__.insert(), [{
            "event_id": "sent:1", "customer_id": "C0000001", "type": "email_sent", "occurred_at": T0,
            "message_id": "ebike-launch", "run_id": RUN, "topic": "promotions"}])
    return Client(make_app(Project.load(project.root), engine)), engine


def test_the_webhook_applies_events_and_a_redelivery_writes_nothing(brevo_shop):
    client, engine = brevo_shop
    now = datetime.now(UTC) - timedelta(minutes=1)
    body = [event("delivered", at=now), event("spam", email="daan@example.com", at=now,
                                               **{"X-Mailin-custom": "", "message-id": "<other@smtp-relay.mailin.fr>"}),
            event("proxy_open", at=now), event("brand_new", at=now)]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    answer = client.post("/webhooks/brevo", json=body, headers=auth)
    assert answer.status_code == 200, answer.text
    assert answer.json["applied"] == {"delivered": 1, "complained": 1}
    assert answer.json["ignored"] == {"proxy_open": 1, "brand_new": 1}
    assert prefs(engine)[("C0000004", "*")][:2] == (False, "esp-webhook")
    stored = feedback_events(engine)
    again = client.post("/webhooks/brevo", json=body, headers=auth)
    assert again.json["duplicates"] == 2 and feedback_events(engine) == stored
    # One event per POST, as Brevo sends without batching; credentials in the URL's path.
    single = client.post(f"/webhooks/brevo/{TOKEN}", json=event("hard_bounce", email="bram@example.com", at=now,
                                                                  **{"X-Mailin-custom": ""}))
    assert single.json["applied"] == {"bounced_hard": 1}


def test_the_webhook_refuses_what_brevo_did_not_send(brevo_shop, caplog):
    client, engine = brevo_shop
    body = json.dumps(event("spam", at=datetime.now(UTC))).encode()
    assert client.post("/webhooks/brevo", data=body).status_code == 401
    basic = base64.b64encode(b"brevo:guess").decode()
    assert client.post("/webhooks/brevo", data=body, headers={"Authorization": f"Basic {basic}"}).status_code == 403
    assert client.post("/webhooks/brevo/guess", data=body).status_code == 403
    assert client.post("/webhooks/brevo", data=b"[]", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 400
    assert client.post("/webhooks/brevo", data=b"\"x\"", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 400
    assert feedback_events(engine) == [] and TOKEN not in caplog.text and "anna" not in caplog.text


def test_an_event_without_ids_finds_its_delivery_by_brevos_message_id(brevo_shop, tmp_path, project):
    client, engine = brevo_shop
    with engine.begin() as conn:
        conn.execute(Delivery.__table__.insert(), [{
            "decision_id": 1, "run_id": RUN, "customer_id": "C0000003", "message_id": "ebike-launch", "status": "accepted",
            "adapter": "brevo", "provider_id": "202611230900.12345678901@smtp-relay.mailin.fr", "attempts": 1,
            "updated_at": T0}])
    at = datetime.now(UTC) - timedelta(minutes=1)
    path = tmp_path / "brevo.jsonl"
    # carla's e-mail, reported for an address she no longer has: the message-id, not the address, finds her.
    path.write_text(json.dumps(event("hard_bounce", email="carla.old@example.com", at=at, **{"X-Mailin-custom": ""})) + "\n")
    out = CliRunner().invoke(cli, ["-p", str(project.root), "feedback", "import", str(path), "--format", "brevo", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["applied"] == {"bounced_hard": 1}
    with engine.connect() as conn:
        rows = conn.execute(select(Event.__table__.c.customer_id, Event.__table__.c.run_id)
                            .where(Event.__table__.c.type == "email_bounced_hard")).all()
    assert rows == [("C0000003", RUN)]
