"""An opt-in on relmail's preference page lifts Brevo's own block of the address (transactional blocked contacts).

Brevo's events come through ``relmail serve``'s webhook as Brevo posts them; Brevo's API is checked at the HTTP
boundary (``responses``) against the documented call, ``DELETE /v3/smtp/blockedContacts/{email}`` with the address
URL-encoded and the ``api-key`` header: 204 unblocked, 404 not blocked.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import responses
from werkzeug.test import Client

from relmail.sending.run import send
from relmail.web.app import make_app
from test_plan import AS_OF, WINDOW
from test_send_brevo import created
from test_sendgrid_groups import AT, RUN, next_week, opt_in_on_the_page, resubscribe_cli, shop_with_last_weeks_newsletter

KEY = "xkeysib-resubscribe-not-a-real-key"
TOKEN = "brevo-webhook-token-for-tests"
UNBLOCK = "https://api.brevo.com/v3/smtp/blockedContacts/c-ok%40example.org"
SEND = "https://api.brevo.com/v3/smtp/email"


@pytest.fixture
def shop(project, engine, monkeypatch):
    """A shop sending through Brevo (one retry, none waited for); C-OK got last week's newsletter (run RUN)."""
    monkeypatch.setenv("RELMAIL_ESP_API_KEY", KEY)
    monkeypatch.setenv("RELMAIL_BREVO_WEBHOOK_TOKEN", TOKEN)
    toml = project.root / "relmail.toml"
    toml.write_text(toml.read_text().replace('adapter = "file"', 'adapter = "brevo"')
                    + "\n[delivery.brevo]\nconcurrency = 1\nmax_retries = 1\n")
    return shop_with_last_weeks_newsletter(project, engine)


def brevo_event(kind: str, at=AT, **extra) -> dict:
    """One Brevo webhook event about last week's newsletter to C-OK."""
    ids = {"relmail_customer": "C-OK", "relmail_run": RUN, "relmail_message": "news"}
    return {"event": kind, "email": "c-ok@example.org", "message-id": "<news.c-ok@smtp-relay.mailin.fr>",
            "ts_event": int(at.timestamp()), "X-Mailin-custom": json.dumps(ids), **extra}


def post_brevo(project, engine, *events: dict) -> dict:
    response = Client(make_app(project, engine)).post("/webhooks/brevo", json=list(events),
                                                      headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    return response.json


def unsubscribed_then_opted_in(shop, *also: dict):
    """C-OK unsubscribed through Brevo (Brevo blocks the address), then switched everything back on on relmail's page."""
    project, engine = shop
    post_brevo(project, engine, brevo_event("unsubscribed"), *also)
    opt_in_on_the_page(project, engine, ["newsletter", "promotions", "service"])
    return project, engine


@responses.activate
def test_an_opt_in_after_a_brevo_unsubscribe_unblocks_the_address_once(shop):
    project, engine = unsubscribed_then_opted_in(shop)
    assert next_week(project, engine)["promo"] == ("send", [])  # relmail would send: Brevo must not block it
    responses.add(responses.DELETE, UNBLOCK, status=204)
    code, output = resubscribe_cli(project)
    assert code == 0, output
    assert [(c.request.method, c.request.url, c.request.headers["api-key"]) for c in responses.calls] == [
        ("DELETE", UNBLOCK, KEY)]
    assert "Brevo: 1 listing(s) of 1 customer(s) lifted, 0 failed" in output and "transactional blocked contacts" in output
    assert "c-ok@" not in output and KEY not in output
    # A second run calls nothing.
    assert resubscribe_cli(project) == (0, "Brevo: 0 listing(s) of 0 customer(s) lifted, 0 failed\n")
    assert len(responses.calls) == 1


@responses.activate
def test_an_address_brevo_no_longer_blocks_counts_as_lifted(shop):
    project, _ = unsubscribed_then_opted_in(shop)
    responses.add(responses.DELETE, UNBLOCK, status=404, json={"code": "document_not_found", "message": "Contact does not exist"})
    assert resubscribe_cli(project, "--json")[0] == 0
    assert resubscribe_cli(project)[1] == "Brevo: 0 listing(s) of 0 customer(s) lifted, 0 failed\n"
    assert len(responses.calls) == 1


@responses.activate
def test_a_refused_key_fails_the_command_without_showing_the_key_and_the_next_run_lifts(shop):
    project, _ = unsubscribed_then_opted_in(shop)
    responses.add(responses.DELETE, UNBLOCK, status=401, json={"code": "unauthorized", "message": "Key not found"})
    code, output = resubscribe_cli(project)
    assert code == 7 and "C-OK" in output and "Brevo refuses the account (unauthorized" in output, output
    assert KEY not in output and "c-ok@" not in output and "c-ok%40" not in output
    responses.replace(responses.DELETE, UNBLOCK, status=204)
    assert resubscribe_cli(project)[0] == 0
    assert [c.response.status_code for c in responses.calls] == [401, 204]


@responses.activate
def test_a_brevo_server_error_is_retried_then_listed_and_tried_again_next_run(shop):
    project, _ = unsubscribed_then_opted_in(shop)
    responses.add(responses.DELETE, UNBLOCK, status=503, body="unavailable", headers={"Retry-After": "0"})
    code, output = resubscribe_cli(project)
    assert code == 7 and "HTTP 503 from brevo" in output, output
    assert len(responses.calls) == 2  # max_retries = 1
    responses.replace(responses.DELETE, UNBLOCK, status=204)
    assert resubscribe_cli(project)[0] == 0 and len(responses.calls) == 3


@responses.activate
@pytest.mark.parametrize("also", ["hard_bounce", "spam"])
def test_an_address_brevo_bounced_or_had_a_complaint_for_is_never_unblocked(shop, also):
    """Brevo's call unblocks the address whatever blocked it: an unsubscribe alone is lifted, never a bounce or complaint."""
    later = AT + timedelta(minutes=5)
    project, _ = unsubscribed_then_opted_in(shop, brevo_event(also, at=later, reason="550 5.1.1 user unknown"))
    code, output = resubscribe_cli(project, "--dry-run")
    assert (code, output) == (0, "Brevo: 0 listing(s) of 0 customer(s) to lift (--dry-run, nothing called), 0 failed\n")
    assert resubscribe_cli(project)[0] == 0 and len(responses.calls) == 0


@responses.activate
def test_a_complaint_alone_is_never_lifted_by_an_opt_in(shop):
    project, engine = shop
    post_brevo(project, engine, brevo_event("spam"))
    opt_in_on_the_page(project, engine, ["newsletter", "promotions", "service"])
    assert resubscribe_cli(project)[0] == 0 and len(responses.calls) == 0


@responses.activate
def test_relmail_send_through_brevo_unblocks_the_address_before_the_customers_first_email(shop):
    """Sent while still blocked, Brevo would not deliver the e-mail (a ``blocked`` event)."""
    project, engine = unsubscribed_then_opted_in(shop)
    responses.add(responses.DELETE, UNBLOCK, status=204)
    responses.add_callback(responses.POST, SEND, callback=created)
    result = send(project, engine, "test", WINDOW, now=lambda: AS_OF)
    calls = [(c.request.method, c.request.url) for c in responses.calls]
    to_c_ok = [i for i, c in enumerate(responses.calls)
               if c.request.method == "POST" and json.loads(c.request.body)["to"][0]["email"] == "c-ok@example.org"]
    assert to_c_ok and calls[0] == ("DELETE", UNBLOCK) and min(to_c_ok) > 0, calls
    assert result.resubscribed == 1 and result.resubscribe_failed == [] and result.resubscribe_provider == "Brevo"
    assert result.done.get("accepted", 0) > 0


@responses.activate
def test_after_a_move_to_another_esp_the_command_has_nothing_to_lift_and_succeeds_then_lifts_back_on_brevo(shop):
    """A scheduled "resubscribe && send" must keep sending after the shop leaves Brevo; the opt-in stays pending."""
    project, engine = unsubscribed_then_opted_in(shop)
    toml = project.root / "relmail.toml"
    brevo = toml.read_text()
    toml.write_text(brevo.replace('adapter = "brevo"', 'adapter = "mailjet"'))
    code, output = resubscribe_cli(project)
    assert code == 0, output
    assert "nothing to lift" in output
    code, output = resubscribe_cli(project, "--json")
    assert (code, json.loads(output)) == (0, {"dry_run": False, "lifted": [], "failed": []})
    assert not responses.calls
    toml.write_text(brevo)
    responses.add(responses.DELETE, UNBLOCK, status=204)
    code, output = resubscribe_cli(project)
    assert code == 0 and [c.request.url for c in responses.calls] == [UNBLOCK], output
