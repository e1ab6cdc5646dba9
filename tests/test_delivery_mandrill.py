"""Mandrill adapter at the HTTP boundary (``responses``), against ``POST /api/1.0/messages/send-raw`` as Mandrill documents it."""

from __future__ import annotations

import email
import json
import logging
from email import policy

import pytest
import requests
import responses

from delivery_messages import FakeTime, message
from relmail.delivery import DeliveryAborted, get_adapter
from relmail.errors import ConfigError, UnsupportedFeature
from test_provider_fixtures import cases

URL = "https://mandrillapp.com/api/1.0/messages/send-raw"
KEY = "md-0123456789abcdef-secret"


def adapter(ft: FakeTime | None = None, **cfg):
    ft = ft or FakeTime()
    return get_adapter("mandrill", {"concurrency": 1, **cfg}, {"esp_api_key": KEY}, clock=ft.clock, sleep=ft.sleep)


def ledger_message(i: int, **kw):
    return message(i, key=f"d{i}", **kw)


def result(status: str, reason: str | None = None):
    """A send-raw answer for the request's recipient: Mandrill's array of per-recipient results."""

    def answer(request):
        to = json.loads(request.body)["to"][0]
        return 200, {}, json.dumps([{"email": to, "status": status, "reject_reason": reason, "_id": f"id-{to}"}])

    return answer


def error(name: str, message: str = "", code: int = -1):
    return {"status": "error", "code": code, "name": name, "message": message or name}


def sent_mime(doc: dict):
    """The e-mail Mandrill's SMTP side reads from a send-raw body: ``raw_message`` parsed as the MIME it is."""
    return email.message_from_string(doc["raw_message"], policy=policy.default)


@responses.activate
def test_the_rendered_mime_goes_unchanged_with_sender_recipient_and_key_in_the_body():
    responses.add_callback(responses.POST, URL, callback=result("sent"))
    m = ledger_message(1)
    [r] = adapter(ip_pool="Main Pool").send([m])
    assert r.status == "accepted" and r.provider_id == "id-klant1@example.org" and r.http_status == 200
    doc = json.loads(responses.calls[0].request.body)
    # send-raw's documented parameters only: metadata, tags and subaccount have none of their own there.
    assert set(doc) == {"key", "raw_message", "from_email", "to", "async", "ip_pool"}
    assert (doc["key"], doc["from_email"], doc["to"], doc["async"], doc["ip_pool"]) == (
        KEY, "news@fietsenwinkel.example", ["klant1@example.org"], False, "Main Pool")
    assert doc["raw_message"].endswith(m.as_bytes().decode())  # the rendered e-mail, byte for byte
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in doc["raw_message"]


@responses.activate
def test_the_relmail_ids_and_tags_travel_as_mandrills_smtp_headers_which_its_events_echo():
    """X-MC-Metadata (JSON, Mandrill returns it as msg.metadata) and X-MC-Tags (comma-separated) on the raw MIME."""
    responses.add_callback(responses.POST, URL, callback=result("sent"))
    m = ledger_message(1, metadata={"relmail_customer": "C-ø1", "relmail_run": "weekly:2026-W49",
                                    "relmail_message": "ebike-launch"})
    adapter().send([m])
    mime = sent_mime(json.loads(responses.calls[0].request.body))
    assert json.loads(mime["X-MC-Metadata"]) == dict(m.metadata)
    assert mime["X-MC-Metadata"].isascii()  # a header value: what is not ASCII is a JSON escape
    assert mime["X-MC-Tags"] == "weekly,ebike-launch"
    assert mime["X-MC-Subaccount"] is None and mime["Message-ID"] == m.message_id


@responses.activate
def test_the_configured_subaccount_sends_every_email_through_it():
    responses.add_callback(responses.POST, URL, callback=result("sent"))
    adapter(subaccount="fietsenwinkel-nl").send([ledger_message(1), ledger_message(2)])
    assert [sent_mime(json.loads(c.request.body))["X-MC-Subaccount"] for c in responses.calls] == ["fietsenwinkel-nl"] * 2


@pytest.mark.parametrize("value", ["", "shop\r\nBcc: x@example.org", "winkel-ü", "x" * 256, 7])
def test_a_subaccount_that_cannot_be_mandrills_stops_the_adapter_before_it_sends(value):
    with pytest.raises(ConfigError, match=r"\[delivery.mandrill\]"):
        adapter(subaccount=value)


@pytest.mark.parametrize("extra, said", [
    ({"tags": ("_internal",)}, "tag '_internal'"),
    ({"tags": ("a,b",)}, "tag 'a,b'"),
    ({"tags": ("x" * 51,)}, "at most 50"),
    ({"tags": ("zomer-ü",)}, "tag 'zomer-ü'"),
    ({"metadata": {"relmail_customer": "C" * 200, "relmail_run": "r", "relmail_message": "m"}}, "250 bytes"),
])
@responses.activate
def test_what_mandrill_would_refuse_or_misread_stops_before_anything_is_sent(extra, said):
    with pytest.raises(UnsupportedFeature, match=said):
        adapter().send([ledger_message(1), ledger_message(2, **extra)])
    assert len(responses.calls) == 0


@responses.activate
@pytest.mark.parametrize("status", ["sent", "queued", "scheduled"])
def test_sent_queued_and_scheduled_are_accepted(status):
    responses.add_callback(responses.POST, URL, callback=result(status))
    [r] = adapter().send([ledger_message(1)])
    assert r.status == "accepted" and r.provider_id


@responses.activate
@pytest.mark.parametrize(("reason", "hard", "feedback"), [
    ("hard-bounce", True, None),
    ("spam", False, "complained"),
    ("unsub", False, "unsubscribed"),
    ("soft-bounce", False, None),
    ("custom", False, None),
    ("rule", False, None),
])
def test_a_rejected_recipient_is_refused_for_good_and_says_what_it_tells_of_the_address(reason, hard, feedback):
    responses.add_callback(responses.POST, URL, callback=result("rejected", reason))
    responses.add_callback(responses.POST, URL, callback=result("sent"))
    first, second = adapter().send([ledger_message(1), ledger_message(2)])
    assert first.status == "rejected" and first.reason == f"Mandrill rejected it: {reason}"
    assert first.hard_bounce is hard and first.feedback == feedback
    assert second.status == "accepted"


@responses.activate
def test_an_invalid_address_is_a_hard_bounce():
    responses.add_callback(responses.POST, URL, callback=result("invalid"))
    [r] = adapter().send([ledger_message(1)])
    assert r.status == "rejected" and r.hard_bounce


@responses.activate
@pytest.mark.parametrize(("answer", "fix"), [
    (error("Invalid_Key", "Invalid API key"), "in the secret esp_api_key"),
    (error("PaymentRequired", "This feature is only available for paid accounts"), "paid for"),
    (error("Unknown_Subaccount", "No subaccount exists with the id 'shop'"), "\\[delivery.mandrill\\] subaccount"),
])
def test_a_refused_account_stops_the_batch_at_once_and_keeps_what_was_accepted(answer, fix):
    responses.add_callback(responses.POST, URL, callback=result("sent"))
    responses.add(responses.POST, URL, status=500, json=answer)
    with pytest.raises(DeliveryAborted, match=fix) as info:
        adapter().send([ledger_message(i) for i in range(1, 4)])
    assert [r.status for r in info.value.results] == ["accepted", "deferred", "deferred"]
    # Not retried as a server fault, and the third e-mail was not posted: it would be refused alike.
    assert len(responses.calls) == 2


@responses.activate
@pytest.mark.parametrize(("reason", "fix"), [
    ("unsigned", "Sending Domains"), ("invalid-sender", "refuses \\[sender\\] from_email"), ("test-mode-limit", "production key"),
])
def test_a_rejection_of_the_sender_or_key_stops_the_send_instead_of_refusing_each_email(reason, fix):
    responses.add_callback(responses.POST, URL, callback=result("rejected", reason))
    with pytest.raises(DeliveryAborted, match=fix) as info:
        adapter().send([ledger_message(1), ledger_message(2)])
    assert [r.status for r in info.value.results] == ["deferred", "deferred"] and len(responses.calls) == 1


@responses.activate
def test_a_validation_error_rejects_that_email_with_mandrills_message_without_retrying():
    responses.add(responses.POST, URL, status=500, json=error("ValidationError", "You must specify a raw_message value"))
    responses.add_callback(responses.POST, URL, callback=result("sent"))
    first, second = adapter().send([ledger_message(1), ledger_message(2)])
    assert first.status == "rejected" and first.reason == "Mandrill ValidationError: You must specify a raw_message value"
    assert not first.hard_bounce and second.status == "accepted" and len(responses.calls) == 2


@responses.activate
def test_a_general_error_defers_the_email_for_the_retry_delay_without_retrying_now():
    responses.add(responses.POST, URL, status=500, json=error("GeneralError", "An unexpected error occurred"))
    ft = FakeTime()
    [r] = adapter(ft, retry_delay=900).send([ledger_message(1)])
    assert r.status == "deferred" and not r.ambiguous and len(responses.calls) == 1 and ft.sleeps == []
    assert (r.retry_at - ft.now).total_seconds() == 900


@responses.activate
def test_a_5xx_without_mandrills_answer_is_retried_then_deferred():
    responses.add(responses.POST, URL, status=503, body="<html>upstream unavailable</html>")
    responses.add_callback(responses.POST, URL, callback=result("sent"))
    ft = FakeTime()
    [r] = adapter(ft).send([ledger_message(1)])
    assert r.status == "accepted" and len(responses.calls) == 2 and ft.sleeps == [1.0]


@responses.activate
def test_a_lost_answer_is_not_sent_again_and_stays_ambiguous():
    responses.add(responses.POST, URL, body=requests.exceptions.ReadTimeout("read timed out"))
    responses.add_callback(responses.POST, URL, callback=result("sent"))
    [r] = adapter().send([ledger_message(1)])
    # send-raw has no idempotency key: a second request could deliver a second e-mail.
    assert r.status == "deferred" and r.ambiguous and len(responses.calls) == 1


@responses.activate
def test_a_connection_that_never_opened_is_retried_as_nothing_was_sent():
    responses.add(responses.POST, URL, body=requests.exceptions.ConnectTimeout("connect timed out"))
    responses.add_callback(responses.POST, URL, callback=result("sent"))
    [r] = adapter().send([ledger_message(1)])
    assert r.status == "accepted" and len(responses.calls) == 2


@responses.activate
@pytest.mark.parametrize("body", ["[]", "not json", '[{"email": "someone.else@example.org", "status": "sent"}, {}]'])
def test_a_200_without_the_recipients_result_is_ambiguous_never_resent(body):
    responses.add(responses.POST, URL, status=200, body=body)
    [r] = adapter().send([ledger_message(1)])
    assert r.status == "deferred" and r.ambiguous and len(responses.calls) == 1


@responses.activate
def test_the_api_key_never_reaches_the_log_or_an_error(caplog):
    caplog.set_level(logging.DEBUG)
    responses.add(responses.POST, URL, status=500, json=error("Invalid_Key", "Invalid API key"))
    with pytest.raises(DeliveryAborted) as info:
        adapter().send([ledger_message(1)])
    seen = [str(info.value), repr(info.value), *(r.reason for r in info.value.results), caplog.text, json.dumps(adapter().describe())]
    assert not any(KEY in s for s in seen)


def test_without_the_api_key_the_adapter_does_not_start():
    with pytest.raises(ConfigError, match="secret 'esp_api_key' is not set"):
        get_adapter("mandrill", {}, {})


ACCEPTED, REJECTED, HARD, DEFERRED, STOPPED = "accepted", "rejected", "hard bounce", "deferred", "stopped"
#: Each documented answer of send-raw (tests/fixtures/providers/mandrill_errors.json) -> what becomes of the e-mails.
ERRORS = {"mandrill": {
    "200 sent": ACCEPTED, "200 queued": ACCEPTED, "200 scheduled": ACCEPTED, "200 invalid": HARD,
    "200 rejected: hard-bounce": HARD, "200 rejected: invalid": HARD, "200 rejected: soft-bounce": REJECTED,
    "200 rejected: spam": REJECTED, "200 rejected: unsub": REJECTED, "200 rejected: custom": REJECTED,
    "200 rejected: rule": REJECTED, "200 rejected: invalid-sender": STOPPED, "200 rejected: unsigned": STOPPED,
    "200 rejected: test-mode-limit": STOPPED, "500 Invalid_Key": STOPPED, "500 PaymentRequired": STOPPED,
    "500 Unknown_Subaccount": STOPPED, "500 ValidationError": REJECTED, "500 GeneralError": DEFERRED,
}}


@pytest.mark.parametrize("name, entry, expected", cases("errors", ERRORS))
@responses.activate
def test_each_documented_answer_accepts_rejects_defers_or_stops_the_run(name, entry, expected):
    responses.add(responses.POST, URL, json=entry["body"], status=entry["status"])
    messages = [ledger_message(1), ledger_message(2)]
    if expected == STOPPED:
        with pytest.raises(DeliveryAborted) as info:
            adapter().send(messages)
        assert [r.status for r in info.value.results] == ["deferred"] * len(messages)  # resumable after the fix
        return
    results = adapter().send(messages)
    got = [HARD if r.hard_bounce else r.status for r in results]
    assert got == [expected] * len(messages), [r.reason for r in results]
    assert not any(r.ambiguous for r in results) and len(responses.calls) == len(messages)  # each answered, none retried
