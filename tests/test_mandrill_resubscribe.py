"""An opt-in on relmail's preference page lifts Mandrill's rejection denylist entry of the address.

Mandrill's events come through ``relmail serve``'s webhook, signed as Mandrill signs them; Mandrill's API is checked
at the HTTP boundary (``responses``) against its documented call, ``POST /api/1.0/rejects/delete`` with the key and
the address in the JSON body (and the subaccount relmail sends through, whose own denylist an unsubscribe from its
e-mails lands on): ``{"email": ..., "deleted": true, "subaccount": ...}``, or the error ``Invalid_Reject`` (HTTP 500)
for an address that is not on the denylist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
from urllib.parse import urlencode

import pytest
import responses
from werkzeug.test import Client

from relmail.sending.run import send
from relmail.web.app import make_app
from test_plan import AS_OF, WINDOW
from test_sendgrid_groups import AT, opt_in_on_the_page, resubscribe_cli, shop_with_last_weeks_newsletter

KEY = "md-resubscribe-not-a-real-key"
HOOK_KEY = "md-webhook-key-for-tests"
LIFT = "https://mandrillapp.com/api/1.0/rejects/delete"
SEND = "https://mandrillapp.com/api/1.0/messages/send-raw"


@pytest.fixture
def shop(project, engine, monkeypatch):
    """A shop sending through Mandrill (one retry, none waited for); C-OK got last week's newsletter (run RUN)."""
    monkeypatch.setenv("RELMAIL_ESP_API_KEY", KEY)
    monkeypatch.setenv("RELMAIL_MANDRILL_WEBHOOK_KEY", HOOK_KEY)
    toml = project.root / "relmail.toml"
    toml.write_text(toml.read_text().replace('adapter = "file"', 'adapter = "mandrill"')
                    + "\n[delivery.mandrill]\nconcurrency = 1\nmax_retries = 1\n")
    return shop_with_last_weeks_newsletter(project, engine)


def post_mandrill(project, engine, *kinds: str) -> dict:
    """Mandrill's webhook POST of events about last week's newsletter to C-OK, signed with the webhook's key."""
    events = [{"event": kind, "ts": int((AT + timedelta(minutes=i)).timestamp()), "_id": "md-news-c-ok",
               "msg": {"_id": "md-news-c-ok", "email": "c-ok@example.org", "state": "sent",
                       "diag": "smtp;550 5.1.1 user unknown"}}
              for i, kind in enumerate(kinds)]
    field = json.dumps(events)
    url = project.settings.unsubscribe_url.rstrip("/") + "/webhooks/mandrill"
    sig = base64.b64encode(hmac.new(HOOK_KEY.encode(), (url + "mandrill_events" + field).encode(), hashlib.sha1).digest())
    response = Client(make_app(project, engine)).post(
        "/webhooks/mandrill", data=urlencode({"mandrill_events": field}), content_type="application/x-www-form-urlencoded",
        headers={"X-Mandrill-Signature": sig.decode()})
    assert response.status_code == 200, response.text
    return response.json


def unsubscribed_then_opted_in(shop, *also: str):
    """C-OK unsubscribed through Mandrill (Mandrill denylists the address), then switched everything back on."""
    project, engine = shop
    post_mandrill(project, engine, "unsub", *also)
    opt_in_on_the_page(project, engine, ["newsletter", "promotions", "service"])
    return project, engine


def lifted(request):
    return 200, {}, json.dumps({"email": json.loads(request.body)["email"], "deleted": True, "subaccount": None})


@responses.activate
def test_an_opt_in_after_a_mandrill_unsubscribe_lifts_the_denylist_entry_once(shop):
    project, _ = unsubscribed_then_opted_in(shop)
    responses.add_callback(responses.POST, LIFT, callback=lifted)
    code, output = resubscribe_cli(project)
    assert code == 0, output
    assert [json.loads(c.request.body) for c in responses.calls] == [{"key": KEY, "email": "c-ok@example.org"}]
    assert "Mandrill: 1 listing(s) of 1 customer(s) lifted, 0 failed" in output and "rejection denylist" in output
    assert "c-ok@" not in output and KEY not in output
    assert resubscribe_cli(project) == (0, "Mandrill: 0 listing(s) of 0 customer(s) lifted, 0 failed\n")
    assert len(responses.calls) == 1


@responses.activate
def test_an_address_no_longer_on_the_denylist_counts_as_lifted_and_a_refused_key_fails(shop):
    project, _ = unsubscribed_then_opted_in(shop)
    responses.add(responses.POST, LIFT, status=500, json={"status": "error", "code": -1, "name": "Invalid_Key",
                                                          "message": "Invalid API key"})
    code, output = resubscribe_cli(project)
    assert code == 7 and "C-OK" in output and "Mandrill refuses the account" in output and KEY not in output, output
    responses.replace(responses.POST, LIFT, status=500, json={
        "status": "error", "code": 3, "name": "Invalid_Reject", "message": "The requested email is not in the rejection list"})
    assert resubscribe_cli(project)[0] == 0
    assert resubscribe_cli(project)[1] == "Mandrill: 0 listing(s) of 0 customer(s) lifted, 0 failed\n"
    assert len(responses.calls) == 2


@responses.activate
def test_sending_through_a_subaccount_lifts_the_entry_on_that_subaccounts_denylist(shop):
    project, _ = unsubscribed_then_opted_in(shop)
    toml = project.root / "relmail.toml"
    toml.write_text(toml.read_text().replace("[delivery.mandrill]\n", '[delivery.mandrill]\nsubaccount = "fietsenwinkel-nl"\n'))
    responses.add_callback(responses.POST, LIFT, callback=lambda r: (200, {}, json.dumps(
        {"email": json.loads(r.body)["email"], "deleted": True, "subaccount": json.loads(r.body)["subaccount"]})))
    code, output = resubscribe_cli(project)
    assert code == 0, output
    assert [json.loads(c.request.body) for c in responses.calls] == [
        {"key": KEY, "email": "c-ok@example.org", "subaccount": "fietsenwinkel-nl"}]


@responses.activate
def test_an_answer_that_says_nothing_was_deleted_is_a_failure_tried_again(shop):
    project, _ = unsubscribed_then_opted_in(shop)
    responses.add(responses.POST, LIFT, json={"email": "c-ok@example.org", "deleted": False, "subaccount": None})
    code, output = resubscribe_cli(project)
    assert code == 7 and "C-OK" in output and "c-ok@" not in output, output
    responses.replace(responses.POST, LIFT, json={"email": "c-ok@example.org", "deleted": True, "subaccount": None})
    assert resubscribe_cli(project)[0] == 0 and len(responses.calls) == 2  # the failed lift was asked again


@responses.activate
@pytest.mark.parametrize("also", ["hard_bounce", "spam"])
def test_an_address_mandrill_bounced_or_had_a_complaint_for_is_never_lifted(shop, also):
    """rejects/delete removes the entry whatever put it there: an unsubscribe alone is lifted, never a bounce or complaint."""
    project, _ = unsubscribed_then_opted_in(shop, also)
    assert resubscribe_cli(project)[0] == 0 and len(responses.calls) == 0


@responses.activate
def test_relmail_send_through_mandrill_lifts_the_entry_before_the_customers_first_email(shop):
    project, engine = unsubscribed_then_opted_in(shop)
    responses.add_callback(responses.POST, LIFT, callback=lifted)
    responses.add_callback(responses.POST, SEND, callback=lambda r: (200, {}, json.dumps(
        [{"email": json.loads(r.body)["to"][0], "status": "sent", "_id": "md-1", "reject_reason": None}])))
    result = send(project, engine, "test", WINDOW, now=lambda: AS_OF)
    urls = [c.request.url for c in responses.calls]
    to_c_ok = [i for i, c in enumerate(responses.calls) if c.request.url == SEND and json.loads(c.request.body)["to"] == ["c-ok@example.org"]]
    assert to_c_ok and urls[0] == LIFT and min(to_c_ok) > 0, urls
    assert result.resubscribed == 1 and result.resubscribe_failed == [] and result.resubscribe_provider == "Mandrill"
