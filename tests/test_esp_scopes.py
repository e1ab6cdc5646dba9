"""Postmark's suppression lists are per message stream: only relmail's stream is relmail's scope.

Checked through ``relmail serve``'s webhook with Postmark's documented SubscriptionChange example
(tests/fixtures/providers/postmark_events.json) and its credentials, for a project sending on its own stream.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from werkzeug.test import Client

from relmail.project import Project
from relmail.store.models import Customer, Event, Preference
from relmail.web.app import make_app

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "providers" / "postmark_events.json").read_text())
#: The examples' time (2022-06-05): the customer existed long before.
FIXTURES_TIME = datetime(2022, 6, 5, tzinfo=UTC)
AUTH = {"Authorization": "Basic " + base64.b64encode(b"postmark:pm-pass").decode()}


def example(name: str, **changes) -> dict:
    [payload] = [dict(e["payload"]) for e in FIXTURES["events"] if e["name"] == name]
    return {**payload, **changes}


@pytest.fixture
def postmark_shop(project, engine, monkeypatch):
    monkeypatch.setenv("RELMAIL_POSTMARK_WEBHOOK_PASSWORD", "pm-pass")
    toml = project.root / "relmail.toml"
    toml.write_text(toml.read_text() + '\n[delivery.postmark]\nmessage_stream = "newsletters"\n')
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [{"id": "C1", "email": "john@example.com", "attributes": {},
                                                    "created_at": FIXTURES_TIME - timedelta(days=400)}])
    return Client(make_app(Project.load(project.root), engine)), engine


def post(client, record: dict) -> dict:
    response = client.post("/webhooks/postmark", json=record, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json


def consent(engine) -> dict[str, bool]:
    P = Preference.__table__
    with engine.connect() as conn:
        return dict(conn.execute(select(P.c.topic, P.c.opted_in).where(P.c.customer_id == "C1")).all())


def test_an_unsubscribe_on_another_stream_stops_nothing_relmail_sends(postmark_shop):
    client, engine = postmark_shop
    answer = post(client, example("SubscriptionChange: ManualSuppression"))  # the example's stream: outbound
    assert (answer["opt_outs"], answer["ignored"]) == (0, {"SubscriptionChange": 1})
    assert consent(engine) == {}


def test_an_unsubscribe_on_relmails_stream_is_every_topic(postmark_shop):
    client, engine = postmark_shop
    answer = post(client, example("SubscriptionChange: ManualSuppression", MessageStream="newsletters"))
    assert answer["opt_outs"] == 1 and consent(engine) == {"*": False}


def test_a_hard_bounce_on_any_stream_is_the_mailboxs(postmark_shop):
    client, engine = postmark_shop
    assert post(client, example("SubscriptionChange: HardBounce"))["applied"] == {"bounced_hard": 1}
    with engine.connect() as conn:
        assert conn.execute(select(Event.__table__.c.type).where(Event.__table__.c.customer_id == "C1")).scalars().all() == [
            "email_bounced_hard"]
