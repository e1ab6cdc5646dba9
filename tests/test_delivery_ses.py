"""Amazon SES v2 adapter at the HTTP boundary (``responses``), signed with SigV4."""

from __future__ import annotations

import base64
import json
import re

import pytest
import responses
from hypothesis import given
from hypothesis import strategies as st

from delivery_messages import FakeTime, message
from relmail.delivery import DeliveryAborted, get_adapter
from relmail.errors import ConfigError, UnsupportedFeature

URL = "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTESTRELMAIL")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-test")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-test")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never probe instance metadata in tests


def adapter(ft: FakeTime | None = None, **cfg):
    ft = ft or FakeTime()
    cfg = {"region": "eu-west-1", "concurrency": 1, **cfg}
    return get_adapter("ses", cfg, {}, clock=ft.clock, sleep=ft.sleep)


@responses.activate
def test_raw_message_request_shape_and_sigv4_signature():
    responses.add(responses.POST, URL, json={"MessageId": "0102018c-ses-id"})
    m = message(1)
    [r] = adapter(configuration_set="relmail-events").send([m])
    assert (r.status, r.provider_id) == ("accepted", "0102018c-ses-id")
    req = responses.calls[0].request
    auth = req.headers["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDTESTRELMAIL/")
    assert "/eu-west-1/ses/aws4_request" in auth and "Signature=" in auth
    assert req.headers["X-Amz-Security-Token"] == "session-token-test"
    assert "X-Amz-Date" in req.headers
    body = json.loads(req.body)
    assert body["FromEmailAddress"] == "Fietsenwinkel <news@fietsenwinkel.example>"
    assert body["Destination"] == {"ToAddresses": ["klant1@example.org"]}
    assert base64.b64decode(body["Content"]["Raw"]["Data"]) == m.as_bytes()
    assert body["ReplyToAddresses"] == ["service@fietsenwinkel.example"]
    assert body["ConfigurationSetName"] == "relmail-events"
    assert body["EmailTags"] == [
        {"Name": "relmail_customer", "Value": "C0000001"},
        {"Name": "relmail_run", "Value": "run-2026-W48"},
        {"Name": "relmail_message", "Value": "ebike-launch"},
        {"Name": "relmail_tag1", "Value": "weekly"},
        {"Name": "relmail_tag2", "Value": "ebike-launch"},
    ]


@responses.activate
def test_error_types_map_to_results_and_throttling_is_retried():
    responses.add(responses.POST, URL, status=429, headers={"x-amzn-ErrorType": "TooManyRequestsException:"}, json={"message": "Maximum sending rate exceeded."})
    responses.add(responses.POST, URL, json={"MessageId": "id-1"})
    responses.add(responses.POST, URL, status=400, headers={"x-amzn-ErrorType": "MessageRejected:"}, json={"message": "Illegal address"})
    responses.add(responses.POST, URL, status=400, headers={"x-amzn-ErrorType": "SendingPausedException:"}, json={"message": "Sending paused"})
    ft = FakeTime()
    with pytest.raises(DeliveryAborted, match="SendingPausedException") as info:
        adapter(ft).send([message(i) for i in range(4)])
    results = info.value.results
    assert [r.status for r in results] == ["accepted", "rejected", "deferred", "deferred"]
    assert ft.sleeps == [1.0]  # no Retry-After from SES: back-off
    assert "MessageRejected" in results[1].reason and "Illegal address" in results[1].reason
    assert len(responses.calls) == 4


def test_tag_names_ses_refuses_are_reported_before_sending():
    with pytest.raises(UnsupportedFeature, match="EmailTag relmail:run"):
        adapter().send([message(1, metadata={"relmail:run": "weekly"})])


@given(st.text(max_size=40))
def test_tag_values_are_encoded_reversibly_in_the_characters_ses_allows(value):
    from relmail.delivery.ses import decode_tag, encode_tag

    encoded = encode_tag(value)
    assert re.fullmatch("[A-Za-z0-9_-]*", encoded)
    assert decode_tag(encoded) == value


@responses.activate
def test_ids_longer_than_ses_allows_travel_not_at_all_and_the_event_finds_the_email_by_its_ses_id():
    """A 64-character Hebrew customer id is 768 characters encoded: the e-mail goes without relmail's ids
    (not refused), and SES's events of it carry the id SES answered with, which ties them to the delivery."""
    from relmail.feedback import provider

    responses.add(responses.POST, URL, json={"MessageId": "0102-long-id"})
    long_id = "\u05dc" * 64
    [r] = adapter().send([message(1, metadata={"relmail_customer": long_id, "relmail_run": "run-2026-W48",
                                                "relmail_message": "ebike-launch"})])
    assert (r.status, r.provider_id) == ("accepted", "0102-long-id")
    tags = json.loads(responses.calls[0].request.body)["EmailTags"]
    assert tags == [{"Name": "relmail_tag1", "Value": "weekly"}, {"Name": "relmail_tag2", "Value": "ebike-launch"}]
    event = {"eventType": "Bounce", "mail": {"messageId": "0102-long-id", "tags": {t["Name"]: [t["Value"]] for t in tags}},
             "bounce": {"bounceType": "Permanent", "feedbackId": "fb-1", "timestamp": "2026-11-24T09:00:00.000Z",
                        "bouncedRecipients": [{"emailAddress": "klant1@example.org"}]}}
    [parsed] = provider("ses").parse_event(event)
    assert (parsed.sent_id, parsed.customer_id, parsed.run_id, parsed.message_id) == ("0102-long-id", None, None, None)


def test_missing_region_and_credentials_are_config_errors(monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(ConfigError, match="region"):
        get_adapter("ses", {}, {})
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    with pytest.raises(ConfigError, match="AWS credentials"):
        get_adapter("ses", {"region": "eu-west-1"}, {})


@responses.activate
def test_each_request_is_marked_just_before_it_and_its_answer_reported_just_after():
    """A sender killed between two requests leaves the e-mails not yet requested unmarked (sent again), and the
    answers already given on record: the ledger's point of no return and answers follow the requests one by one."""
    log: list[tuple[str, list[str]]] = []

    def answer(request):
        log.append(("request", [json.loads(request.body)["Destination"]["ToAddresses"][0]]))
        return 200, {}, json.dumps({"MessageId": f"ses-{len(log)}"})

    responses.add_callback(responses.POST, URL, callback=answer)
    a = adapter()
    a.on_commit = lambda keys: log.append(("mark", [k.split(":")[1] for k in keys]))
    a.on_answer = lambda results: log.append(("answer", [r.provider_id for r in results]))
    a.send([message(1), message(2)])
    assert log == [("mark", ["C0000001"]), ("request", ["klant1@example.org"]), ("answer", ["ses-2"]),
                   ("mark", ["C0000002"]), ("request", ["klant2@example.org"]), ("answer", ["ses-5"])]
