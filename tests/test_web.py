"""The WSGI app: ESP webhooks (both backends); the pages are tests/test_web_pages.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import responses
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from tests.webkit import ONE_CLICK, RUN, T0, feedback_events, prefs, token
from werkzeug.test import Client

from relmail.feedback import ses
from relmail.project import Project
from relmail.store.models import Customer, Event
from relmail.web.app import create_app, make_app

DATA = Path(__file__).parent / "data" / "feedback"
TOPIC_ARN = "arn:aws:sns:eu-west-1:123456789012:relmail-ses-events"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-web.pem"


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def web_shop(project, engine, monkeypatch, ec_key):
    """(client, project, engine) with four customers, one sent message and every webhook configured."""
    trust_sendgrid_key(monkeypatch, ec_key)
    monkeypatch.setenv("RELMAIL_MAILGUN_WEBHOOK_KEY", "key-mailgun-test")
    monkeypatch.setenv("RELMAIL_POSTMARK_WEBHOOK_PASSWORD", "pm-pass")
    config = project.root / "relmail.toml"
    config.write_text(config.read_text() + f'\n[feedback.ses]\ntopic_arns = ["{TOPIC_ARN}"]\n')
    project = Project.load(project.root)
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [
            {"id": f"C000000{i}", "email": email, "created_at": T0 - timedelta(days=400), "attributes": {}}
            for i, email in enumerate(["anna@example.com", "bram@example.com", "carla@example.com", "daan@example.com"], 1)
        ])
        conn.execute(Event.__table__.insert(), [{
            "event_id": "sent:1", "customer_id": "C0000001", "type": "email_sent", "occurred_at": T0,
            "message_id": "ebike-launch", "run_id": RUN, "topic": "promotions"}])
    return Client(make_app(project, engine)), project, engine


# -- webhooks -----------------------------------------------------------------

def trust_sendgrid_key(monkeypatch, key) -> None:
    """Make ``key``'s public half the project's SendGrid webhook verification key."""
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    monkeypatch.setenv("RELMAIL_SENDGRID_WEBHOOK_PUBLIC_KEY", base64.b64encode(der).decode())


def sendgrid_headers(key, body: bytes, ts: int | None = None) -> dict:
    ts = ts or int(time.time())
    sig = key.sign(str(ts).encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": str(ts)}


def test_sendgrid_webhook_applies_signed_events_and_redelivery_is_a_no_op(web_shop, ec_key):
    client, _, engine = web_shop
    body = (DATA / "sendgrid_events.json").read_bytes()
    response = client.post("/webhooks/sendgrid", data=body, headers=sendgrid_headers(ec_key, body),
                           content_type="application/json")
    assert response.status_code == 200, response.text
    result = response.json
    assert (result["received"], result["total_applied"], result["unknown_recipients"]) == (13, 9, 1)
    assert result["ignored"] == {"deferred": 1, "open": 1, "processed": 1} and result["invalid"] == []
    # The plan's view: bram hard-bounced and unsubscribed, daan complained.
    assert prefs(engine)[("C0000002", "*")][:2] == (False, "esp-webhook")
    assert prefs(engine)[("C0000004", "*")][:2] == (False, "esp-webhook")
    assert prefs(engine)[("C0000001", "promotions")][:2] == (False, "esp-webhook")  # group unsubscribe
    stored = feedback_events(engine)
    again = client.post("/webhooks/sendgrid", data=body, headers=sendgrid_headers(ec_key, body), content_type="application/json")
    assert again.json["duplicates"] == 9 and feedback_events(engine) == stored


def test_forged_webhooks_are_rejected_and_write_nothing(web_shop, ec_key):
    client, _, engine = web_shop
    body = (DATA / "sendgrid_events.json").read_bytes()
    forger = ec.generate_private_key(ec.SECP256R1())
    assert client.post("/webhooks/sendgrid", data=body, headers=sendgrid_headers(forger, body)).status_code == 403
    assert client.post("/webhooks/sendgrid", data=body).status_code == 401
    stale = sendgrid_headers(ec_key, body, int(time.time()) - 7200)
    assert client.post("/webhooks/sendgrid", data=body, headers=stale).status_code == 403

    ts, tok = str(int(time.time())), "t" * 50
    data = json.loads((DATA / "mailgun_events.json").read_text())["items"][1]
    forged = hmac.new(b"wrong-key", f"{ts}{tok}".encode(), hashlib.sha256).hexdigest()
    mg = {"signature": {"timestamp": ts, "token": tok, "signature": forged}, "event-data": data}
    assert client.post("/webhooks/mailgun", json=mg).status_code == 403
    # A signature with a character that is no hex digit: refused like any other, not a server error.
    for odd in ("é" * 64, "\u0000" + forged[1:], 12345):
        mg["signature"]["signature"] = odd
        assert client.post("/webhooks/mailgun", json=mg).status_code == 403

    pm = (DATA / "postmark_webhooks.jsonl").read_text().splitlines()[1]
    missing = client.post("/webhooks/postmark", data=pm)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Basic")
    wrong = base64.b64encode(b"postmark:guess").decode()
    assert client.post("/webhooks/postmark", data=pm, headers={"Authorization": f"Basic {wrong}"}).status_code == 403
    assert client.post("/webhooks/postmark/guess", data=pm).status_code == 403
    assert feedback_events(engine) == [] and prefs(engine) == {}


def test_a_bad_signature_is_refused_with_what_to_check(web_shop, ec_key, caplog):
    """A key of another account or subuser, or a proxy that re-encodes the body: the answer and the log say
    which key to check, under its environment variable, not only that the signature is wrong."""
    client, _, _ = web_shop
    body = (DATA / "sendgrid_events.json").read_bytes()
    other_account = ec.generate_private_key(ec.SECP256R1())
    answer = client.post("/webhooks/sendgrid", data=body, headers=sendgrid_headers(other_account, body))
    expected = ("sendgrid: signature does not match (is RELMAIL_SENDGRID_WEBHOOK_PUBLIC_KEY the verification key "
                "SendGrid shows for this Event Webhook, and does a proxy pass the body on unchanged?)")
    assert answer.status_code == 403 and answer.json["error"] == expected
    assert f"webhook sendgrid refused: {expected}" in caplog.text
    ts, tok = str(int(time.time())), "t" * 50
    forged = hmac.new(b"wrong-key", f"{ts}{tok}".encode(), hashlib.sha256).hexdigest()
    mg = {"signature": {"timestamp": ts, "token": tok, "signature": forged},
          "event-data": json.loads((DATA / "mailgun_events.json").read_text())["items"][1]}
    assert client.post("/webhooks/mailgun", json=mg).json["error"] == (
        "mailgun: signature does not match (is RELMAIL_MAILGUN_WEBHOOK_KEY the domain's HTTP webhook signing key?)")


def test_every_refused_webhook_is_logged_without_the_body(web_shop, ec_key, caplog):
    """A provider set up without credentials, or posting another format, is refused on every
    event: the operator learns it from the log, which names the provider and the reason only."""
    client, _, _ = web_shop
    pm = (DATA / "postmark_webhooks.jsonl").read_text().splitlines()[1]
    assert client.post("/webhooks/postmark", data=pm).status_code == 401
    assert "webhook postmark refused: postmark: no credentials" in caplog.text

    body = b'[{"email": "anna@example.org", "event": "deliv'  # cut off in transit
    answer = client.post("/webhooks/sendgrid", data=body, headers=sendgrid_headers(ec_key, body))
    assert answer.status_code == 400
    assert answer.json["error"].startswith("sendgrid webhook: body is not JSON: Unterminated string")
    assert answer.json["error"].count("body is not JSON") == 1
    form = b"signature=abc&token=def&timestamp=1&event=delivered&recipient=anna%40example.org"  # Mailgun's legacy webhooks
    assert client.post("/webhooks/mailgun", data=form, content_type="application/x-www-form-urlencoded").status_code == 400
    # JSON nested deeper than Python's recursion limit, posted before any signature is checked: a 400, not a 500.
    for provider in ("sendgrid", "mailgun", "postmark", "ses"):
        deep = client.post(f"/webhooks/{provider}", data=b"[" * 100_000, headers=sendgrid_headers(ec_key, b"[" * 100_000),
                           content_type="application/json", auth=("postmark", "pm-pass"))
        assert deep.status_code == 400 and deep.json["error"] == f"{provider} webhook: body is JSON nested too deeply"
    refused = [r.getMessage() for r in caplog.records if r.name == "relmail.web"]
    assert refused[1] == f"webhook sendgrid refused: {answer.json['error']}"
    assert refused[2].startswith("webhook mailgun refused: mailgun webhook: body is not JSON")
    assert "anna" not in caplog.text


def test_mailgun_and_postmark_webhooks_apply_valid_requests(web_shop):
    client, _, engine = web_shop
    ts, tok = str(int(time.time())), "u" * 50
    data = json.loads((DATA / "mailgun_events.json").read_text())["items"][1]
    sig = hmac.new(b"key-mailgun-test", f"{ts}{tok}".encode(), hashlib.sha256).hexdigest()
    mg = client.post("/webhooks/mailgun", json={"signature": {"timestamp": ts, "token": tok, "signature": sig}, "event-data": data})
    assert mg.status_code == 200 and mg.json["applied"] == {"bounced_hard": 1}

    lines = (DATA / "postmark_webhooks.jsonl").read_text().splitlines()
    auth = base64.b64encode(b"postmark:pm-pass").decode()
    pm = client.post("/webhooks/postmark", data=lines[4], headers={"Authorization": f"Basic {auth}"})
    assert pm.status_code == 200 and pm.json["applied"] == {"complained": 1}
    assert client.post("/webhooks/postmark/pm-pass", data=lines[7]).json["applied"] == {"unsubscribed": 1}
    kinds = [(c, t) for c, t, *_ in feedback_events(engine)]
    assert kinds == [("C0000002", "email_bounced_hard"), ("C0000002", "email_unsubscribed"), ("C0000004", "email_complained")]


def test_webhook_routing_errors(web_shop):
    client, _, _ = web_shop
    assert client.post("/webhooks/sparkpost", data=b"[]").status_code == 404
    assert client.post("/webhooks/sendgrid/secret", data=b"[]").status_code == 404
    assert client.get("/webhooks/sendgrid").status_code == 405
    assert client.get("/healthz").text == "ok\n"


@pytest.fixture(scope="module")
def sns_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(7)
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


def sns_signed(key, envelope: dict) -> bytes:
    envelope = {**envelope, "SignatureVersion": "2", "SigningCertURL": CERT_URL}
    sig = key.sign(ses.string_to_sign(envelope), padding.PKCS1v15(), hashes.SHA256())
    return json.dumps({**envelope, "Signature": base64.b64encode(sig).decode()}).encode()


@responses.activate
def test_ses_subscription_confirmation_and_notification(web_shop, sns_key):
    client, _, engine = web_shop
    ses.clear_certificate_cache()
    responses.get(CERT_URL, body=sns_key[1])
    subscribe = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=relmail&Token=abc"
    responses.get(subscribe, body="<ConfirmSubscriptionResponse/>")
    confirm = {"Type": "SubscriptionConfirmation", "MessageId": "m-1", "Token": "abc", "TopicArn": TOPIC_ARN,
               "Message": "You have chosen to subscribe.", "SubscribeURL": subscribe, "Timestamp": "2026-11-23T10:00:00Z"}
    response = client.post("/webhooks/ses", data=sns_signed(sns_key[0], confirm),
                           headers={"x-amz-sns-message-type": "SubscriptionConfirmation"}, content_type="text/plain")
    assert response.status_code == 200 and response.json["received"] == 0
    assert any(call.request.url == subscribe for call in responses.calls)

    complaint = json.loads((DATA / "ses_events.jsonl").read_text().splitlines()[4])
    note = {"Type": "Notification", "MessageId": "m-2", "TopicArn": TOPIC_ARN, "Message": json.dumps(complaint),
            "Timestamp": "2026-11-23T11:00:01Z"}
    body = sns_signed(sns_key[0], note)
    assert client.post("/webhooks/ses", data=body, content_type="text/plain").json["applied"] == {"complained": 1}
    tampered = body.replace(b"abuse", b"other")
    assert client.post("/webhooks/ses", data=tampered, content_type="text/plain").status_code == 403
    assert [(c, t) for c, t, *_ in feedback_events(engine)] == [("C0000004", "email_complained")]
    ses.clear_certificate_cache()


@responses.activate
@pytest.mark.parametrize("cert_url", ["https://sns.eu-west-1.amazonaws.com:abc/x.pem", "https://sns.eu-west-1.amazonaws.com:99999/x.pem",
                                      "https://[::1/x.pem", "https://sns.eu-west-1.amazonaws.com.evil.example/x.pem",
                                      "https://evil.example@sns.eu-west-1.amazonaws.com:8443/x.pem",
                                      "http://evil.example/\r\nFAKE LOG LINE " + "A" * 5000])
def test_a_forged_signing_certificate_url_is_refused_with_403_and_never_fetched(web_shop, cert_url, caplog):
    # Anyone can post these: a port that is no number was a server error with a traceback; and the
    # sender's URL, echoed, would put what they like (new lines, kilobytes) into the log.
    client, _, engine = web_shop
    note = {"Type": "Notification", "MessageId": "m-9", "TopicArn": TOPIC_ARN, "Message": "{}", "Timestamp": "2026-11-23T11:00:01Z",
            "SignatureVersion": "2", "SigningCertURL": cert_url, "Signature": base64.b64encode(b"x" * 256).decode()}
    response = client.post("/webhooks/ses", data=json.dumps(note), content_type="text/plain")
    assert response.status_code == 403 and "is not an https URL on sns.<region>.amazonaws.com" in response.json["error"]
    assert len(responses.calls) == 0 and feedback_events(engine) == []
    assert "evil" not in caplog.text and "evil" not in response.text and "FAKE LOG LINE" not in caplog.text


def identity_notification(kind: str, recipient: str, sent_id: str, at: str = "2026-11-23T11:00:00.000Z") -> dict:
    """An SES notification for the identity (not a configuration set), as AWS documents it: no ``mail.tags``."""
    mail = {"timestamp": "2026-11-23T10:00:00.000Z", "source": "news@fietsenwinkel.example", "messageId": sent_id,
            "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/fietsenwinkel.example",
            "sendingAccountId": "123456789012", "destination": [recipient]}
    if kind == "Bounce":
        detail = {"bounceType": "Permanent", "bounceSubType": "General", "timestamp": at, "reportingMTA": "dsn; mx.example",
                  "feedbackId": f"fb-{sent_id}", "bouncedRecipients": [
                      {"emailAddress": recipient, "action": "failed", "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]}
    else:
        detail = {"complainedRecipients": [{"emailAddress": recipient}], "timestamp": at, "feedbackId": f"fb-{sent_id}",
                  "complaintFeedbackType": "abuse", "arrivalDate": at}
    return {"notificationType": kind, kind.lower(): detail, "mail": mail}


@responses.activate
def test_ses_identity_notifications_are_tied_to_their_e_mail_by_the_ses_message_id(web_shop, sns_key):
    """No tags: ``mail.messageId`` finds the delivery (its customer, run and message); an unknown id falls back to the address."""
    from relmail.store.models import Delivery

    client, _, engine = web_shop
    ses.clear_certificate_cache()
    responses.get(CERT_URL, body=sns_key[1])
    sent_id = "0102018d1a2b3c4d-aaaa-0001-000000"
    with engine.begin() as conn:
        # A second record with anna's address: by the address alone, a bounce of it is both customers'.
        conn.execute(Customer.__table__.insert(), [{"id": "C0000005", "email": "anna@example.com", "created_at": T0, "attributes": {}}])
        conn.execute(Delivery.__table__.insert(), [{
            "decision_id": 1, "run_id": RUN, "customer_id": "C0000001", "message_id": "ebike-launch", "status": "accepted",
            "provider_id": sent_id, "updated_at": T0}])

    def post(message: dict, n: int):
        note = {"Type": "Notification", "MessageId": f"m-{n}", "TopicArn": TOPIC_ARN, "Message": json.dumps(message),
                "Timestamp": "2026-11-23T11:00:01Z"}
        response = client.post("/webhooks/ses", data=sns_signed(sns_key[0], note), content_type="text/plain")
        assert response.status_code == 200, response.text
        return response.json

    assert post(identity_notification("Bounce", "anna@example.com", sent_id), 1)["applied"] == {"bounced_hard": 1}
    assert post(identity_notification("Complaint", "ANNA@example.com", sent_id), 2)["applied"] == {"complained": 1}
    # Sent by something else (or before relmail kept the id): the address is all there is.
    assert post(identity_notification("Complaint", "bram@example.com", "0102018d-not-ours-000000"), 3)["applied"] == {
        "complained": 1}
    assert [(c, t, topic, m) for c, t, topic, m, _ in feedback_events(engine)] == [
        ("C0000001", "email_bounced_hard", "promotions", "ebike-launch"),
        ("C0000001", "email_complained", "promotions", "ebike-launch"),
        ("C0000002", "email_complained", None, None),
    ]
    with engine.connect() as conn:
        runs = dict(conn.execute(select(Event.__table__.c.customer_id, Event.__table__.c.run_id).where(
            Event.__table__.c.type == "email_bounced_hard")).all())
    assert runs == {"C0000001": RUN}  # counted with the run in `relmail report`
    assert prefs(engine)[("C0000001", "*")][:2] == (False, "esp-webhook") and ("C0000005", "*") not in prefs(engine)
    ses.clear_certificate_cache()


@responses.activate
def test_ses_answers_503_when_sns_cannot_be_reached(web_shop, sns_key, caplog):
    """SNS retries only after a 5xx or no answer: a network fault on our side must not drop a complaint."""
    import logging

    import requests

    caplog.set_level(logging.INFO, "relmail")
    client, _, engine = web_shop
    ses.clear_certificate_cache()
    subscribe = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=relmail&Token=secret-token"
    confirm = {"Type": "SubscriptionConfirmation", "MessageId": "m-1", "Token": "abc", "TopicArn": TOPIC_ARN,
               "Message": "You have chosen to subscribe.", "SubscribeURL": subscribe, "Timestamp": "2026-11-23T10:00:00Z"}
    complaint = json.loads((DATA / "ses_events.jsonl").read_text().splitlines()[4])
    note = {"Type": "Notification", "MessageId": "m-2", "TopicArn": TOPIC_ARN, "Message": json.dumps(complaint),
            "Timestamp": "2026-11-23T11:00:01Z"}

    responses.get(CERT_URL, body=requests.ConnectionError("connection reset"))
    response = client.post("/webhooks/ses", data=sns_signed(sns_key[0], note), content_type="text/plain")
    assert response.status_code == 503 and "signing certificate" in response.json["error"]
    responses.replace(responses.GET, CERT_URL, status=502)
    assert client.post("/webhooks/ses", data=sns_signed(sns_key[0], note), content_type="text/plain").status_code == 503
    assert feedback_events(engine) == []

    responses.replace(responses.GET, CERT_URL, body=sns_key[1])
    responses.get(subscribe, body=requests.ConnectTimeout("timed out"))
    response = client.post("/webhooks/ses", data=sns_signed(sns_key[0], confirm), content_type="text/plain")
    assert response.status_code == 503 and TOPIC_ARN in response.json["error"]
    responses.replace(responses.GET, subscribe, status=404)
    response = client.post("/webhooks/ses", data=sns_signed(sns_key[0], confirm), content_type="text/plain")
    assert response.status_code == 503 and response.json["error"].endswith(": sns.eu-west-1.amazonaws.com answered HTTP 404")
    responses.replace(responses.GET, subscribe, body="<ConfirmSubscriptionResponse/>")
    assert client.post("/webhooks/ses", data=sns_signed(sns_key[0], confirm), content_type="text/plain").status_code == 200
    assert f"confirmed the SNS subscription to {TOPIC_ARN}" in caplog.text
    assert "secret-token" not in caplog.text  # the URL's token confirms the subscription: never logged

    # With the certificate back, SNS's retry of the complaint is applied.
    assert client.post("/webhooks/ses", data=sns_signed(sns_key[0], note), content_type="text/plain").json["applied"] == {
        "complained": 1}
    ses.clear_certificate_cache()


@responses.activate
@pytest.mark.parametrize("failure", ["connection", "timeout", "HTTP 500", "HTTP 403", "HTTP 404"])
def test_no_failure_to_reach_sns_shows_the_subscription_token(web_shop, sns_key, caplog, failure):
    """Every way the GETs to SNS fail answers 503 and names the host; the URL (its token) is in no answer and no log."""
    import logging

    import requests

    caplog.set_level(logging.DEBUG)
    client, _, _ = web_shop
    ses.clear_certificate_cache()
    token = "2336412f37fb687f5d51e6e2425f004aed"
    subscribe = f"https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=relmail&Token={token}"
    if failure == "connection":
        answer = {"body": requests.ConnectionError(f"cannot reach {subscribe}")}
    elif failure == "timeout":
        answer = {"body": requests.ReadTimeout(f"read timed out: {subscribe}")}
    else:
        answer = {"status": int(failure.split()[-1]), "body": f"<Error>{subscribe}</Error>"}
    responses.get(CERT_URL, body=sns_key[1])
    responses.get(subscribe, **answer)
    confirm = {"Type": "SubscriptionConfirmation", "MessageId": "m-1", "Token": token, "TopicArn": TOPIC_ARN,
               "Message": "You have chosen to subscribe.", "SubscribeURL": subscribe, "Timestamp": "2026-11-23T10:00:00Z"}
    response = client.post("/webhooks/ses", data=sns_signed(sns_key[0], confirm), content_type="text/plain")
    assert response.status_code == 503
    assert response.json["error"].startswith(f"ses: could not confirm the subscription to {TOPIC_ARN}: ")
    assert "sns.eu-west-1.amazonaws.com" in response.json["error"]
    assert token not in response.text and token not in caplog.text
    ses.clear_certificate_cache()


@responses.activate
@pytest.mark.parametrize("status, code", [(403, 403), (404, 403), (500, 503)])
def test_a_certificate_sns_refuses_or_fails_is_named_by_its_host_and_status(web_shop, sns_key, status, code):
    """A 4xx for the certificate is a bad signature (403, SNS does not retry); a 5xx is ours to retry (503)."""
    client, _, engine = web_shop
    ses.clear_certificate_cache()
    responses.get(CERT_URL, status=status)
    note = {"Type": "Notification", "MessageId": "m-2", "TopicArn": TOPIC_ARN, "Message": "{}",
            "Timestamp": "2026-11-23T11:00:01Z"}
    response = client.post("/webhooks/ses", data=sns_signed(sns_key[0], note), content_type="text/plain")
    assert response.status_code == code
    assert response.json["error"].endswith(f"sns.eu-west-1.amazonaws.com answered HTTP {status}")
    assert feedback_events(engine) == []
    ses.clear_certificate_cache()


def test_create_app_reads_the_project_from_the_environment(web_shop, monkeypatch):
    _, project, engine = web_shop
    monkeypatch.setenv("RELMAIL_PROJECT", str(project.root))
    client = Client(create_app())
    assert client.post(f"/unsubscribe/{token('C0000003', 'newsletter')}", **ONE_CLICK).status_code == 200
    assert prefs(engine) == {("C0000003", "newsletter"): (False, "unsubscribe-link", None)}


def test_the_links_own_path_is_answered_as_the_root_is(web_shop):
    """A new project's links are https://<domain>/relmail/unsubscribe/TOKEN; a proxy that passes /relmail/ on
    as it is reached only a 404 (an unsubscribe link that does not work). Both paths answer, nothing else moves."""
    client, project, engine = web_shop
    assert project.settings.unsubscribe_url.endswith("/relmail")
    link = f"/relmail/unsubscribe/{token('C0000003', 'newsletter')}"
    page = client.get(link)
    assert page.status_code == 200 and page.data == client.get(link.removeprefix("/relmail")).data
    assert client.post(link, **ONE_CLICK).status_code == 200
    assert prefs(engine) == {("C0000003", "newsletter"): (False, "unsubscribe-link", None)}
    assert client.get(f"/relmail/preferences/{token('C0000002', 'newsletter')}").status_code == 200
    assert client.get("/relmail/healthz").status_code == 200
    assert client.get("/relmail/other/x").status_code == 404 and client.get("/relmail").status_code == 404


def test_behind_a_proxy_on_a_path_every_answer_stays_under_it(web_shop):
    """A proxy hands https://shop.example/relmail/... on as it is, or strips /relmail: the pages link and post
    relative to where they are and never redirect, so no answer leads out of /relmail (a redirect's Location is
    built from what the app sees: without /relmail when the proxy strips it, and with http)."""
    client, _, _ = web_shop
    for prefix in ("/relmail", ""):
        for cut_off in ("/unsubscribe", "/preferences"):
            page = client.get(prefix + cut_off)
            assert (page.status_code, page.headers.get("Location")) == (400, None), prefix + cut_off
        page = client.get(f"{prefix}/unsubscribe/{token('C0000003', 'newsletter')}")
        assert page.status_code == 200 and '<form method="post">' in page.text and ' action=' not in page.text
        assert 'href="../preferences/' in page.text and f'href="{prefix}/' not in page.text


# -- what providers really send: one odd event, replayed tokens ----------------

def mailgun_post(client, data: dict, token: str, key: bytes = b"key-mailgun-test", ts: str | None = None):
    ts = ts or str(int(time.time()))
    sig = hmac.new(key, f"{ts}{token}".encode(), hashlib.sha256).hexdigest()
    return client.post("/webhooks/mailgun", json={"signature": {"timestamp": ts, "token": token, "signature": sig},
                                                  "event-data": data})


def test_a_webhook_body_with_one_invalid_event_applies_the_valid_ones_and_reports_its_index(web_shop, ec_key):
    client, _, engine = web_shop
    now = int(time.time())
    events = [
        {"email": "bram@example.com", "timestamp": now, "event": "bounce", "type": "bounce", "sg_event_id": "ok-1"},
        # SendGrid's Marketing Campaigns events carry milliseconds: a valid time.
        {"email": "carla@example.com", "timestamp": now * 1000, "event": "spamreport", "sg_event_id": "ok-ms"},
        {"email": "anna@example.com", "timestamp": "soon", "event": "delivered", "sg_event_id": "bad-2"},
        {"email": "daan@example.com", "timestamp": now, "event": "unsubscribe", "sg_event_id": "ok-3"},
    ]
    body = json.dumps(events).encode()
    response = client.post("/webhooks/sendgrid", data=body, headers=sendgrid_headers(ec_key, body), content_type="application/json")
    assert response.status_code == 200, response.text
    assert response.json["invalid"] == [{"index": 2, "field": "timestamp", "reason": response.json["invalid"][0]["reason"]}]
    assert response.json["applied"] == {"bounced_hard": 1, "complained": 1, "unsubscribed": 1}
    assert [(c, t) for c, t, *_ in feedback_events(engine)] == [
        ("C0000002", "email_bounced_hard"), ("C0000003", "email_complained"), ("C0000004", "email_unsubscribed")]
    from relmail.feedback.ingest import rejects

    [kept] = rejects(engine)
    assert (kept["provider"], kept["source"], kept["position"], kept["field"]) == ("sendgrid", "webhook", 2, "timestamp")
    assert json.loads(kept["raw_event"]) == events[2]


def test_a_replayed_mailgun_token_with_other_event_data_is_refused(web_shop):
    client, _, engine = web_shop
    items = json.loads((DATA / "mailgun_events.json").read_text())["items"]
    delivered, complaint = items[0], items[5]
    ts = str(int(time.time()))
    first = mailgun_post(client, delivered, "r" * 50, ts=ts)
    assert first.status_code == 200 and first.json["applied"] == {"delivered": 1}
    # The same signature glued to other event data (a complaint for someone): refused, nothing written.
    replay = mailgun_post(client, complaint, "r" * 50, ts=ts)
    assert replay.status_code == 403 and "already used" in replay.json["error"]
    assert [t for _, t, *_ in feedback_events(engine)] == ["email_delivered"] and prefs(engine) == {}
    # Mailgun's own redelivery of the same body: a duplicate, not an error.
    again = mailgun_post(client, delivered, "r" * 50, ts=ts)
    assert again.status_code == 200 and again.json["redelivered"] is True and again.json["total_applied"] == 0


def test_mailgun_tokens_are_forgotten_after_the_replay_window(web_shop):
    from relmail.store.models import WebhookToken

    client, _, engine = web_shop
    item = json.loads((DATA / "mailgun_events.json").read_text())["items"][0]
    old = str(int(time.time()) - 600)  # inside the 900 s window: accepted, kept until it leaves it
    assert mailgun_post(client, item, "w" * 50, ts=old).status_code == 200
    assert mailgun_post(client, item, "x" * 50).status_code == 200
    with engine.connect() as conn:
        kept = dict(conn.execute(select(WebhookToken.__table__.c.token, WebhookToken.__table__.c.expires_at)).all())
    assert set(kept) == {"w" * 50, "x" * 50}
    assert abs((kept["w" * 50] - datetime.fromtimestamp(int(old) + 900, UTC)).total_seconds()) < 1
    with engine.begin() as conn:  # let the first one expire
        conn.execute(WebhookToken.__table__.update().where(WebhookToken.__table__.c.token == "w" * 50)
                     .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert mailgun_post(client, item, "y" * 50).status_code == 200
    with engine.connect() as conn:
        assert sorted(conn.execute(select(WebhookToken.__table__.c.token)).scalars()) == ["x" * 50, "y" * 50]


def test_an_invalid_mailgun_event_is_answered_200_and_recorded(web_shop):
    client, _, engine = web_shop
    item = {**json.loads((DATA / "mailgun_events.json").read_text())["items"][1], "timestamp": 33_000_000_000}  # year 3015
    response = mailgun_post(client, item, "z" * 50)
    assert response.status_code == 200
    assert [(b["index"], b["field"]) for b in response.json["invalid"]] == [(0, "timestamp")]
    assert "implausible time" in response.json["invalid"][0]["reason"]
    assert feedback_events(engine) == []
