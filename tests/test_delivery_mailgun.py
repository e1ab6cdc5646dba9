"""Mailgun adapter at the HTTP boundary (``responses``)."""

from __future__ import annotations

import email
import json
from urllib.parse import parse_qsl

import pytest
import responses

from delivery_messages import FakeTime, message
from relmail.delivery import DeliveryAborted, get_adapter
from relmail.errors import UnsupportedFeature

US = "https://api.mailgun.net/v3/mg.fietsenwinkel.example"
EU = "https://api.eu.mailgun.net/v3/mg.fietsenwinkel.example"
KEY = "mg-key"


def adapter(ft: FakeTime | None = None, **cfg):
    ft = ft or FakeTime()
    cfg = {"domain": "mg.fietsenwinkel.example", "concurrency": 1, **cfg}
    return get_adapter("mailgun", cfg, {"esp_api_key": KEY}, clock=ft.clock, sleep=ft.sleep)


def form(request) -> list[tuple[str, bytes]]:
    """The fields of a urlencoded or multipart request body, in order."""
    ctype = request.headers["Content-Type"]
    body = request.body if isinstance(request.body, bytes) else request.body.encode()
    if ctype.startswith("application/x-www-form-urlencoded"):
        return [(k, v.encode()) for k, v in parse_qsl(body.decode(), keep_blank_values=True)]
    parsed = email.message_from_bytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body)
    return [(p.get_param("name", header="content-disposition"), p.get_payload(decode=True)) for p in parsed.get_payload()]


@responses.activate
def test_personal_message_goes_as_mime_with_variables_and_tags():
    responses.add(responses.POST, US + "/messages.mime", json={"id": "<2026.abc@mg.fietsenwinkel.example>", "message": "Queued. Thank you."})
    m = message(1)
    [r] = adapter().send([m])
    assert (r.status, r.provider_id) == ("accepted", "2026.abc@mg.fietsenwinkel.example")
    req = responses.calls[0].request
    assert req.headers["Authorization"].startswith("Basic ")
    import base64

    assert base64.b64decode(req.headers["Authorization"][6:]) == b"api:" + KEY.encode()
    fields = form(req)
    assert fields[0] == ("to", b"klant1@example.org")
    assert ("v:relmail_customer", b"C0000001") in fields
    assert ("v:relmail_run", b"run-2026-W48") in fields
    assert ("v:relmail_message", b"ebike-launch") in fields
    assert [v for k, v in fields if k == "o:tag"] == [b"weekly", b"ebike-launch"]
    [mime] = [v for k, v in fields if k == "message"]
    assert mime == m.as_bytes()  # exactly what the render stage built


@responses.activate
def test_eu_region_and_identical_content_batch_with_recipient_variables():
    responses.add(responses.POST, EU + "/messages", json={"id": "<batch@mg>", "message": "Queued. Thank you."})
    messages = [message(i, same_content=True) for i in range(3)]
    results = adapter(region="eu").send(messages)
    assert [r.provider_id for r in results] == ["batch@mg"] * 3
    fields = form(responses.calls[0].request)
    get = dict(fields)
    assert [v for k, v in fields if k == "to"] == [b"Klant 0 <klant0@example.org>", b"Klant 1 <klant1@example.org>", b"Klant 2 <klant2@example.org>"]
    assert get["from"] == b"Fietsenwinkel <news@fietsenwinkel.example>"
    assert get["subject"] == b"Nieuwe e-bike" and get["text"] == b"Hallo!" and get["html"] == b"<p>Hallo!</p>"
    assert get["h:Reply-To"] == b"service@fietsenwinkel.example"
    assert get["h:List-Unsubscribe-Post"] == b"List-Unsubscribe=One-Click"
    assert "h:Message-ID" not in get  # Mailgun assigns the Message-Id in a batch
    assert get["v:relmail_customer"] == b"%recipient.relmail_customer%"
    variables = json.loads(get["recipient-variables"])
    assert variables["klant2@example.org"] == {"relmail_customer": "C0000002", "relmail_run": "run-2026-W48", "relmail_message": "ebike-launch"}


@responses.activate
def test_batches_respect_the_1000_recipient_limit():
    responses.add(responses.POST, US + "/messages", json={"id": "<b@mg>", "message": "Queued"})
    messages = [message(i, same_content=True, raw=False) for i in range(2001)]
    results = adapter().send(messages)
    assert all(r.status == "accepted" for r in results)
    counts = [sum(1 for k, _ in form(c.request) if k == "to") for c in responses.calls]
    assert sorted(counts) == [1, 1000, 1000]


@responses.activate
def test_400_for_a_batch_is_retried_per_message_so_only_the_bad_recipient_is_rejected():
    responses.add(responses.POST, US + "/messages", status=400, json={"message": "'to' parameter is not a valid address"})
    responses.add(responses.POST, US + "/messages.mime", json={"id": "<one@mg>", "message": "Queued"})
    responses.add(responses.POST, US + "/messages.mime", status=400, json={"message": "'to' parameter is not a valid address"})
    results = adapter().send([message(i, same_content=True) for i in range(2)])
    assert [r.status for r in results] == ["accepted", "rejected"]
    assert "not a valid address" in results[1].reason and results[1].http_status == 400


@responses.activate
def test_429_retry_after_and_wrong_region_aborts():
    responses.add(responses.POST, US + "/messages.mime", status=429, headers={"Retry-After": "5"})
    responses.add(responses.POST, US + "/messages.mime", json={"id": "<x@mg>"})
    responses.add(responses.POST, US + "/messages.mime", status=404, json={"message": "Domain not found"})
    ft = FakeTime()
    with pytest.raises(DeliveryAborted, match="wrong region") as info:
        adapter(ft).send([message(1), message(2)])
    assert ft.sleeps == [5.0]
    assert [r.status for r in info.value.results] == ["accepted", "deferred"]


def test_more_than_three_tags_is_unsupported():
    with pytest.raises(UnsupportedFeature, match="3 tags"):
        adapter().send([message(1, tags=("a", "b", "c", "d"))])
