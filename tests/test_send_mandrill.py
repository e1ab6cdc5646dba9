"""``relmail send`` through the Mandrill adapter end to end (``responses`` at Mandrill's API), and its events back."""

from __future__ import annotations

import base64
import email
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from email import policy
from urllib.parse import urlencode

import responses
from click.testing import CliRunner
from sqlalchemy import select
from tests.sendkit import RUN, WINDOW, build, ledger_pairs
from werkzeug.test import Client

from relmail.cli import cli
from relmail.project import Project
from relmail.store.models import Delivery, Event, Preference
from relmail.web.app import make_app

URL = "https://mandrillapp.com/api/1.0/messages/send-raw"
KEY = "md-e2e-not-a-real-key"
HOOK_KEY = "md-webhook-e2e"
#: The recipients Mandrill's denylist refuses, and why (the first two customers' addresses, by the order sent).
REFUSED = ("unsub", "hard-bounce")


def _use_mandrill(project, monkeypatch):
    monkeypatch.setenv("RELMAIL_ESP_API_KEY", KEY)
    config = project.root / "relmail.toml"
    config.write_text(config.read_text().replace('adapter = "file"', 'adapter = "mandrill"') + "\n[delivery.mandrill]\nconcurrency = 1\n")


def answering(refused: dict[str, str]):
    """Mandrill's send-raw answer: sent with an id of its own, or rejected for the reason ``refused`` gives."""

    def answer(request):
        doc = json.loads(request.body)
        to = doc["to"][0]
        if len(refused) < len(REFUSED) and to not in refused:
            refused[to] = REFUSED[len(refused)]
        if to in refused:
            return 200, {}, json.dumps([{"email": to, "status": "rejected", "reject_reason": refused[to], "_id": f"rej-{to}"}])
        return 200, {}, json.dumps([{"email": to, "status": "sent", "reject_reason": None, "_id": f"md-{to}"}])

    return answer


@responses.activate
def test_relmail_send_hands_each_email_to_mandrill_once_records_its_refusals_and_its_events_find_them(project, monkeypatch):
    engine = build(project, customers=30)
    _use_mandrill(project, monkeypatch)
    refused: dict[str, str] = {}
    responses.add_callback(responses.POST, URL, callback=answering(refused))

    out = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW, "--workers", "1", "--json"])
    assert out.exit_code == 0, out.output
    assert KEY not in out.output
    docs = [json.loads(c.request.body) for c in responses.calls]
    sends, accepted, sent_events = ledger_pairs(engine)
    assert len(docs) == len(sends) == len(accepted) + len(REFUSED) == len(sent_events) + len(REFUSED) > 2
    for doc in docs:
        assert doc["key"] == KEY and doc["async"] is False and doc["from_email"] == project.settings.sender.from_email
        mime = email.message_from_string(doc["raw_message"], policy=policy.default)
        assert mime["To"].addresses[0].addr_spec == doc["to"][0]
        assert mime["List-Unsubscribe"].startswith("<http") and mime["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        # The relmail ids Mandrill echoes in every event's msg.metadata, and the tags, as its SMTP headers.
        assert json.loads(mime["X-MC-Metadata"]) == {"relmail_customer": mime["X-Relmail-Customer"], "relmail_run": RUN,
                                                     "relmail_message": "sendtest-news"}
        assert mime["X-MC-Tags"] == "sendtest,sendtest-news"

    D, E, P = Delivery.__table__, Event.__table__, Preference.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(D.c.customer_id, D.c.provider_id, D.c.status).where(D.c.run_id == RUN)).all()
        by_address = {doc["to"][0]: customer for doc in docs
                      for customer in [email.message_from_string(doc["raw_message"], policy=policy.default)["X-Relmail-Customer"]]}
        unsub, bounced = (by_address[a] for a in refused)
        # Mandrill's denylist said why: the unsubscribe is recorded as one, the hard bounce as one.
        opted_out = conn.execute(select(P.c.customer_id, P.c.topic, P.c.source).where(P.c.opted_in.is_(False))).all()
        told = conn.execute(select(E.c.customer_id, E.c.type, E.c.run_id)
                            .where(E.c.type.in_(["email_unsubscribed", "email_bounced_hard"]),
                                   (E.c.run_id == RUN) | E.c.event_id.like("mandrill:send-refusal:%"))).all()
    assert {(c, s) for c, _, s in rows if s == "rejected"} == {(unsub, "rejected"), (bounced, "rejected")}
    assert all(pid == f"md-{_address(by_address, c)}" for c, pid, s in rows if s == "accepted")
    # The refused send bounced; the unsubscribe was from an earlier e-mail, which no run of relmail's
    # sent: the run's report must not count it as one from this e-mail, which never arrived.
    assert (unsub, "*", "esp-send") in opted_out
    assert sorted(told) == sorted([(unsub, "email_unsubscribed", None), (bounced, "email_bounced_hard", RUN)])

    # Mandrill's webhook for sent e-mails: found by the _id the send answered with, or by the metadata it echoes.
    first, second, third, fourth = sorted(c for c, _, s in rows if s == "accepted")[:4]
    echoed = {c: json.loads(email.message_from_string(d["raw_message"], policy=policy.default)["X-MC-Metadata"])
              for d in docs for c in [by_address[d["to"][0]]]}
    monkeypatch.setenv("RELMAIL_MANDRILL_WEBHOOK_KEY", HOOK_KEY)
    at = int((datetime.now(UTC) - timedelta(minutes=1)).timestamp())
    events = [
        {"event": "spam", "ts": at, "_id": f"md-{_address(by_address, first)}",
         "msg": {"ts": at, "_id": f"md-{_address(by_address, first)}", "email": _address(by_address, first), "state": "sent"}},
        # Another address than the one sent to (a forward): the _id still finds the e-mail.
        {"event": "click", "ts": at, "_id": f"md-{_address(by_address, second)}", "url": "https://fietsenwinkel.example/",
         "msg": {"ts": at, "_id": f"md-{_address(by_address, second)}", "email": "someone.else@example.org", "state": "sent"}},
        # An open of an e-mail Mandrill no longer indexes: an empty msg, the _id alone.
        {"event": "open", "ts": at, "_id": f"md-{_address(by_address, third)}", "msg": {}},
        # An id the ledger does not know and a forwarded address: the echoed metadata names the e-mail.
        {"event": "open", "ts": at, "_id": "md-unknown", "msg": {"ts": at, "_id": "md-unknown", "email": "fwd@example.org",
                                                                  "state": "sent", "metadata": echoed[fourth]}},
    ]
    fields = {"mandrill_events": json.dumps(events)}
    public = project.settings.unsubscribe_url.rstrip("/") + "/webhooks/mandrill"
    sig = base64.b64encode(hmac.new(HOOK_KEY.encode(), (public + "mandrill_events" + fields["mandrill_events"]).encode(),
                                    hashlib.sha1).digest()).decode()
    client = Client(make_app(Project.load(project.root), engine))
    answer = client.post("/webhooks/mandrill", data=urlencode(fields), content_type="application/x-www-form-urlencoded",
                         headers={"X-Mandrill-Signature": sig})
    assert answer.status_code == 200, answer.json
    with engine.connect() as conn:
        found = conn.execute(select(E.c.type, E.c.customer_id, E.c.run_id, E.c.message_id)
                             .where(E.c.type.in_(["email_complained", "email_clicked", "email_opened"]), E.c.run_id == RUN)
                             .order_by(E.c.type, E.c.customer_id)).all()
    assert found == [("email_clicked", second, RUN, "sendtest-news"), ("email_complained", first, RUN, "sendtest-news"),
                     *sorted([("email_opened", third, RUN, "sendtest-news"), ("email_opened", fourth, RUN, "sendtest-news")])]

    # A second send of the same window hands nothing over again, the refused ones included.
    again = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW, "--workers", "1"])
    assert again.exit_code == 0, again.output
    assert len(responses.calls) == len(docs)


def _address(by_address: dict[str, str], customer: str) -> str:
    return next(a for a, c in by_address.items() if c == customer)


@responses.activate
def test_a_refused_key_stops_relmail_send_with_exit_7_and_the_next_send_resumes(project, monkeypatch):
    engine = build(project, customers=30)
    _use_mandrill(project, monkeypatch)
    responses.add(responses.POST, URL, status=500, json={"status": "error", "code": -1, "name": "Invalid_Key",
                                                          "message": "Invalid API key"})
    out = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW, "--workers", "1"])
    assert out.exit_code == 7, out.output
    assert "in the secret esp_api_key" in out.output and KEY not in out.output
    assert len(responses.calls) == 1  # not retried as a server fault, and nothing more posted
    sends, accepted, _ = ledger_pairs(engine)
    assert sends and not accepted

    responses.reset()
    responses.add_callback(responses.POST, URL, callback=answering({}))
    time.sleep(1.1)  # a stopped e-mail is due again from the next second on
    out = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW, "--workers", "1"])
    assert out.exit_code == 0, out.output
    sends, accepted, _ = ledger_pairs(engine)
    assert len(accepted) == len(sends) - len(REFUSED)
