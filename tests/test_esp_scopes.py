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
import responses
from sqlalchemy import select
from tests.delivery_messages import message
from werkzeug.test import Client

from relmail.delivery import get_adapter
from relmail.errors import ConfigError
from relmail.project import Project
from relmail.store.models import ConsentChange, Customer, Event, Preference
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


# -- one topic per stream -----------------------------------------------------------------------------


BATCH = "https://api.postmarkapp.com/email/batch"
STREAMS = {"streams": {"offers": ["promotions", "newsletter"], "service-news": ["service"]}, "message_stream": "marketing"}


def postmark(**cfg):
    return get_adapter("postmark", {"concurrency": 1, **cfg}, {"esp_api_key": "pm-token"})


@responses.activate
def test_each_email_goes_on_its_topics_stream():
    responses.add(responses.POST, BATCH, json=[{"ErrorCode": 0, "MessageID": f"pm-{i}", "To": "x"} for i in range(4)])
    mails = [message(i, raw=False, topic=t) for i, t in enumerate(["promotions", "service", "tips", "newsletter"])]
    assert all(r.status == "accepted" for r in postmark(**STREAMS).send(mails))
    [call] = responses.calls
    assert call.request.headers["X-Postmark-Server-Token"] == "pm-token"
    # "tips" is on no stream of its own: message_stream carries it.
    assert [item["MessageStream"] for item in json.loads(call.request.body)] == ["offers", "service-news", "marketing", "offers"]


@pytest.mark.parametrize("cfg, error", [
    ({"streams": {"offers": ["promotions"], "more": ["promotions"]}}, "topic 'promotions' is on stream 'offers' and stream 'more'"),
    ({"streams": {"marketing": ["promotions"]}, "message_stream": "marketing"}, "'marketing' is message_stream"),
    ({"streams": {"offers": []}}, "stream 'offers': topics must be a list"),
    ({"streams": {"offers": "*"}}, "stream 'offers': topics must be a list"),
])
def test_streams_that_cannot_be_meant_are_refused_when_the_adapter_starts(cfg, error):
    with pytest.raises(ConfigError, match=error):
        postmark(**cfg)


@pytest.fixture
def streams_shop(project, engine, monkeypatch):
    monkeypatch.setenv("RELMAIL_POSTMARK_WEBHOOK_PASSWORD", "pm-pass")
    toml = project.root / "relmail.toml"
    toml.write_text(toml.read_text() + '\n[delivery.postmark]\nmessage_stream = "marketing"\n'
                    '[delivery.postmark.streams]\noffers = ["promotions", "newsletter"]\nservice-news = ["service"]\n')
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [{"id": "C1", "email": "john@example.com", "attributes": {},
                                                    "created_at": FIXTURES_TIME - timedelta(days=400)}])
    return Client(make_app(Project.load(project.root), engine)), engine


@pytest.mark.parametrize("record", ["SubscriptionChange: ManualSuppression", "Bounce: Unsubscribe"])
def test_an_unsubscribe_on_a_stream_opts_out_of_that_streams_topics(streams_shop, record):
    client, engine = streams_shop
    answer = post(client, example(record, MessageStream="offers"))
    assert answer["opt_outs"] == 2 and consent(engine) == {"promotions": False, "newsletter": False}
    C = ConsentChange.__table__
    with engine.connect() as conn:
        assert set(conn.execute(select(C.c.detail).where(C.c.customer_id == "C1")).scalars()) == {
            "unsubscribed from Postmark stream 'offers'"}
    # The default stream carries every other topic: leaving it is everything.
    post(client, example("SubscriptionChange: ManualSuppression", MessageStream="marketing", ChangedAt="2022-06-06T10:00:00Z"))
    assert consent(engine)["*"] is False
    # Another stream of the server (the shop's receipts) stops nothing relmail sends.
    assert post(client, example("SubscriptionChange: ManualSuppression", MessageStream="outbound",
                                ChangedAt="2022-06-07T10:00:00Z"))["ignored"] == {"SubscriptionChange": 1}
