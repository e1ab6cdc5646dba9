"""``relmail send`` through the Brevo adapter end to end (``responses`` at Brevo's API), and Brevo's events back."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import responses
from click.testing import CliRunner
from sqlalchemy import select
from tests.sendkit import RUN, WINDOW, build, ledger_pairs

from relmail.cli import cli
from relmail.store.models import Delivery, Event

URL = "https://api.brevo.com/v3/smtp/email"
KEY = "xkeysib-e2e-not-a-real-key"


def created(request):
    doc = json.loads(request.body)
    return 201, {}, json.dumps({"messageId": f"<brevo.{doc['to'][0]['email']}@smtp-relay.mailin.fr>"})


@responses.activate
def test_relmail_send_hands_every_email_to_brevo_once_and_its_events_find_them(project, monkeypatch):
    engine = build(project, customers=30)
    monkeypatch.setenv("RELMAIL_ESP_API_KEY", KEY)
    config = project.root / "relmail.toml"
    config.write_text(config.read_text().replace('adapter = "file"', 'adapter = "brevo"') + "\n[delivery.brevo]\nconcurrency = 2\n")
    responses.add_callback(responses.POST, URL, callback=created)

    out = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW, "--workers", "1", "--json"])
    assert out.exit_code == 0, out.output
    assert KEY not in out.output
    docs = [json.loads(c.request.body) for c in responses.calls]
    sends, accepted, sent_events = ledger_pairs(engine)
    assert len(docs) == len(sends) == len(accepted) == len(sent_events) > 0
    assert all(c.request.headers["api-key"] == KEY for c in responses.calls)
    for doc in docs:
        headers = doc["headers"]
        assert headers["List-Unsubscribe"].startswith("<http") and headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert headers["Message-ID"].startswith("<") and headers["idempotencyKey"]
        assert json.loads(headers["X-Mailin-custom"])["relmail_run"] == RUN
        assert doc["htmlContent"] and doc["textContent"] and doc["subject"]
    assert len({d["headers"]["idempotencyKey"] for d in docs}) == len(docs)

    # Brevo's events for two of those e-mails: one with relmail's ids, one with Brevo's message id only.
    D = Delivery.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(D.c.customer_id, D.c.provider_id).where(D.c.run_id == RUN).order_by(D.c.customer_id)).all()
    assert all(pid == f"brevo.{_address(docs, cid)}@smtp-relay.mailin.fr" for cid, pid in rows)
    (first, first_pid), (second, second_pid) = rows[:2]
    at = int((datetime.now(UTC) - timedelta(minutes=1)).timestamp())
    events = [
        {"event": "hard_bounce", "email": _address(docs, first), "message-id": f"<{first_pid}>", "ts_event": at,
         "X-Mailin-custom": _doc(docs, first)["headers"]["X-Mailin-custom"], "reason": "550 5.1.1 user unknown"},
        {"event": "click", "email": "someone.else@example.org", "message-id": f"<{second_pid}>", "ts_event": at,
         "link": "https://fietsenwinkel.example/"},
    ]
    path = project.root / "brevo-events.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    out = CliRunner().invoke(cli, ["-p", str(project.root), "feedback", "import", str(path), "--format", "brevo", "--json"])
    assert out.exit_code == 0, out.output
    E = Event.__table__
    with engine.connect() as conn:
        found = conn.execute(select(E.c.type, E.c.customer_id, E.c.run_id, E.c.message_id)
                             .where(E.c.type.in_(["email_bounced_hard", "email_clicked"]), E.c.run_id == RUN)
                             .order_by(E.c.type)).all()
    assert found == [("email_bounced_hard", first, RUN, "sendtest-news"), ("email_clicked", second, RUN, "sendtest-news")]

    # A second send of the same window hands nothing over again.
    again = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW, "--workers", "1"])
    assert again.exit_code == 0, again.output
    assert len(responses.calls) == len(docs)


def _doc(docs: list[dict], customer: str) -> dict:
    return next(d for d in docs if json.loads(d["headers"]["X-Mailin-custom"])["relmail_customer"] == customer)


def _address(docs: list[dict], customer: str) -> str:
    return _doc(docs, customer)["to"][0]["email"]


@responses.activate
def test_a_refused_key_stops_relmail_send_with_exit_7_and_the_next_send_resumes(project, monkeypatch):
    engine = build(project, customers=30)
    monkeypatch.setenv("RELMAIL_ESP_API_KEY", KEY)
    config = project.root / "relmail.toml"
    config.write_text(config.read_text().replace('adapter = "file"', 'adapter = "brevo"'))
    responses.add(responses.POST, URL, status=401, json={"code": "unauthorized", "message": "Key not found"})
    out = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW, "--workers", "1"])
    assert out.exit_code == 7, out.output
    assert "set a Brevo API key (v3, SMTP & API > API keys) in the secret esp_api_key" in out.output
    assert KEY not in out.output
    sends, accepted, _ = ledger_pairs(engine)
    assert sends and not accepted

    responses.reset()
    responses.add_callback(responses.POST, URL, callback=created)
    time.sleep(1.1)  # a stopped e-mail is due again from the next second on
    out = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW, "--workers", "1"])
    assert out.exit_code == 0, out.output
    sends, accepted, _ = ledger_pairs(engine)
    assert accepted == sends and len(responses.calls) == len(sends)


@responses.activate
def test_an_email_brevo_kept_answering_with_a_5xx_is_uncertain_and_never_sent_by_a_later_run(project, monkeypatch):
    """Brevo does not say whether a 5xx sent the e-mail; a later run's repeat could come after it forgot the key."""
    engine = build(project, customers=30)
    monkeypatch.setenv("RELMAIL_ESP_API_KEY", KEY)
    config = project.root / "relmail.toml"
    config.write_text(config.read_text().replace('adapter = "file"', 'adapter = "brevo"')
                      + "\n[delivery.brevo]\nmax_retries = 1\nmax_retry_wait = 0\n")
    responses.add(responses.POST, URL, status=500, json={"code": "internal_error", "message": "Internal server error"})
    out = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW, "--workers", "1", "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output)
    sends, accepted, _ = ledger_pairs(engine)
    assert sends and accepted == sends and summary["done"]["uncertain"] == len(sends)
    keys = [json.loads(c.request.body)["headers"]["idempotencyKey"] for c in responses.calls]
    assert len(keys) == 2 * len(sends) and len(set(keys)) == len(sends)  # each asked again once, with its own key

    responses.reset()
    responses.add_callback(responses.POST, URL, callback=created)
    time.sleep(1.1)
    again = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW, "--workers", "1"])
    assert again.exit_code == 0, again.output
    assert len(responses.calls) == 0
