"""Postmark adapter at the HTTP boundary (``responses``)."""

from __future__ import annotations

import json

import pytest
import responses

from delivery_messages import FakeTime, message
from relmail.delivery import DeliveryAborted, get_adapter
from relmail.errors import UnsupportedFeature

URL = "https://api.postmarkapp.com/email/batch"
TOKEN = "pm-server-token"


def adapter(ft: FakeTime | None = None, **cfg):
    ft = ft or FakeTime()
    return get_adapter("postmark", cfg, {"esp_api_key": TOKEN}, clock=ft.clock, sleep=ft.sleep)


def ok(request):
    items = json.loads(request.body)
    return 200, {}, json.dumps(
        [{"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{item['To']}", "To": item["To"]} for item in items]
    )


@responses.activate
def test_batch_item_matches_postmark_shape_field_by_field():
    responses.add_callback(responses.POST, URL, callback=ok)
    m = message(1, raw=False)
    [r] = adapter(track_opens=False).send([m])
    assert r.status == "accepted" and r.provider_id == "pm-Klant 1 <klant1@example.org>"
    req = responses.calls[0].request
    assert req.headers["X-Postmark-Server-Token"] == TOKEN
    assert req.headers["Accept"] == "application/json"
    [item] = json.loads(req.body)
    assert item == {
        "From": "Fietsenwinkel <news@fietsenwinkel.example>",
        "To": "Klant 1 <klant1@example.org>",
        "Subject": m.subject,
        "HtmlBody": m.html,
        "TextBody": m.text,
        "ReplyTo": "service@fietsenwinkel.example",
        "Headers": [{"Name": k, "Value": v} for k, v in m.headers.items()],
        "Tag": "weekly/ebike-launch",
        "Metadata": {"relmail_customer": "C0000001", "relmail_run": "run-2026-W48", "relmail_message": "ebike-launch"},
        "MessageStream": "broadcast",
        "TrackOpens": False,
    }


@responses.activate
def test_batches_hold_at_most_500_distinct_messages():
    responses.add_callback(responses.POST, URL, callback=ok)
    messages = [message(i, raw=False) for i in range(1201)]
    results = adapter().send(messages)
    assert all(r.status == "accepted" for r in results)
    sizes = [len(json.loads(c.request.body)) for c in responses.calls]
    assert sizes == [500, 500, 201]
    sent = [item["Subject"] for c in responses.calls for item in json.loads(c.request.body)]
    assert sent == [m.subject for m in messages]


@responses.activate
def test_per_message_error_codes_map_to_results():
    body = [
        {"ErrorCode": 0, "Message": "OK", "MessageID": "id-0"},
        {"ErrorCode": 406, "Message": "You tried to send to recipient(s) that have been marked as inactive."},
        {"ErrorCode": 300, "Message": "Invalid 'To' address: 'x'."},
    ]
    responses.add(responses.POST, URL, status=200, json=body)
    results = adapter().send([message(i, raw=False) for i in range(3)])
    assert [(r.status, r.hard_bounce) for r in results] == [("accepted", False), ("rejected", True), ("rejected", False)]
    assert results[0].provider_id == "id-0"
    assert "Postmark error 300" in results[2].reason


@responses.activate
def test_429_with_retry_after_then_success():
    responses.add(responses.POST, URL, status=429, headers={"Retry-After": "2"})
    responses.add_callback(responses.POST, URL, callback=ok)
    ft = FakeTime()
    results = adapter(ft).send([message(1, raw=False), message(2, raw=False)])
    assert ft.sleeps == [2.0]
    assert [r.status for r in results] == ["accepted", "accepted"]


@responses.activate
def test_account_level_422_aborts_and_bad_token_aborts():
    responses.add(responses.POST, URL, status=422, json={"ErrorCode": 412, "Message": "Account is pending approval"})
    with pytest.raises(DeliveryAborted, match="412") as info:
        adapter().send([message(1, raw=False)])
    assert info.value.results[0].status == "deferred"


def test_metadata_limits_are_checked_before_sending():
    with pytest.raises(UnsupportedFeature, match="80-character"):
        adapter().send([message(1, raw=False, metadata={"relmail_customer": "x" * 81})])


@responses.activate
def test_each_batch_request_is_marked_just_before_it_not_the_whole_send_at_once():
    log: list[tuple[str, int]] = []

    def answer(request):
        items = json.loads(request.body)
        log.append(("request", len(items)))
        return 200, {}, json.dumps([{"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{i}", "To": m["To"]}
                                    for i, m in enumerate(items)])

    responses.add_callback(responses.POST, URL, callback=answer)
    a = adapter()
    a.on_commit = lambda keys: log.append(("mark", len(keys)))
    a.on_answer = lambda results: log.append(("answer", len(results)))
    a.send([message(i) for i in range(600)])
    assert log == [("mark", 500), ("request", 500), ("answer", 500), ("mark", 100), ("request", 100), ("answer", 100)]
