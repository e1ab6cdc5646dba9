"""SendGrid unsubscribe groups: each e-mail goes with its topic's group, and a group (un)subscribe is that group's topics.

The adapter is checked at the HTTP boundary (``responses``) against the v3 ``asm`` object; the events come
through the signed Event Webhook of ``relmail serve`` as SendGrid posts them, and the next week's plan is what
the customer's choice must change.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import responses
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import insert
from tests.sendkit import WINDOW as SEND_WINDOW
from tests.sendkit import build
from tests.test_web import sendgrid_headers, trust_sendgrid_key
from werkzeug.test import Client

from delivery_messages import message
from relmail import tokens
from relmail.cli import cli
from relmail.delivery import get_adapter
from relmail.delivery.sendgrid import Groups
from relmail.errors import ConfigError, UnsupportedFeature
from relmail.feedback.consent import unsubscribe
from relmail.feedback.sendgrid import SendGrid
from relmail.planning.run import plan
from relmail.planning.why import explain, format_explanations
from relmail.project import Project
from relmail.sending.run import send
from relmail.store.models import Event
from relmail.web.app import make_app
from test_plan import AS_OF, CAMPAIGN, WINDOW, build_shop

URL = "https://api.sendgrid.com/v3/mail/send"
RUN = "test:2026-W47"
#: When the customer used SendGrid's preference page: after last week's e-mail, before this week's plan.
AT = AS_OF - timedelta(days=3)
GROUPS = ('asm_groups = { 123 = { name = "Marketing", topics = ["newsletter", "promotions"] }, '
          '456 = { name = "Service", topics = ["service"] } }')


def sendgrid(**cfg):
    return get_adapter("sendgrid", {"concurrency": 1, **cfg}, {"esp_api_key": "SG.key"})


def asm_of_requests() -> list[dict | None]:
    return [json.loads(c.request.body).get("asm") for c in responses.calls]


# -- sending: the asm object ------------------------------------------------------

@responses.activate
def test_each_email_goes_with_its_topics_group_and_the_page_shows_every_group():
    responses.add(responses.POST, URL, status=202, headers={"X-Message-Id": "sg"})
    groups = {"123": {"name": "Marketing", "topics": ["promotions", "newsletter"]}, "456": ["service"], "789": "*"}
    # Identical content on three topics: one request per group, not one for all.
    mails = [message(i, same_content=True, raw=False, topic=t) for i, t in enumerate(["promotions", "service", "tips", "promotions"])]
    assert all(r.status == "accepted" for r in sendgrid(asm_groups=groups).send(mails))
    sent = sorted((b["asm"]["group_id"], len(b["personalizations"]), tuple(b["asm"]["groups_to_display"]))
                  for b in (json.loads(c.request.body) for c in responses.calls))
    # "tips" is in no group of its own: the global group (topics = "*") carries it.
    assert sent == [(123, 2, (123, 456, 789)), (456, 1, (123, 456, 789)), (789, 1, (123, 456, 789))]


@responses.activate
def test_one_asm_group_id_is_the_group_of_every_email_as_before():
    responses.add(responses.POST, URL, status=202, headers={"X-Message-Id": "sg"})
    sendgrid(asm_group_id=42).send([message(1, topic="promotions"), message(2, topic="service")])
    assert asm_of_requests() == [{"group_id": 42}, {"group_id": 42}]  # one group: nothing else to display
    sendgrid().send([message(3, topic="promotions")])
    assert asm_of_requests()[-1] is None


@responses.activate
def test_a_topic_in_no_group_stops_the_batch_before_anything_is_sent():
    with pytest.raises(UnsupportedFeature, match="topic 'tips' is in no group of \\[delivery.sendgrid\\] asm_groups"):
        sendgrid(asm_groups={"123": ["promotions"]}).send([message(1, topic="promotions"), message(2, topic="tips")])
    assert len(responses.calls) == 0


@pytest.mark.parametrize("groups, single, error", [
    ({"123": ["promotions"], "456": ["promotions", "service"]}, None, "topic 'promotions' is in group 123 and group 456"),
    ({"123": "*", "456": ["*"]}, None, "every topic .* is in group 123 and group 456"),
    ({"123": "*"}, 42, "asm_group_id is the group of every topic asm_groups does not list"),
    ({"promo": ["promotions"]}, None, "'promo' is not a SendGrid group id"),
    ({"123": []}, None, "group 123: topics must be a list of topics"),
    ({"123": ["*", "service"]}, None, "cannot be listed with other topics"),
    ({str(n): [f"t{n}"] for n in range(1, 27)}, None, "26 groups; SendGrid shows at most 25"),
])
def test_groups_that_cannot_be_meant_are_refused_when_the_adapter_starts(groups, single, error):
    with pytest.raises(ConfigError, match=error):
        sendgrid(asm_groups=groups, **({"asm_group_id": single} if single else {}))


@responses.activate
def test_relmail_send_hands_each_email_over_with_its_topics_group(project):
    engine = build(project, customers=30)
    responses.add(responses.POST, URL, status=202, headers={"X-Message-Id": "sg"})
    adapter = sendgrid(asm_groups={"77": {"name": "Newsletter", "topics": ["newsletter"]}, "78": "*"})
    send(project, engine, "sendtest", SEND_WINDOW, adapter=adapter)
    assert responses.calls and all(asm == {"group_id": 77, "groups_to_display": [77, 78]} for asm in asm_of_requests())


@responses.activate
def test_a_campaign_topic_in_no_group_stops_relmail_send_before_the_first_email(project):
    engine = build(project, customers=30)
    with pytest.raises(UnsupportedFeature, match="topic 'newsletter' is in no group"):
        send(project, engine, "sendtest", SEND_WINDOW, adapter=sendgrid(asm_groups={"77": ["promotions"]}))
    assert len(responses.calls) == 0


# -- feedback: the next week's plan -------------------------------------------------

@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def shop(project, engine, monkeypatch, ec_key):
    """A shop sending through SendGrid with two groups; C-OK got last week's newsletter (run RUN)."""
    trust_sendgrid_key(monkeypatch, ec_key)
    toml = project.root / "relmail.toml"
    toml.write_text(toml.read_text() + f"\n[delivery.sendgrid]\n{GROUPS}\n")
    return shop_with_last_weeks_newsletter(project, engine)


def shop_with_last_weeks_newsletter(project, engine):
    """The test campaign's shop, in which C-OK got and read last week's newsletter (run RUN): (project, engine)."""
    (project.campaigns_dir / "test.yml").write_text(CAMPAIGN, encoding="utf-8")
    build_shop(engine)
    with engine.begin() as conn:  # read, as C-OK reads our mail (no fatigue)
        conn.execute(insert(Event.__table__), [
            {"event_id": f"{kind}:news", "customer_id": "C-OK", "type": kind, "occurred_at": AS_OF - timedelta(days=days),
             "message_id": "news", "run_id": RUN, "topic": "newsletter"}
            for kind, days in (("email_sent", 6), ("email_opened", 5))])
    return Project.load(project.root), engine


def post_events(project, engine, key, *events: dict) -> dict:
    body = json.dumps([{"email": "c-ok@example.org", "sg_message_id": "m1", "relmail_customer": "C-OK",
                        "relmail_run": RUN, "relmail_message": "news", **e} for e in events]).encode()
    response = Client(make_app(project, engine)).post(
        "/webhooks/sendgrid", data=body, content_type="application/json", headers=sendgrid_headers(key, body))
    assert response.status_code == 200, response.text
    return response.json


def group_event(kind: str, group: int, at=AT, n: int = 1) -> dict:
    return {"event": kind, "asm_group_id": group, "timestamp": int(at.timestamp()), "sg_event_id": f"{kind}-{group}-{n}"}


def next_week(project, engine) -> dict[str, tuple[str, list[str]]]:
    result = plan(project, engine, "test", WINDOW, as_of=AS_OF)
    return {r["message_id"]: (r["action"], r["reasons"]) for r in result.decisions.records(features=False)
            if r["customer_id"] == "C-OK"}


def test_leaving_the_group_of_the_newsletter_stops_the_promotions_it_also_covers(shop, ec_key):
    project, engine = shop
    # C-OK left "Marketing" from last week's newsletter: SendGrid drops every later promotion too.
    answer = post_events(project, engine, ec_key, group_event("group_unsubscribe", 123))
    assert answer["opt_outs"] == 2
    week = next_week(project, engine)
    assert week["promo"][0] != "send" and "NO_CONSENT" in week["promo"][1]
    assert week["service"] == ("send", [])  # the "Service" group was not left
    text = format_explanations(*explain(engine, "C-OK"))
    assert (f"  NO_CONSENT: opted out of topic 'promotions' on {AT:%Y-%m-%d %H:%M} UTC; source: ESP webhook "
            "(unsubscribed from SendGrid group 'Marketing' (group 123))") in text.splitlines()


def test_leaving_the_global_group_stops_every_topic(shop, ec_key):
    project, engine = shop
    toml = project.root / "relmail.toml"
    toml.write_text(toml.read_text().replace(GROUPS, "asm_group_id = 5"))
    project = Project.load(project.root)
    post_events(project, engine, ec_key, group_event("group_unsubscribe", 5))
    week = next_week(project, engine)
    assert all(action != "send" and "UNSUBSCRIBED" in reasons for action, reasons in week.values()), week
    assert ("source: ESP webhook (unsubscribed from SendGrid group 5, every topic)"
            in format_explanations(*explain(engine, "C-OK")))


def test_a_group_resubscribe_opts_back_in_only_what_the_group_covers(shop, ec_key):
    project, engine = shop
    post_events(project, engine, ec_key, group_event("group_unsubscribe", 123), group_event("group_unsubscribe", 456))
    answer = post_events(project, engine, ec_key, group_event("group_resubscribe", 123, AT + timedelta(hours=1)))
    assert (answer["applied"], answer["opt_ins"]) == ({"resubscribed": 1}, 2)
    week = next_week(project, engine)
    assert week["promo"] == ("send", [])
    assert "NO_CONSENT" in week["service"][1]  # still out of "Service"
    # SendGrid's retry of the same POST changes nothing.
    assert post_events(project, engine, ec_key, group_event("group_resubscribe", 123, AT + timedelta(hours=1)))["opt_ins"] == 0


def test_a_resubscribe_never_overrides_a_later_opt_out(shop, ec_key):
    project, engine = shop
    post_events(project, engine, ec_key, group_event("group_unsubscribe", 123))
    # Out of promotions through relmail's own link, after the resubscribe SendGrid reports late.
    key, name = project.secret("signing_key"), project.settings.name
    link = tokens.verify(key, tokens.sign(key, "C-OK", "promotions", RUN, name), name)
    unsubscribe(engine, link, now=AT + timedelta(hours=2))
    answer = post_events(project, engine, ec_key, group_event("group_resubscribe", 123, AT + timedelta(hours=1)))
    assert answer["opt_ins"] == 1  # newsletter back in; promotions stays out
    assert "NO_CONSENT" in next_week(project, engine)["promo"][1]


def test_a_group_the_project_does_not_list_leaves_the_messages_topic_and_resubscribes_nothing(shop, ec_key):
    project, engine = shop
    answer = post_events(project, engine, ec_key, group_event("group_unsubscribe", 999),
                         group_event("group_resubscribe", 999, AT + timedelta(hours=1)))
    assert (answer["opt_outs"], answer["opt_ins"], answer["ignored"]) == (1, 0, {"group_resubscribe": 1})
    assert next_week(project, engine)["promo"] == ("send", [])  # only the newsletter was left


def test_groups_read_from_the_settings_table_as_toml_gives_them():
    groups = Groups.from_config({"asm_groups": {"123": {"name": "Marketing", "topics": ["promotions"]}, "7": "*"}})
    assert str(groups.for_topic("promotions")) == "SendGrid group 'Marketing' (group 123)"
    assert groups.for_topic("anything").id == 7 and groups.get(7).everything


TOPIC = st.sampled_from(["promotions", "newsletter", "product-tips", "service", "events", "b2b"])


def sendgrid_with_groups(assigned: dict[str, int], global_group: int | None) -> tuple[dict, SendGrid]:
    """(asm_groups table, SendGrid events reader) for topics assigned to group ids, and a global group if given."""
    table: dict = {}
    for t, gid in assigned.items():
        table.setdefault(str(gid), []).append(t)
    if global_group is not None:
        table[str(global_group)] = "*"
    return table, SendGrid(now=lambda: AS_OF, delivery={"asm_groups": table})


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(TOPIC, st.integers(1, 5)), st.one_of(st.none(), st.integers(6, 9)), TOPIC)
def test_leaving_the_group_an_email_went_with_always_withdraws_that_emails_topic(assigned, global_group, topic):
    # Whatever the groups: the group SendGrid drops this topic's e-mails for, once left, is a group whose
    # unsubscribe opts the customer out of this topic (or of everything); and no other group's does.
    table, sg = sendgrid_with_groups(assigned, global_group)
    group = sg.groups.for_topic(topic)
    if group is None:
        return  # refused before sending (test_a_topic_in_no_group_...)
    for gid in {int(g) for g in table}:
        [event] = sg.parse_event({"email": "a@example.org", "timestamp": int(AT.timestamp()), "sg_event_id": "e",
                                  "event": "group_unsubscribe", "asm_group_id": gid})
        withdraws = event.scope == "all" or topic in event.topics
        assert withdraws == (gid == group.id or (event.scope == "all" and gid == global_group))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(TOPIC, st.integers(1, 5)), st.one_of(st.none(), st.integers(6, 9)), TOPIC, st.booleans())
def test_a_drop_withdraws_exactly_the_group_the_email_went_with(assigned, global_group, topic, names_group):
    # Whether the drop names the group or relmail finds it from the e-mail's topic: the topics withdrawn are
    # that group's (everything for the global group), never fewer, never another group's.
    from relmail.feedback.apply import _list_of

    table, sg = sendgrid_with_groups(assigned, global_group)
    group = sg.groups.for_topic(topic)
    if group is None:
        return  # refused before sending
    drop = {"email": "a@example.org", "timestamp": int(AT.timestamp()), "sg_event_id": "e", "event": "dropped",
            "reason": "Unsubscribed Address", **({"asm_group_id": group.id} if names_group else {})}
    [event] = sg.parse_event(drop)
    event = _list_of(event, topic) if event.lists else event
    if group.everything:
        assert event.scope == "all"
    else:
        assert (event.scope, set(event.topics)) == ("topic", set(group.topics))


def test_an_imported_sendgrid_export_reads_the_projects_groups(shop, tmp_path):
    project, engine = shop
    path = tmp_path / "sendgrid-events.jsonl"
    path.write_text(json.dumps({"email": "c-ok@example.org", "relmail_customer": "C-OK", "relmail_run": RUN,
                                "relmail_message": "news", **group_event("group_unsubscribe", 123)}) + "\n")
    out = CliRunner().invoke(cli, ["-p", str(project.root), "feedback", "import", str(path), "--format", "sendgrid", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["opt_outs"] == 2
    assert "NO_CONSENT" in next_week(project, engine)["promo"][1]
    assert (f"source: ESP export import (unsubscribed from SendGrid group 'Marketing' (group 123); {path})"
            in format_explanations(*explain(engine, "C-OK")))


# -- dropped "Unsubscribed Address": the group the e-mail went with, or the global list ------------

def dropped(at=AT, n: int = 1, **extra) -> dict:
    """SendGrid's ``dropped`` event for an address on an unsubscribe list, in its documented shape."""
    return {"event": "dropped", "reason": "Unsubscribed Address", "status": "5.0.0", "timestamp": int(at.timestamp()),
            "sg_event_id": f"dropped-{n}", "smtp-id": "<m1@sendgrid.net>", **extra}


@pytest.mark.parametrize("extra, group", [({"asm_group_id": 123}, "SendGrid group 'Marketing' (group 123)"),
                                           ({}, "its topic's group")], ids=["group-named", "group-of-the-topic"])
def test_a_drop_for_an_unsubscribed_address_withdraws_the_group_the_email_went_with(shop, ec_key, extra, group):
    project, engine = shop
    # Last week's newsletter went with group 123 ("Marketing"): the drop proves that group or the global list.
    answer = post_events(project, engine, ec_key, dropped(**extra))
    assert (answer["applied"], answer["opt_outs"]) == ({"unsubscribed": 1}, 2)
    week = next_week(project, engine)
    assert "NO_CONSENT" in week["promo"][1]
    assert week["service"] == ("send", [])  # a global unsubscribe shows up as drops in "Service" too
    assert (f"(dropped by SendGrid: on the unsubscribe list of {group} or the global one)"
            in format_explanations(*explain(engine, "C-OK")))


def test_a_drop_in_the_global_group_and_one_without_groups_withdraw_every_topic(shop, ec_key):
    project, engine = shop
    toml = project.root / "relmail.toml"
    toml.write_text(toml.read_text().replace(GROUPS, ""))
    project = Project.load(project.root)
    # No groups: every e-mail went without one, and SendGrid's unsubscribe is its global list.
    post_events(project, engine, ec_key, dropped())
    week = next_week(project, engine)
    assert all("UNSUBSCRIBED" in reasons for _, reasons in week.values()), week
    assert "(dropped by SendGrid: on its global unsubscribe list)" in format_explanations(*explain(engine, "C-OK"))


def test_a_drop_for_an_email_relmail_cannot_place_withdraws_every_topic(shop, ec_key):
    project, engine = shop
    body = json.dumps([{"email": "c-ok@example.org", **dropped()}]).encode()  # no custom_args: no e-mail, no topic
    response = Client(make_app(project, engine)).post(
        "/webhooks/sendgrid", data=body, content_type="application/json", headers=sendgrid_headers(ec_key, body))
    assert response.json["opt_outs"] == 1
    assert all("UNSUBSCRIBED" in reasons for _, reasons in next_week(project, engine).values())


# -- an opt-in on relmail's page lifts SendGrid's listing ------------------------------------------

DELETE_GLOBAL = "https://api.sendgrid.com/v3/asm/suppressions/global/c-ok@example.org"
DELETE_GROUP = "https://api.sendgrid.com/v3/asm/groups/{}/suppressions/c-ok@example.org"


def sending_through_sendgrid(project, monkeypatch) -> Project:
    monkeypatch.setenv("RELMAIL_ESP_API_KEY", "SG.key")
    toml = project.root / "relmail.toml"
    toml.write_text(toml.read_text().replace('adapter = "file"', 'adapter = "sendgrid"'))
    return Project.load(project.root)


def opt_in_on_the_page(project, engine, topics: list[str], everything_on: bool = True) -> None:
    key, name = project.secret("signing_key"), project.settings.name
    link = tokens.sign(key, "C-OK", "newsletter", RUN, name)
    form = {"form": "preferences", "topic": topics, **({} if everything_on else {"unsubscribe_all": "1"})}
    assert Client(make_app(project, engine)).post(f"/preferences/{link}", data=form).status_code == 200


def resubscribe_cli(project, *args) -> tuple[int, str]:
    out = CliRunner().invoke(cli, ["-p", str(project.root), "feedback", "resubscribe", *args])
    return out.exit_code, out.output


def listed_then_opted_in(shop, ec_key, monkeypatch) -> tuple[Project, object]:
    """The shop sending through SendGrid, where C-OK left "Marketing" and then every e-mail (SendGrid's global
    unsubscribe), then switched everything back on on relmail's page."""
    project, engine = shop
    project = sending_through_sendgrid(project, monkeypatch)
    post_events(project, engine, ec_key, group_event("group_unsubscribe", 123),
                {"event": "unsubscribe", "timestamp": int(AT.timestamp()), "sg_event_id": "global-1"})
    opt_in_on_the_page(project, engine, ["newsletter", "promotions", "service"])
    return project, engine


@responses.activate
def test_an_opt_in_on_relmails_page_lifts_sendgrids_group_and_global_listing(shop, ec_key, monkeypatch):
    project, engine = listed_then_opted_in(shop, ec_key, monkeypatch)
    assert next_week(project, engine)["promo"] == ("send", [])  # relmail would send: SendGrid must not drop it
    responses.add(responses.DELETE, DELETE_GLOBAL, status=204)
    responses.add(responses.DELETE, DELETE_GROUP.format(123), status=204)
    code, output = resubscribe_cli(project)
    assert code == 0, output
    assert sorted((c.request.method, c.request.url, c.request.headers["Authorization"]) for c in responses.calls) == [
        ("DELETE", DELETE_GROUP.format(123), "Bearer SG.key"), ("DELETE", DELETE_GLOBAL, "Bearer SG.key")]
    assert "SendGrid: 2 listing(s) of 1 customer(s) lifted, 0 failed" in output and "c-ok@" not in output
    # "Service" (group 456) was never left at SendGrid: nothing to lift. A second run calls nothing.
    assert resubscribe_cli(project) == (0, "SendGrid: 0 listing(s) of 0 customer(s) lifted, 0 failed\n")
    assert len(responses.calls) == 2


def lift_refused(shop, ec_key, monkeypatch) -> tuple[Project, object]:
    """C-OK left "Marketing" at SendGrid and joined the newsletter again on relmail's page; SendGrid refuses the lift."""
    project, engine = shop
    project = sending_through_sendgrid(project, monkeypatch)
    post_events(project, engine, ec_key, group_event("group_unsubscribe", 123))
    opt_in_on_the_page(project, engine, ["newsletter"])
    responses.add(responses.DELETE, DELETE_GROUP.format(123), status=400,
                  json={"errors": [{"field": None, "message": "group id does not exist"}]})
    return project, engine


@responses.activate
def test_a_refused_lift_fails_the_command_and_is_tried_again(shop, ec_key, monkeypatch):
    project, engine = lift_refused(shop, ec_key, monkeypatch)
    code, output = resubscribe_cli(project)
    assert code == 7 and "C-OK" in output and "group id does not exist" in output, output
    responses.replace(responses.DELETE, DELETE_GROUP.format(123), status=204)
    assert resubscribe_cli(project)[0] == 0
    assert [c.response.status_code for c in responses.calls] == [400, 204]


@responses.activate
def test_only_the_customers_own_opt_in_after_a_sendgrid_unsubscribe_is_carried(shop, ec_key, monkeypatch):
    project, engine = shop
    project = sending_through_sendgrid(project, monkeypatch)
    # Out through relmail's own link, in again on the page: SendGrid never listed C-OK.
    key, name = project.secret("signing_key"), project.settings.name
    unsubscribe(engine, tokens.verify(key, tokens.sign(key, "C-OK", "promotions", RUN, name), name), now=AT)
    opt_in_on_the_page(project, engine, ["newsletter", "promotions"])
    # Out at SendGrid, in on the page, out again on the page: the opt-out stands, nothing to lift.
    post_events(project, engine, ec_key, group_event("group_unsubscribe", 456))
    opt_in_on_the_page(project, engine, ["newsletter", "promotions", "service"])
    opt_in_on_the_page(project, engine, ["newsletter", "promotions"])
    code, output = resubscribe_cli(project, "--dry-run")
    assert (code, output) == (0, "SendGrid: 0 listing(s) of 0 customer(s) to lift (--dry-run, nothing called), 0 failed\n")
    assert len(responses.calls) == 0


@responses.activate
def test_an_opt_in_after_a_spam_report_lifts_nothing(shop, ec_key, monkeypatch):
    """A complaint withdraws every topic too, but it is no unsubscribe: relmail never lifts a complaint."""
    project, engine = shop
    project = sending_through_sendgrid(project, monkeypatch)
    post_events(project, engine, ec_key, {"event": "spamreport", "timestamp": int(AT.timestamp()), "sg_event_id": "spam-1"})
    opt_in_on_the_page(project, engine, ["newsletter", "promotions", "service"])
    assert resubscribe_cli(project) == (0, "SendGrid: 0 listing(s) of 0 customer(s) lifted, 0 failed\n")
    assert len(responses.calls) == 0


@responses.activate
def test_relmail_send_lifts_the_listing_before_the_customers_first_email(shop, ec_key, monkeypatch):
    """Sent while still listed, the e-mail would be dropped and the drop would opt the customer out again."""
    project, engine = listed_then_opted_in(shop, ec_key, monkeypatch)
    responses.add(responses.DELETE, DELETE_GLOBAL, status=204)
    responses.add(responses.DELETE, DELETE_GROUP.format(123), status=204)
    responses.add(responses.POST, URL, status=202, headers={"X-Message-Id": "sg"})
    result = send(project, engine, "test", WINDOW, now=lambda: AS_OF)
    calls = [(c.request.method, c.request.url) for c in responses.calls]
    to_c_ok = [i for i, c in enumerate(responses.calls)
               if c.request.method == "POST" and "c-ok@example.org" in c.request.body.decode()]
    assert to_c_ok, calls
    assert sorted(calls[:2]) == [("DELETE", DELETE_GROUP.format(123)), ("DELETE", DELETE_GLOBAL)] and min(to_c_ok) >= 2
    assert result.resubscribed == 2 and result.resubscribe_failed == []
    assert result.summary()["resubscribed"] == 2


@responses.activate
def test_a_refused_lift_does_not_stop_the_send_and_says_so(shop, ec_key, monkeypatch):
    project, engine = lift_refused(shop, ec_key, monkeypatch)
    responses.add(responses.POST, URL, status=202, headers={"X-Message-Id": "sg"})
    result = send(project, engine, "test", WINDOW, now=lambda: AS_OF)
    assert result.resubscribed == 0 and [f["customer_id"] for f in result.resubscribe_failed] == ["C-OK"]
    assert "group id does not exist" in result.resubscribe_failed[0]["error"] and result.done.get("accepted", 0) > 0
