"""SendGrid adapter at the HTTP boundary (``responses``)."""

from __future__ import annotations

import json
from datetime import timedelta
from email.utils import format_datetime

import pytest
import responses

from delivery_messages import NOW, FakeTime, message
from relmail.delivery import DeliveryAborted, get_adapter
from relmail.errors import UnsupportedFeature

URL = "https://api.sendgrid.com/v3/mail/send"
KEY = "SG.test-key"


def adapter(ft: FakeTime | None = None, **cfg):
    ft = ft or FakeTime()
    return get_adapter("sendgrid", {"concurrency": 1, **cfg}, {"esp_api_key": KEY}, clock=ft.clock, sleep=ft.sleep)


def bodies():
    return [json.loads(c.request.body) for c in responses.calls]


@responses.activate
def test_personal_message_body_matches_the_v3_shape_field_by_field():
    responses.add(responses.POST, URL, status=202, headers={"X-Message-Id": "sgid-1"})
    m = message(1)
    [r] = adapter().send([m])
    assert (r.status, r.provider_id, r.http_status) == ("accepted", "sgid-1", 202)
    req = responses.calls[0].request
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert req.headers["Content-Type"] == "application/json"
    body = json.loads(req.body)
    assert set(body) == {"personalizations", "from", "reply_to", "subject", "content", "categories", "tracking_settings"}
    # relmail's List-Unsubscribe and link, never SendGrid's in their place (the account's setting is overridden).
    assert body["tracking_settings"] == {"subscription_tracking": {"enable": False}}
    assert body["from"] == {"email": "news@fietsenwinkel.example", "name": "Fietsenwinkel"}
    assert body["reply_to"] == {"email": "service@fietsenwinkel.example"}
    assert body["subject"] == m.subject
    assert body["content"] == [{"type": "text/plain", "value": m.text}, {"type": "text/html", "value": m.html}]
    assert body["categories"] == ["weekly", "ebike-launch"]
    [p] = body["personalizations"]
    assert p["to"] == [{"email": m.to, "name": "Klant 1"}]
    assert p["headers"] == dict(m.headers)
    assert p["custom_args"] == {"relmail_customer": "C0000001", "relmail_run": "run-2026-W48", "relmail_message": "ebike-launch"}


@responses.activate
def test_identical_content_shares_requests_of_at_most_1000_personalizations():
    responses.add(responses.POST, URL, status=202, headers={"X-Message-Id": "sgid"})
    messages = [message(i, same_content=True, raw=False) for i in range(2345)]
    results = adapter(sandbox=True).send(messages)
    assert all(r.status == "accepted" for r in results)
    sent = bodies()
    assert [len(b["personalizations"]) for b in sent] == [1000, 1000, 345]
    assert all(b["mail_settings"] == {"sandbox_mode": {"enable": True}} for b in sent)
    recipients = [p["to"][0]["email"] for b in sent for p in b["personalizations"]]
    assert recipients == [m.to for m in messages]  # each exactly once, in order
    customers = [p["custom_args"]["relmail_customer"] for b in sent for p in b["personalizations"]]
    assert customers == [m.metadata["relmail_customer"] for m in messages]


@responses.activate
def test_429_retry_after_seconds_is_honoured():
    responses.add(responses.POST, URL, status=429, headers={"Retry-After": "7"})
    responses.add(responses.POST, URL, status=202, headers={"X-Message-Id": "ok"})
    ft = FakeTime()
    [r] = adapter(ft).send([message(1)])
    assert r.status == "accepted"
    assert ft.sleeps == [7.0]
    assert len(responses.calls) == 2


@responses.activate
def test_retry_after_http_date_and_long_waits_become_deferrals():
    when = NOW + timedelta(seconds=30)
    responses.add(responses.POST, URL, status=503, headers={"Retry-After": format_datetime(when, usegmt=True)})
    responses.add(responses.POST, URL, status=429, headers={"Retry-After": "3600"})
    ft = FakeTime()
    [r] = adapter(ft).send([message(1)])
    assert ft.sleeps == [30.0]  # the date, relative to the (fake) clock
    assert r.status == "deferred" and r.http_status == 429
    assert r.retry_at == NOW + timedelta(seconds=30 + 3600)  # not slept through: come back then
    assert len(responses.calls) == 2


@responses.activate
def test_retry_budget_exhausted_defers():
    responses.add(responses.POST, URL, status=500)
    ft = FakeTime()
    [r] = adapter(ft, max_retries=2, retry_delay=900).send([message(1)])
    assert len(responses.calls) == 3
    assert ft.sleeps == [1.0, 2.0]
    assert r.status == "deferred" and r.http_status == 500
    assert r.retry_at == ft.now + timedelta(seconds=900)


@responses.activate
def test_400_naming_personalizations_rejects_those_and_sends_the_rest():
    error = {"errors": [{"message": "Does not contain a valid address.", "field": "personalizations.1.to.0.email"}]}
    responses.add(responses.POST, URL, status=400, json=error)
    responses.add(responses.POST, URL, status=202, headers={"X-Message-Id": "second"})
    messages = [message(i, same_content=True) for i in range(3)]
    results = adapter().send(messages)
    assert [r.status for r in results] == ["accepted", "rejected", "accepted"]
    assert "valid address" in results[1].reason and results[1].http_status == 400
    assert [p["to"][0]["email"] for p in bodies()[1]["personalizations"]] == [messages[0].to, messages[2].to]


@responses.activate
def test_unexplained_400_for_a_group_is_retried_per_message():
    responses.add(responses.POST, URL, status=400, json={"errors": [{"message": "Bad Request", "field": None}]})
    responses.add(responses.POST, URL, status=202, headers={"X-Message-Id": "a"})
    responses.add(responses.POST, URL, status=400, json={"errors": [{"message": "The to email is blocked", "field": None}]})
    messages = [message(i, same_content=True) for i in range(2)]
    results = adapter().send(messages)
    assert [r.status for r in results] == ["accepted", "rejected"]
    assert "blocked" in results[1].reason


@responses.activate
def test_revoked_key_aborts_keeping_earlier_results():
    responses.add(responses.POST, URL, status=202, headers={"X-Message-Id": "first"})
    responses.add(responses.POST, URL, status=401, json={"errors": [{"message": "authorization grant is invalid"}]})
    with pytest.raises(DeliveryAborted) as info:
        adapter().send([message(1), message(2), message(3)])
    assert [r.status for r in info.value.results] == ["accepted", "deferred", "deferred"]
    assert info.value.results[0].provider_id == "first"
    assert len(responses.calls) == 2  # stopped: the third was never tried
    # Due again at once: the send stops here, and the next one (the key fixed) resumes them without waiting.
    assert {r.retry_at for r in info.value.results[1:]} == {NOW}


@responses.activate
def test_revoked_key_stops_concurrent_requests_too():
    # With several requests in flight (the default concurrency 4), a refused
    # key must stop the batch as well, not post every remaining e-mail.
    responses.add(responses.POST, URL, status=401, json={"errors": [{"message": "authorization grant is invalid"}]})
    with pytest.raises(DeliveryAborted) as info:
        adapter(concurrency=4).send([message(i) for i in range(200)])
    assert {r.status for r in info.value.results} == {"deferred"}
    assert len(responses.calls) <= 4  # at most the requests already in flight


@responses.activate
def test_connection_lost_after_sending_is_ambiguous_and_not_retried():
    import requests

    responses.add(responses.POST, URL, body=requests.exceptions.ReadTimeout("read timed out"))
    [r] = adapter().send([message(1)])
    assert r.status == "deferred" and r.ambiguous
    assert len(responses.calls) == 1


def test_features_sendgrid_cannot_carry_are_refused_before_sending():
    a = adapter()
    with pytest.raises(UnsupportedFeature, match="only raw MIME"):
        a.send([message(1, html=None, text=None)])
    with pytest.raises(UnsupportedFeature, match="Content-Type"):
        a.send([message(1, headers={"Content-Type": "text/plain"})])
