"""Mailjet adapter at the HTTP boundary (``responses``), against the shapes of Send API v3.1's documentation."""

from __future__ import annotations

import base64
import json
import logging
from datetime import timedelta

import pytest
import requests
import responses

from delivery_messages import NOW, FakeTime, message
from relmail.delivery import DeliveryAborted, get_adapter
from relmail.errors import ConfigError, DeliveryError, UnsupportedFeature

URL = "https://api.mailjet.com/v3.1/send"
KEY, SECRET = "mj-public-key", "mj-SECRET-never-shown"


def adapter(ft: FakeTime | None = None, **cfg):
    ft = ft or FakeTime()
    return get_adapter("mailjet", cfg, {"esp_api_key": KEY, "esp_api_secret": SECRET}, clock=ft.clock, sleep=ft.sleep)


def success(entry: dict, n: int) -> dict:
    return {"Status": "success", "CustomID": entry["CustomID"], "To": [
        {"Email": entry["To"][0]["Email"], "MessageUUID": f"uuid-{n}", "MessageID": 70368744188491000 + n,
         "MessageHref": f"https://api.mailjet.com/v3/REST/message/{70368744188491000 + n}"}], "Cc": [], "Bcc": []}


def error(code: str, status: int, text: str, related: list[str]) -> dict:
    return {"Status": "error", "Errors": [{"ErrorIdentifier": "f987008f-251a-4dff-8ffc-40f1583ad7bc", "ErrorCode": code,
                                          "StatusCode": status, "ErrorMessage": text, "ErrorRelatedTo": related}]}


def ok(request):
    items = json.loads(request.body)["Messages"]
    return 200, {}, json.dumps({"Messages": [success(item, i) for i, item in enumerate(items)]})


def sent() -> list[dict]:
    return [json.loads(c.request.body) for c in responses.calls]


@responses.activate
def test_message_matches_the_v3_1_shape_with_basic_auth():
    responses.add_callback(responses.POST, URL, callback=ok)
    m = message(1, raw=False)
    [r] = adapter(track_opens="disabled", track_clicks="enabled").send([m])
    assert r.status == "accepted" and r.provider_id == "70368744188491000"  # the number Mailjet's events carry
    request = responses.calls[0].request
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    assert json.loads(request.body) == {"Messages": [{
        "From": {"Email": "news@fietsenwinkel.example", "Name": "Fietsenwinkel"},
        "To": [{"Email": "klant1@example.org", "Name": "Klant 1"}],
        "Subject": m.subject,
        "TextPart": m.text,
        "HTMLPart": m.html,
        "ReplyTo": {"Email": "service@fietsenwinkel.example"},
        # The one-click pair reaches Mailjet as headers of the e-mail; the Message-ID does not: Mailjet lists it
        # among the headers it refuses (send-0011) and writes its own. relmail's travels as a custom header,
        # which a bounce returning the headers names the delivery by.
        "Headers": {"List-Unsubscribe": "<https://fietsenwinkel.example/relmail/unsubscribe/tok1>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                    "X-Relmail-Message-ID": "<run-2026-W48.C0000001.ebike@fietsenwinkel.example>"},
        "CustomID": m.key,
        "EventPayload": '{"relmail_customer":"C0000001","relmail_message":"ebike-launch","relmail_run":"run-2026-W48"}',
        "CustomCampaign": "weekly/ebike-launch",
        "TrackOpens": "disabled",
        "TrackClicks": "enabled",
    }]}


@responses.activate
def test_sandbox_sets_sandbox_mode_on_the_request():
    responses.add_callback(responses.POST, URL, callback=ok)
    adapter(sandbox=True).send([message(1, raw=False)])
    assert sent()[0]["SandboxMode"] is True


@responses.activate
def test_requests_carry_at_most_50_messages_each_exactly_once_in_order():
    responses.add_callback(responses.POST, URL, callback=ok)
    messages = [message(i, raw=False) for i in range(120)]
    results = adapter().send(messages)
    assert [len(b["Messages"]) for b in sent()] == [50, 50, 20]
    assert [e["CustomID"] for b in sent() for e in b["Messages"]] == [m.key for m in messages]
    assert [r.provider_id for r in results] == [str(70368744188491000 + i % 50) for i in range(120)]


@responses.activate
def test_a_mixed_answer_gives_each_message_its_own_result():
    def mixed(request):
        items = json.loads(request.body)["Messages"]
        return 400, {}, json.dumps({"Messages": [
            success(items[0], 0),
            error("mj-0013", 400, '"klant2@example" is an invalid email address.', ["To[0].Email"]),
            error("send-0003", 400, 'At least "HTMLPart", "TextPart" or "TemplateID" must be provided.',
                  ["HTMLPart", "TextPart", "TemplateID"]),
            error("mj-0000", 503, "temporarily unavailable", []),
            success(items[4], 4),
        ]})

    responses.add_callback(responses.POST, URL, callback=mixed)
    results = adapter().send([message(i, raw=False) for i in range(1, 6)])
    assert [r.status for r in results] == ["accepted", "rejected", "rejected", "deferred", "accepted"]
    assert results[1].hard_bounce and "mj-0013" in results[1].reason and "(To[0].Email)" in results[1].reason  # never receives
    assert not results[2].hard_bounce and "send-0003" in results[2].reason
    assert results[3].retry_at == NOW + timedelta(seconds=600)
    assert results[4].provider_id == "70368744188491004"
    assert len(responses.calls) == 1  # nothing sent twice


@responses.activate
def test_a_refused_sender_stops_the_send_keeping_what_mailjet_accepted():
    def refused(request):
        items = json.loads(request.body)["Messages"]
        entry = error("send-0008", 403, '"news@fietsenwinkel.example" is not an authorized sender email address for your account.',
                      ["From"])
        return 403, {}, json.dumps({"Messages": [success(items[0], 0), entry, entry]})

    responses.add_callback(responses.POST, URL, callback=refused)
    with pytest.raises(DeliveryAborted, match="Sender domains & addresses") as info:
        adapter().send([message(i, raw=False) for i in range(3)])
    results = info.value.results
    assert [r.status for r in results] == ["accepted", "deferred", "deferred"]
    assert results[0].provider_id == "70368744188491000"
    assert {r.retry_at for r in results[1:]} == {NOW}  # resumable at once after the fix


@responses.activate
def test_a_5xx_answer_with_an_entry_per_message_is_read_not_retried_whole():
    def partly(request):
        items = json.loads(request.body)["Messages"]
        return 500, {}, json.dumps({"Messages": [success(items[0], 0), error("mj-0000", 500, "internal error", [])]})

    responses.add_callback(responses.POST, URL, callback=partly)
    results = adapter().send([message(1, raw=False), message(2, raw=False)])
    assert [r.status for r in results] == ["accepted", "deferred"]
    assert len(responses.calls) == 1  # a retry of the request would send the accepted one twice


@responses.activate
def test_401_stops_the_send_and_never_shows_the_secret(caplog):
    caplog.set_level(logging.DEBUG)
    responses.add(responses.POST, URL, status=401, json={
        "ErrorIdentifier": "ac93d194-1432-4e25-a215-2cb450d4a818", "ErrorCode": "mj-0015", "StatusCode": 401,
        "ErrorMessage": "API key authentication/authorization failure. You may be unauthorized to access the API or "
                        "your API key may be expired. Visit API keys management section to check your keys."})
    with pytest.raises(DeliveryAborted) as info:
        adapter().send([message(1, raw=False), message(2, raw=False)])
    assert {r.status for r in info.value.results} == {"deferred"}
    said = str(info.value) + " ".join(r.reason for r in info.value.results) + caplog.text
    assert "esp_api_secret" in str(info.value)  # says what to set
    assert SECRET not in said and base64.b64encode(f"{KEY}:{SECRET}".encode()).decode() not in said


def test_missing_secret_key_is_named_without_a_value():
    with pytest.raises((ConfigError, DeliveryError), match="esp_api_secret"):
        get_adapter("mailjet", {}, {"esp_api_key": KEY})


def test_describe_never_shows_credentials():
    assert SECRET not in repr(adapter().describe()) and KEY not in repr(adapter().describe())


@responses.activate
def test_429_honours_retry_after_then_sends():
    responses.add(responses.POST, URL, status=429, headers={"Retry-After": "4"})
    responses.add_callback(responses.POST, URL, callback=ok)
    ft = FakeTime()
    [r] = adapter(ft).send([message(1, raw=False)])
    assert r.status == "accepted" and ft.sleeps == [4.0] and len(responses.calls) == 2


@responses.activate
def test_5xx_with_a_long_retry_after_defers_until_then():
    responses.add(responses.POST, URL, status=503, headers={"Retry-After": "3600"},
                  json={"ErrorIdentifier": "D4DF574C-0C5F-45C7-BA52-7AA8E533C3DE", "StatusCode": 503})
    ft = FakeTime()
    results = adapter(ft).send([message(1, raw=False), message(2, raw=False)])
    assert [r.status for r in results] == ["deferred", "deferred"] and ft.sleeps == []
    assert results[0].retry_at == NOW + timedelta(seconds=3600) and not results[0].ambiguous


@responses.activate
def test_a_request_refused_as_a_whole_is_retried_message_by_message():
    global_error = {"ErrorIdentifier": "06df1144-c6f3-4ca7-8885-7ec5d4344113", "ErrorCode": "mj-0011",
                    "ErrorMessage": "The payload size is over the limit.", "StatusCode": 400}
    responses.add(responses.POST, URL, status=400, json=global_error)
    responses.add_callback(responses.POST, URL, callback=ok)
    responses.add(responses.POST, URL, status=400, json=global_error)
    results = adapter().send([message(1, raw=False), message(2, raw=False)])
    assert [r.status for r in results] == ["accepted", "rejected"] and "mj-0011" in results[1].reason
    assert [len(b["Messages"]) for b in sent()] == [2, 1, 1]


@responses.activate
@pytest.mark.parametrize("answer", [
    {"status": 200, "body": "<html>gateway</html>"},
    {"status": 200, "json": {"Messages": []}},
    {"status": 200, "json": {"Messages": [{"Status": "success", "CustomID": "another-key", "To": []}]}},
    {"status": 200, "json": {"Messages": [{"Status": "queued"}]}},
])
def test_an_answer_that_cannot_be_matched_is_ambiguous_never_guessed(answer):
    responses.add(responses.POST, URL, **answer)
    [r] = adapter().send([message(1, raw=False)])
    assert r.status == "deferred" and r.ambiguous and len(responses.calls) == 1


@responses.activate
def test_a_lost_answer_is_ambiguous_and_not_retried():
    responses.add(responses.POST, URL, body=requests.exceptions.ReadTimeout("read timed out"))
    results = adapter().send([message(1, raw=False), message(2, raw=False)])
    assert all(r.status == "deferred" and r.ambiguous for r in results) and len(responses.calls) == 1


def test_what_mailjet_refuses_is_refused_before_sending():
    a = adapter()
    with pytest.raises(UnsupportedFeature, match="only raw MIME"):
        a.send([message(1, html=None, text=None)])
    with pytest.raises(UnsupportedFeature, match="255"):
        a.send([message(1, raw=False, subject="x" * 256)])
    with pytest.raises(UnsupportedFeature, match="Reply-To"):
        a.send([message(1, raw=False, headers={"Reply-To": "a@example.org"})])
    # Headers of Mailjet's documented forbidden list that no message property sets.
    for name in ("Date", "List-Id", "X-Feedback-Id", "X-CSA-Complaints", "X-Mailer"):
        with pytest.raises(UnsupportedFeature, match=name):
            a.send([message(1, raw=False, headers={name: "x"})])
    with pytest.raises(ConfigError, match="track_opens"):
        adapter(track_opens="yes")


@responses.activate
@pytest.mark.parametrize("recipient, expected", [
    ({"Email": "klant1@example.org", "MessageUUID": "cb927469-36fd-4c02-bce4-0d199929a207", "MessageID": 288230376151711744},
     "288230376151711744"),
    ({"Email": "klant1@example.org", "MessageUUID": "cb927469-36fd-4c02-bce4-0d199929a207"},
     "cb927469-36fd-4c02-bce4-0d199929a207"),
    ({"Email": "klant1@example.org", "MessageUUID": "cb927469-36fd-4c02-bce4-0d199929a207", "MessageID": 0},
     "cb927469-36fd-4c02-bce4-0d199929a207"),
])
def test_the_provider_id_is_the_messageid_else_the_messageuuid_the_events_call_message_guid(recipient, expected):
    # Send API v3.1 answers each recipient with MessageID, MessageUUID and MessageHref; the events carry MessageID
    # and Message_GUID. Without a usable number, the UUID is what an event can still name the e-mail by.
    def answer(request):
        item = json.loads(request.body)["Messages"][0]
        return 200, {}, json.dumps({"Messages": [{"Status": "success", "CustomID": item["CustomID"], "To": [recipient]}]})

    responses.add_callback(responses.POST, URL, callback=answer)
    [r] = adapter().send([message(1, raw=False)])
    assert r.status == "accepted" and r.provider_id == expected
