"""Provider parsing and signature checks, without a database.

Fixtures in tests/data/feedback/ follow the payload shapes of each
provider's documentation; the signatures are made here with test keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import responses
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from relmail.errors import ConfigError, SignatureError, ValidationError
from relmail.feedback import mailgun, postmark, provider, sendgrid, ses
from relmail.feedback.events import FeedbackEvent
from relmail.feedback.records import FieldError
from relmail.feedback.webhook import MissingCredentials, WebhookConfig, WebhookRequest

DATA = Path(__file__).parent / "data" / "feedback"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
TOPIC = "arn:aws:sns:eu-west-1:123456789012:relmail-ses-events"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"


SG, MG, PM, SES = (provider(name, now=lambda: NOW) for name in ("sendgrid", "mailgun", "postmark", "ses"))


def read_export(path, fmt: str):
    return provider(fmt, now=lambda: NOW).read_export(path)


def config(secrets: dict, settings: dict | None = None, now: datetime = NOW) -> WebhookConfig:
    return WebhookConfig(secret_lookup=secrets.get, settings=settings or {}, now=lambda: now)


# -- SendGrid -----------------------------------------------------------------

@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def sendgrid_public(key) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def sendgrid_request(key, body: bytes, timestamp: int) -> WebhookRequest:
    signature = key.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    return WebhookRequest(body, {sendgrid.SIGNATURE_HEADER: base64.b64encode(signature).decode(),
                                 sendgrid.TIMESTAMP_HEADER: str(timestamp)})


def test_sendgrid_valid_signature_returns_the_events(ec_key):
    body = (DATA / "sendgrid_events.json").read_bytes()
    events = SG.receive(sendgrid_request(ec_key, body, int(NOW.timestamp())),
                        config({sendgrid.SECRET: sendgrid_public(ec_key)})).events
    assert len(events) == 10
    assert events[0].event_id == "sendgrid:rWVYmVk90MjZJ9iohOBa3w=="


def test_sendgrid_accepts_a_pem_public_key(ec_key):
    pem = ec_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    body = b'[{"email":"a@example.com","timestamp":1795428000,"event":"delivered","sg_event_id":"x1"}]'
    events = SG.receive(sendgrid_request(ec_key, body, int(NOW.timestamp())), config({sendgrid.SECRET: pem.decode()})).events
    assert [e.type for e in events] == ["delivered"]


def test_sendgrid_rejects_a_tampered_body_another_key_and_missing_headers(ec_key):
    body = b'[{"email":"a@example.com","timestamp":1795428000,"event":"delivered","sg_event_id":"x1"}]'
    cfg = config({sendgrid.SECRET: sendgrid_public(ec_key)})
    good = sendgrid_request(ec_key, body, int(NOW.timestamp()))
    with pytest.raises(SignatureError, match="does not match"):
        SG.verify(WebhookRequest(body.replace(b"delivered", b"spamreport"), good.headers), cfg)
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(SignatureError, match="does not match"):
        SG.verify(sendgrid_request(other, body, int(NOW.timestamp())), cfg)
    with pytest.raises(MissingCredentials):
        SG.verify(WebhookRequest(body, {}), cfg)
    garbage = WebhookRequest(body, {sendgrid.SIGNATURE_HEADER: "!!!", sendgrid.TIMESTAMP_HEADER: "soon"})
    with pytest.raises(SignatureError):
        SG.verify(garbage, cfg)


def test_sendgrid_rejects_a_stale_timestamp_even_when_signed(ec_key):
    body = b"[]"
    stale = int((NOW - timedelta(hours=1)).timestamp())
    with pytest.raises(SignatureError, match="away from now"):
        SG.verify(sendgrid_request(ec_key, body, stale), config({sendgrid.SECRET: sendgrid_public(ec_key)}))


def test_sendgrid_without_a_configured_key_refuses_with_a_config_error(ec_key):
    with pytest.raises(ConfigError, match="sendgrid_webhook_public_key"):
        SG.verify(sendgrid_request(ec_key, b"[]", int(NOW.timestamp())), config({}))


def test_sendgrid_mapping_follows_the_documented_event_names():
    by_id = {e.provider_event_id: e for e in read_export(DATA / "sendgrid_events.json", "sendgrid").events}
    assert by_id["6g4ZI7SA-xmRDv57GoPIPw=="].type == "bounced_hard"  # bounce, type bounce
    assert by_id["Bp4vbWh1Qy6y0DhAqB2ZyA=="].type == "bounced_blocked"  # bounce, type blocked: the sender refused
    assert by_id["37nvH5QBz858KGVYCM5uGA=="].type == "complained"  # spamreport
    assert by_id["zmzJhfJgAfUSOW80yEbPyw=="].type == "bounced_hard"  # dropped: Bounced Address
    group = by_id["ahSCB7xYcXFb-hEaawsPRw=="]
    assert (group.type, group.scope, group.customer_id, group.message_id) == ("unsubscribed", "topic", "C0000001", "ebike-launch")
    assert by_id["zz_BjPgU_5pS-J8vlfB1sg=="].scope == "all"
    assert by_id["kCAi1KttyQdEKHhdC-nuEA=="].url == "https://fietsenwinkel.example/eb-200?utm_campaign=weekly"
    # processed, deferred and the Apple machine open are not the customer's doing.
    assert "rbtnWrG1DVDGGGFHFyun0A==" not in by_id and "t7LEShmowp86DTdUW8M-GQ==" not in by_id
    assert "c3VtbWVyIG1hY2hpbmUgb3Blbg==" not in by_id


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["email", "timestamp", "event", "sg_event_id", "type", "reason", "url",
                                        "relmail_customer", "sg_machine_open"]),
                       st.one_of(st.none(), st.text(max_size=12), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                                 st.sampled_from(["delivered", "bounce", "open", "click", "spamreport", "dropped"]))))
def test_sendgrid_parser_either_parses_or_names_the_bad_field(record):
    try:
        events = SG.parse_event(record)
    except FieldError as exc:
        assert exc.field in record or exc.field in ("event", "email", "timestamp", "sg_event_id")
        return
    for event in events:
        assert event.occurred_at.tzinfo is not None and event.provider == "sendgrid"


# -- Mailgun ------------------------------------------------------------------

def mailgun_body(key: str, event_data: dict, timestamp: int, token: str = "a" * 50) -> bytes:
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return json.dumps({"signature": {"timestamp": str(timestamp), "token": token, "signature": signature},
                       "event-data": event_data}).encode()


MG_EVENT = {"id": "G9Bn5sl1TC6nu79C8C0bwg", "timestamp": 1795428010.1, "event": "failed", "severity": "permanent",
            "recipient": "bram@example.com", "delivery-status": {"code": 550, "message": "550 5.1.1 unknown"},
            "user-variables": {"relmail_customer": "C0000002"}}


def click(url: str, n: int) -> dict:
    return {"email": "anna@example.com", "timestamp": int(NOW.timestamp()) - 60, "event": "click", "url": url,
            "sg_event_id": f"click-{n}", "relmail_customer": "C0000001", "relmail_run": "weekly:2026-W48"}


@pytest.mark.parametrize("base", ["https://fietsenwinkel.example/relmail", "https://FietsenWinkel.example/relmail/"])
def test_a_tracked_click_on_relmails_own_unsubscribe_or_preference_link_is_no_engagement(tmp_path, base):
    # An ESP's click tracking rewrites every link of the e-mail, the unsubscribe link too: a customer leaving
    # came back as a click, counted in the report's click (and open) rate and read by the model as interest.
    links = base.lower().rstrip("/")
    records = [click(f"{links}/unsubscribe/WyJDMDAwMDAwMSJd.sig", 1), click(f"{links}/preferences/WyJDMDAwMDAwMSJd.sig", 2),
               click("https://fietsenwinkel.example/eb-200", 3),
               click("https://elsewhere.example/relmail/unsubscribe/x", 4),  # another site's page
               click("https://fietsenwinkel.example/relmail-blog/unsubscribe/x", 5)]
    (tmp_path / "events.json").write_text(json.dumps(records))
    batch = sendgrid.SendGrid(now=lambda: NOW, links=base).read_export(tmp_path / "events.json")
    assert [e.provider_event_id for e in batch.events] == ["click-3", "click-4", "click-5"]
    assert batch.ignored == {"click on the unsubscribe or preference link": 2}
    # Without [unsubscribe] base_url nothing is relmail's own link.
    assert len(sendgrid.SendGrid(now=lambda: NOW).read_export(tmp_path / "events.json").events) == 5


def test_every_provider_knows_the_projects_links(project):
    # Mailgun's documented click, on the project's own preference link, through the factory the webhooks use.
    page = json.loads((DATA / "mailgun_events.json").read_text())
    (item,) = [i for i in page["items"] if i["event"] == "clicked"]
    item["url"] = f"{project.settings.unsubscribe_url}/preferences/WyJDMDAwMDAwMSJd.sig"
    path = project.root / "mailgun.json"
    path.write_text(json.dumps([item]))
    batch = provider("mailgun", now=lambda: NOW, project=project).read_export(path)
    assert batch.events == [] and batch.ignored == {"click on the unsubscribe or preference link": 1}


def test_mailgun_valid_signature_and_forgeries():
    cfg = config({mailgun.SECRET: "key-test"})
    ts = int(NOW.timestamp())
    events = MG.receive(WebhookRequest(mailgun_body("key-test", MG_EVENT, ts)), cfg).events
    assert [(e.type, e.customer_id, e.reason) for e in events] == [("bounced_hard", "C0000002", "550 5.1.1 unknown")]
    with pytest.raises(SignatureError, match="does not match"):
        MG.receive(WebhookRequest(mailgun_body("key-forged", MG_EVENT, ts)), cfg)
    with pytest.raises(SignatureError, match="away from now"):
        MG.receive(WebhookRequest(mailgun_body("key-test", MG_EVENT, ts - 3600)), cfg)
    with pytest.raises(MissingCredentials):
        MG.receive(WebhookRequest(json.dumps({"event-data": MG_EVENT}).encode()), cfg)
    with pytest.raises(ValidationError):
        MG.receive(WebhookRequest(b"not json"), cfg)


def test_mailgun_failed_needs_a_known_severity():
    with pytest.raises(FieldError) as exc:
        MG.parse_event({**MG_EVENT, "severity": "sometimes"})
    assert exc.value.field == "severity"


# -- Postmark -----------------------------------------------------------------

PM_BOUNCE = json.loads((DATA / "postmark_webhooks.jsonl").read_text().splitlines()[1])


def test_postmark_basic_auth_and_path_secret():
    cfg = config({postmark.SECRET: "s3cret"})
    body = json.dumps(PM_BOUNCE).encode()
    assert [e.type for e in PM.receive(WebhookRequest(body, auth=("postmark", "s3cret")), cfg).events] == ["bounced_hard"]
    assert len(PM.receive(WebhookRequest(body, path_secret="s3cret"), cfg).events) == 1
    for bad in (WebhookRequest(body, auth=("postmark", "guess")), WebhookRequest(body, auth=("admin", "s3cret")),
                WebhookRequest(body, path_secret="guess")):
        with pytest.raises(SignatureError, match="wrong webhook credentials"):
            PM.receive(bad, cfg)
    with pytest.raises(MissingCredentials):
        PM.receive(WebhookRequest(body), cfg)
    custom = config({postmark.SECRET: "s3cret"}, {"postmark": {"username": "hooks"}})
    assert len(PM.receive(WebhookRequest(body, auth=("hooks", "s3cret")), custom).events) == 1


def test_postmark_bounce_times_keep_their_offset():
    event = PM.parse_event(PM_BOUNCE)[0]
    assert event.occurred_at == datetime(2026, 11, 23, 10, 0, 10, 273539, tzinfo=UTC)
    assert event.provider_event_id == "Bounce:4323372036854775807"


def test_postmark_reactivation_is_not_consent():
    record = {"RecordType": "SubscriptionChange", "ChangedAt": "2026-11-24T12:00:00Z", "Recipient": "c@example.com",
              "SuppressSending": False, "SuppressionReason": None}
    assert PM.parse_event(record) == []


# -- SES via SNS --------------------------------------------------------------

@pytest.fixture(scope="module")
def rsa_cert():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=365))
            .sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


def sns_sign(key, envelope: dict, version: str = "2", cert_url: str = CERT_URL) -> dict:
    envelope = {**envelope, "SignatureVersion": version, "SigningCertURL": cert_url}
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(ses.string_to_sign(envelope), padding.PKCS1v15(), digest)
    return {**envelope, "Signature": base64.b64encode(signature).decode()}


SES_BOUNCE = json.loads((DATA / "ses_events.jsonl").read_text().splitlines()[2])


def notification(message: dict, topic: str = TOPIC) -> dict:
    return {"Type": "Notification", "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324", "TopicArn": topic,
            "Message": json.dumps(message), "Timestamp": "2026-11-23T10:00:11.000Z",
            "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe"}


@pytest.fixture
def ses_cfg(rsa_cert):
    ses.clear_certificate_cache()
    with responses.RequestsMock() as mock:
        mock.get(CERT_URL, body=rsa_cert[1])
        yield config({}, {"ses": {"topic_arns": [TOPIC]}}), mock
    ses.clear_certificate_cache()


@pytest.mark.parametrize("version", ["1", "2"])
def test_ses_signature_versions_1_and_2_verify(ses_cfg, rsa_cert, version):
    cfg, _ = ses_cfg
    body = json.dumps(sns_sign(rsa_cert[0], notification(SES_BOUNCE), version)).encode()
    events = SES.receive(WebhookRequest(body), cfg).events
    assert [(e.type, e.recipient, e.reason) for e in events] == [("bounced_hard", "bram@example.com", "smtp; 550 5.1.1 user unknown")]


def test_ses_certificate_is_fetched_once_and_cached(ses_cfg, rsa_cert):
    cfg, mock = ses_cfg
    for _ in range(3):
        SES.receive(WebhookRequest(json.dumps(sns_sign(rsa_cert[0], notification(SES_BOUNCE))).encode()), cfg)
    assert len(mock.calls) == 1


def test_ses_rejects_forgeries_foreign_certificates_and_topics(ses_cfg, rsa_cert):
    cfg, _ = ses_cfg
    signed = sns_sign(rsa_cert[0], notification(SES_BOUNCE))
    tampered = {**signed, "Message": signed["Message"].replace("Permanent", "Transient")}
    with pytest.raises(SignatureError, match="does not match"):
        SES.receive(WebhookRequest(json.dumps(tampered).encode()), cfg)
    for url in ("http://sns.eu-west-1.amazonaws.com/cert.pem", "https://sns.eu-west-1.amazonaws.com.evil.example/c.pem",
                "https://evil.example/sns.eu-west-1.amazonaws.com/c.pem"):
        with pytest.raises(SignatureError, match="not an https URL"):
            SES.receive(WebhookRequest(json.dumps(sns_sign(rsa_cert[0], notification(SES_BOUNCE), cert_url=url)).encode()), cfg)
    other = sns_sign(rsa_cert[0], notification(SES_BOUNCE, topic="arn:aws:sns:eu-west-1:999999999999:theirs"))
    with pytest.raises(SignatureError, match="not in \\[feedback.ses\\] topic_arns"):
        SES.receive(WebhookRequest(json.dumps(other).encode()), cfg)
    with pytest.raises(MissingCredentials):
        SES.receive(WebhookRequest(json.dumps(notification(SES_BOUNCE)).encode()), cfg)
    with pytest.raises(ConfigError, match="topic_arns"):
        SES.receive(WebhookRequest(json.dumps(signed).encode()), config({}))


def test_ses_subscription_confirmation_follows_subscribe_url_only_when_signed_for_our_topic(ses_cfg, rsa_cert):
    cfg, mock = ses_cfg
    subscribe = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=2336412f37"
    mock.get(subscribe, body="<ConfirmSubscriptionResponse/>")
    envelope = {"Type": "SubscriptionConfirmation", "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
                "Token": "2336412f37", "TopicArn": TOPIC, "Message": "You have chosen to subscribe to the topic.",
                "SubscribeURL": subscribe, "Timestamp": "2026-11-23T10:00:00.000Z"}
    assert SES.receive(WebhookRequest(json.dumps(sns_sign(rsa_cert[0], envelope)).encode()), cfg).events == []
    assert [c.request.url for c in mock.calls][-1] == subscribe
    calls = len(mock.calls)
    foreign = sns_sign(rsa_cert[0], {**envelope, "TopicArn": "arn:aws:sns:eu-west-1:999999999999:theirs"})
    with pytest.raises(SignatureError):
        SES.receive(WebhookRequest(json.dumps(foreign).encode()), cfg)
    assert len(mock.calls) == calls  # nothing followed


def test_ses_subscription_management_maps_topic_and_global_opt_outs():
    base = {"eventType": "Subscription", "mail": {"messageId": "m1", "destination": ["a@example.com"], "tags": {}}}
    topic = {**base, "subscription": {"timestamp": "2026-11-23T10:00:00Z", "newTopicPreferences": {
        "unsubscribeAll": False, "topicSubscriptionStatus": [{"topicName": "promotions", "subscriptionStatus": "OptOut"}]}}}
    everything = {**base, "subscription": {"timestamp": "2026-11-23T10:00:00Z", "newTopicPreferences": {"unsubscribeAll": True}}}
    assert [(e.type, e.scope, e.topic) for e in SES.parse_event(topic)] == [("unsubscribed", "topic", "promotions")]
    assert [(e.type, e.scope) for e in SES.parse_event(everything)] == [("unsubscribed", "all")]


# -- exports ------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, fmt, expected",
    [
        ("sendgrid_events.json", "sendgrid", {"delivered": 2, "opened": 1, "clicked": 1, "bounced_hard": 2,
                                              "bounced_blocked": 1, "complained": 1, "unsubscribed": 2}),
        ("sendgrid_events.csv", "sendgrid", {"delivered": 1, "bounced_hard": 1, "clicked": 1}),
        ("mailgun_events.json", "mailgun", {"delivered": 1, "bounced_hard": 1, "bounced_soft": 1, "opened": 1,
                                            "clicked": 1, "complained": 1, "unsubscribed": 1}),
        ("postmark_webhooks.jsonl", "postmark", {"delivered": 1, "bounced_hard": 1, "bounced_soft": 1, "complained": 1,
                                                 "opened": 1, "clicked": 1, "unsubscribed": 1}),
        ("postmark_bounces_api.json", "postmark", {"bounced_hard": 1, "bounced_soft": 1}),
        ("ses_events.jsonl", "ses", {"delivered": 1, "bounced_hard": 2, "bounced_soft": 1, "complained": 1,
                                     "opened": 1, "clicked": 1}),
    ],
)
def test_exports_parse_to_exact_counts(name, fmt, expected):
    from collections import Counter

    assert dict(Counter(e.type for e in read_export(DATA / name, fmt).events)) == expected


def test_bad_export_records_name_line_index_and_field_and_the_rest_is_kept(tmp_path):
    path = tmp_path / "events.jsonl"
    lines = (DATA / "postmark_webhooks.jsonl").read_text().splitlines()
    lines[2] = lines[2].replace('"BouncedAt": "2026-11-23T10:00:20Z"', '"BouncedAt": "2026-11-23 10:00:20"')
    lines[5] = lines[5].replace('"RecordType": "Open", ', "")
    path.write_text("\n".join(lines) + "\n")
    batch = read_export(path, "postmark")
    assert [(bad.line, bad.index, bad.field) for bad in batch.invalid] == [(3, 2, "BouncedAt"), (6, 5, "RecordType")]
    assert "has no UTC offset" in batch.invalid[0].reason
    assert batch.invalid[0].raw["BouncedAt"] == "2026-11-23 10:00:20"  # the provider's event as it was
    assert len(batch.events) == len(read_export(DATA / "postmark_webhooks.jsonl", "postmark").events) - 2


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"eventType": "Delivery"}\n{"eventType": \n')
    with pytest.raises(ValidationError) as exc:
        read_export(path, "ses")
    assert (exc.value.problems[0].line, "invalid JSON" in exc.value.problems[0].message) == (2, True)


def test_json_array_records_report_their_own_lines(tmp_path):
    path = tmp_path / "events.json"
    path.write_text('[\n  {"email": "a@example.com", "timestamp": 1795428000, "event": "delivered", "sg_event_id": "1"},\n'
                    '  {"email": "b@example.com", "timestamp": "yesterday", "event": "delivered", "sg_event_id": "2"}\n]\n')
    batch = read_export(path, "sendgrid")
    assert [(bad.line, bad.index, bad.field) for bad in batch.invalid] == [(3, 1, "timestamp")]
    assert [e.provider_event_id for e in batch.events] == ["1"]


def test_feedback_event_refuses_naive_times_and_unknown_types():
    with pytest.raises(ValueError, match="timezone-aware"):
        FeedbackEvent("delivered", datetime(2026, 1, 1), "a@example.com", "x", "1")
    with pytest.raises(ValueError, match="unknown feedback type"):
        FeedbackEvent("bounced", NOW, "a@example.com", "x", "1")
    long = FeedbackEvent("delivered", NOW, "a@example.com", "x", "y" * 300)
    assert len(long.event_id) <= 128 and long.event_id.startswith("x:sha256:")


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["delivered", "bounce", "spamreport", "processed"]),
                          st.sampled_from(["ok", "ms", "iso", "garbage", "future", "missing"])), max_size=25))
def test_every_record_is_either_an_event_ignored_or_invalid_with_its_own_index(rows):
    """Partial reading loses nothing and invents nothing: each record is counted exactly once."""
    times = {"ok": 1795428000, "ms": 1795428000000, "iso": "2026-11-23T10:00:00+01:00", "garbage": "soon",
             "future": 33_000_000_000, "missing": None}
    records = []
    for i, (kind, when) in enumerate(rows):
        record = {"email": f"r{i}@example.com", "event": kind, "sg_event_id": f"id{i}", "type": "bounce"}
        if times[when] is not None:
            record["timestamp"] = times[when]
        records.append(record)
    from relmail.feedback.records import Record

    batch = SG.parse_records([Record(i, r) for i, r in enumerate(records)], "hypothesis")
    bad = {i for i, (kind, when) in enumerate(rows) if kind != "processed" and when in ("garbage", "future", "missing")}
    assert [b.index for b in batch.invalid] == sorted(bad)
    assert all(b.field == "timestamp" and b.raw == records[b.index] for b in batch.invalid)
    assert sorted(int(e.provider_event_id[2:]) for e in batch.events) == [
        i for i, (kind, _) in enumerate(rows) if kind != "processed" and i not in bad]
    assert sum(batch.ignored.values()) == sum(kind == "processed" for kind, _ in rows)
    assert batch.records == len(rows)
