"""One mailbox under two customer ids: its opt-outs, bounces, complaints and the mail it received count for both."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

import test_why_opt_out
from relmail.importers.history import UNDATED
from relmail.planning.run import plan
from relmail.planning.why import explain, format_explanations
from relmail.store.models import Customer, Decision, Delivery, Event, Preference, Product, Run
from test_plan import AS_OF, DAY, WINDOW, _customer, _ev, insert_shop
from test_shared_address import CAMPAIGN as SHARED_ADDRESS_CAMPAIGN

#: Two messages a customer may both get, no hold-outs: the shared-address tests' campaign.
CAMPAIGN = SHARED_ADDRESS_CAMPAIGN

#: A second campaign planned the next day: one message, a weekly cap of one e-mail.
TUESDAY = """\
title: Tuesday
policy:
  min_relevance: 0
  holdout_share: 0
  contact_cost: 0
  frequency_cap: {7d: 1}
messages:
  - id: tips
    template: newsletter
    topic: newsletter
    segments: [everyone]
    offer: promotion
    value: 1
"""


def _pref(cid: str, topic: str, opted_in: bool, days_ago: float | None) -> dict:
    """A preference row; ``days_ago`` None: without a date (an undated import's 1970-01-01)."""
    at = UNDATED if days_ago is None else AS_OF - days_ago * DAY
    return {"customer_id": cid, "topic": topic, "opted_in": opted_in, "max_per_week": None, "updated_at": at, "source": "import"}


def _opted_in(cid: str, days_ago: float | None = 300) -> list[dict]:
    return [_pref(cid, topic, True, days_ago) for topic in ("promotions", "newsletter")]


def _shop(engine, prefs: list[dict], events: list[dict] | None = None) -> None:
    """A guest (C-GUEST) and a registered account (C-DORA) with one mailbox, spelled differently, and a lone customer."""
    customers = [_customer("C-GUEST", 400, "dora@example.org"), _customer("C-DORA", 400, " Dora@Example.ORG"),
                 _customer("C-SOLO", 400, "solo@example.org")]
    # One row per (customer, topic): a later row in ``prefs`` replaces an earlier one, as a consent change does.
    latest = {(p["customer_id"], p["topic"]): p for p in prefs + _opted_in("C-SOLO")}
    insert_shop(engine, customers, list(latest.values()), (events or []) + [_ev("C-SOLO", "view", 3, product_id="EB-200")])


@pytest.fixture
def mailbox_project(project):
    (project.campaigns_dir / "mailbox.yml").write_text(CAMPAIGN, encoding="utf-8")
    (project.campaigns_dir / "tuesday.yml").write_text(TUESDAY, encoding="utf-8")
    return project


def _decided(project, engine, dry_run: bool = True, campaign: str = "mailbox", **kw) -> dict[tuple[str, str], dict]:
    result = plan(project, engine, campaign, WINDOW, as_of=kw.pop("as_of", AS_OF), dry_run=dry_run, **kw)
    return {(r["customer_id"], r["message_id"]): r for r in result.decisions.records()}


def test_an_opt_out_of_one_topic_under_one_id_stops_that_topic_for_the_other_id(mailbox_project, engine):
    _shop(engine, _opted_in("C-GUEST") + _opted_in("C-DORA") + [_pref("C-GUEST", "promotions", False, 10)])
    by = _decided(mailbox_project, engine)
    assert by[("C-GUEST", "promo")]["reasons"] == ["NO_CONSENT"]
    assert by[("C-DORA", "promo")]["reasons"] == ["SHARED_OPT_OUT"]
    assert by[("C-DORA", "promo")]["features"]["shared_topic_opt_out"] == 1
    # The other topic is still wanted: the mailbox gets the newsletter once.
    assert sorted(by[(c, "news")]["action"] for c in ("C-GUEST", "C-DORA")) == ["send", "suppress"]
    assert by[("C-SOLO", "promo")]["action"] == "send"


@pytest.mark.parametrize("how", ["preference", "unsubscribe event"])
def test_an_opt_out_of_everything_under_one_id_stops_every_message_to_the_other_id(mailbox_project, engine, how):
    prefs = _opted_in("C-GUEST") + _opted_in("C-DORA") + [_pref(c, "*", True, 300) for c in ("C-GUEST", "C-DORA")]
    events = []
    if how == "preference":
        prefs.append(_pref("C-GUEST", "*", False, 10))
    else:  # a provider's unsubscribe without a topic, through relmail feedback
        events.append(_ev("C-GUEST", "email_unsubscribed", 10, event_id="sendgrid:unsub-1"))
    _shop(engine, prefs, events)
    by = _decided(mailbox_project, engine)
    for message in ("promo", "news"):
        assert by[("C-GUEST", message)]["reasons"] == ["UNSUBSCRIBED"]
        assert by[("C-DORA", message)]["reasons"] == ["SHARED_OPT_OUT"]
        assert by[("C-DORA", message)]["features"]["shared_unsubscribed"] == 1


def test_an_undated_opt_in_never_beats_a_dated_opt_out_but_a_later_dated_opt_in_does(mailbox_project, engine):
    # Dora's opt-in came from an old shop export without a date; the guest opted out ten days ago.
    _shop(engine, _opted_in("C-GUEST", 300) + _opted_in("C-DORA", None) + [_pref("C-GUEST", "promotions", False, 10)])
    assert _decided(mailbox_project, engine)[("C-DORA", "promo")]["reasons"] == ["SHARED_OPT_OUT"]
    with engine.begin() as conn:
        # Dora subscribed again (dated) two days ago: the mailbox's latest word for promotions is yes.
        P = Preference.__table__
        conn.execute(P.update().where(P.c.customer_id == "C-DORA", P.c.topic == "promotions").values(updated_at=AS_OF - 2 * DAY))
    by = _decided(mailbox_project, engine)
    assert by[("C-DORA", "promo")]["action"] == "send"
    # The guest's own opt-out stands for the guest: the mailbox gets the message once, through Dora.
    assert by[("C-GUEST", "promo")]["reasons"] == ["NO_CONSENT"]


def test_an_opt_out_and_an_opt_in_at_the_same_time_is_an_opt_out(mailbox_project, engine):
    _shop(engine, _opted_in("C-GUEST", 10) + _opted_in("C-DORA", 10) + [_pref("C-GUEST", "promotions", False, 10)])
    assert _decided(mailbox_project, engine)[("C-DORA", "promo")]["reasons"] == ["SHARED_OPT_OUT"]


def test_a_hard_bounce_under_one_id_stops_the_other_until_something_reaches_the_mailbox(mailbox_project, engine):
    _shop(engine, _opted_in("C-GUEST") + _opted_in("C-DORA"),
          [_ev("C-DORA", "email_delivered", 40), _ev("C-GUEST", "email_bounced_hard", 20)])
    by = _decided(mailbox_project, engine)
    assert by[("C-GUEST", "promo")]["reasons"] == ["HARD_BOUNCE"]
    assert by[("C-DORA", "promo")]["reasons"] == ["SHARED_HARD_BOUNCE"] and by[("C-DORA", "news")]["reasons"] == ["SHARED_HARD_BOUNCE"]
    with engine.begin() as conn:
        # A delivery to Dora after the bounce: the mailbox works again.
        conn.execute(Event.__table__.insert(), [_ev("C-DORA", "email_delivered", 5)])
    after = _decided(mailbox_project, engine)
    assert after[("C-DORA", "promo")]["action"] == "send"
    # The mail reached the mailbox: the guest's own bounce is lifted too (the mailbox's one promo goes to either id).
    assert all("HARD_BOUNCE" not in after[("C-GUEST", m)]["reasons"] for m in ("promo", "news"))
    assert sorted(after[(c, "promo")]["action"] for c in ("C-GUEST", "C-DORA")) == ["send", "suppress"]


def test_soft_bounces_count_over_the_mailbox_until_something_reaches_it_under_any_id(mailbox_project, engine):
    # Two e-mails soft-bounced under the guest, one under the account, after the last delivery: three, the limit.
    events = [_ev("C-DORA", "email_delivered", 40), _ev("C-GUEST", "email_bounced_soft", 30, run_id="r1", message_id="a"),
              _ev("C-GUEST", "email_bounced_soft", 25, run_id="r2", message_id="a"),
              _ev("C-DORA", "email_bounced_soft", 20, run_id="r3", message_id="a")]
    _shop(engine, _opted_in("C-GUEST") + _opted_in("C-DORA"), events)
    by = _decided(mailbox_project, engine)
    for cid in ("C-GUEST", "C-DORA"):
        assert by[(cid, "news")]["reasons"] == ["REPEATED_SOFT_BOUNCE"]
        assert by[(cid, "news")]["features"]["soft_bounces"] == 3 and by[(cid, "news")]["features"]["days_since_delivery"] == 40
    _decided(mailbox_project, engine, dry_run=False)
    text = format_explanations(*explain(engine, "C-GUEST", "mailbox:2026-W48"))
    assert "3 soft bounces since the last delivery, open or click 40 days before the plan; the limit is 3 (the address's, under this and 1 other customer id)" in text
    with engine.begin() as conn:
        conn.execute(Event.__table__.insert(), [_ev("C-GUEST", "email_opened", 10)])
    after = _decided(mailbox_project, engine, replan=True)
    assert all("REPEATED_SOFT_BOUNCE" not in after[(c, m)]["reasons"] for c in ("C-GUEST", "C-DORA") for m in ("promo", "news"))


def test_a_mailbox_held_out_of_a_message_under_one_id_stays_out_under_the_other(mailbox_project, engine):
    _shop(engine, _opted_in("C-GUEST") + _opted_in("C-DORA"))
    earlier = AS_OF - 14 * DAY
    with engine.begin() as conn:
        conn.execute(Run.__table__.insert().values(id="mailbox:2026-W46", campaign="mailbox", window="2026-W46", as_of=earlier,
                                                   seed=1, status="done", config_hash="", created_at=earlier, updated_at=earlier))
        conn.execute(Decision.__table__.insert().values(
            run_id="mailbox:2026-W46", customer_id="C-GUEST", message_id="promo", action="holdout", score=0.5,
            expected_value=0.5, reasons="HOLDOUT", features={"topic": "promotions"}, created_at=earlier))
    by = _decided(mailbox_project, engine)
    assert "HELD_OUT" in by[("C-GUEST", "promo")]["reasons"] and "HELD_OUT" in by[("C-DORA", "promo")]["reasons"]
    assert by[("C-SOLO", "promo")]["action"] == "send"


def test_a_spam_complaint_under_one_id_stops_the_other(mailbox_project, engine):
    _shop(engine, _opted_in("C-GUEST") + _opted_in("C-DORA"), [_ev("C-GUEST", "email_complained", 200)])
    by = _decided(mailbox_project, engine)
    assert by[("C-GUEST", "news")]["reasons"] == ["COMPLAINED"]
    assert by[("C-DORA", "news")]["reasons"] == ["SHARED_COMPLAINT"] and by[("C-DORA", "promo")]["reasons"] == ["SHARED_COMPLAINT"]


def test_the_weekly_cap_counts_what_the_mailbox_received_under_either_id(mailbox_project, engine):
    _shop(engine, _opted_in("C-GUEST") + _opted_in("C-DORA"))
    # Monday: the mailbox gets the promo (under one id), written to the ledger, not delivered yet.
    monday = _decided(mailbox_project, engine, dry_run=False)
    assert sorted(monday[(c, "promo")]["action"] for c in ("C-GUEST", "C-DORA")) == ["send", "suppress"]
    # Tuesday: another campaign with a cap of one a week; neither id may get its message.
    tuesday = _decided(mailbox_project, engine, campaign="tuesday", as_of=AS_OF + DAY)
    for cid in ("C-GUEST", "C-DORA"):
        assert "FREQUENCY_CAP" in tuesday[(cid, "tips")]["reasons"]
        assert tuesday[(cid, "tips")]["features"]["address_shared"] == 1
    assert "FREQUENCY_CAP" in tuesday[("C-SOLO", "tips")]["reasons"]  # the lone customer got Monday's too
    with engine.begin() as conn:
        conn.execute(delete(Decision.__table__))
        conn.execute(delete(Run.__table__))
        # Monday's e-mail left under the guest's id (an email_sent event), on the newsletter topic.
        conn.execute(Event.__table__.insert(), [_ev("C-GUEST", "email_sent", -0.5, message_id="news", topic="newsletter",
                                                    run_id="mailbox:2026-W48")])
    tuesday = _decided(mailbox_project, engine, campaign="tuesday", as_of=AS_OF + DAY)
    assert "FREQUENCY_CAP" in tuesday[("C-DORA", "tips")]["reasons"] and tuesday[("C-SOLO", "tips")]["action"] == "send"
    assert tuesday[("C-DORA", "tips")]["features"]["sends_7"] == 1


def test_a_message_already_sent_under_one_id_is_not_sent_again_under_the_other(mailbox_project, engine):
    _shop(engine, _opted_in("C-GUEST") + _opted_in("C-DORA"),
          [_ev("C-GUEST", "email_sent", 20, message_id="promo", topic="promotions", run_id="mailbox:2026-W45")])
    by = _decided(mailbox_project, engine)
    assert "ALREADY_SENT" in by[("C-DORA", "promo")]["reasons"] and "ALREADY_SENT" in by[("C-GUEST", "promo")]["reasons"]


def test_a_product_bought_under_one_id_is_owned_by_the_mailbox_and_why_says_so(mailbox_project, engine):
    # The guest checkout bought the e-bike; the orders import gave the purchase to the guest, not to the account.
    _shop(engine, _opted_in("C-GUEST") + _opted_in("C-DORA"), [_ev("C-GUEST", "purchase", 30, product_id="EB-200")])
    by = _decided(mailbox_project, engine, dry_run=False)
    assert "OWNS_PRODUCT" in by[("C-DORA", "promo")]["reasons"] and "OWNS_PRODUCT" in by[("C-GUEST", "promo")]["reasons"]
    assert by[("C-SOLO", "promo")]["action"] == "send"
    text = format_explanations(*explain(engine, "C-DORA", f"mailbox:{WINDOW}"))
    assert "OWNS_PRODUCT: already owns EB-200 (the address's, under this and 1 other customer id)" in text


def test_service_tickets_and_fatigue_are_the_mailboxs(mailbox_project, engine):
    events = [_ev("C-GUEST", "ticket_opened", 3, feature="T-1")]
    # Opens fell under the guest's id while the mailbox kept getting e-mail under both.
    events += [_ev("C-GUEST", "email_sent", 31 + k) for k in range(0, 58, 4)] + [_ev("C-GUEST", "email_opened", 32 + k) for k in range(0, 58, 4)]
    events += [_ev(c, "email_sent", 1 + k) for c in ("C-GUEST", "C-DORA") for k in range(0, 28, 4)]
    _shop(engine, _opted_in("C-GUEST") + _opted_in("C-DORA"), events)
    reasons = _decided(mailbox_project, engine)[("C-DORA", "promo")]["reasons"]
    assert {"OPEN_TICKET", "RECENT_COMPLAINT", "FATIGUE"} <= set(reasons)


def test_relmail_why_names_the_other_customer_id_and_when_never_the_address(mailbox_project, engine):
    _shop(engine, _opted_in("C-GUEST") + _opted_in("C-DORA") + [_pref("C-GUEST", "promotions", False, 10)],
          [_ev("C-GUEST", "email_complained", 8)])
    _decided(mailbox_project, engine, dry_run=False)
    facts, answers = explain(engine, "C-DORA", "mailbox:2026-W48")
    text = format_explanations(facts, answers)
    when = (AS_OF - 10 * DAY).strftime("%Y-%m-%d %H:%M")
    assert f"SHARED_OPT_OUT: the same address opted out of topic 'promotions' under customer C-GUEST on {when} UTC" in text
    assert (f"SHARED_COMPLAINT: the same address reported our e-mail as spam under customer C-GUEST on "
            f"{(AS_OF - 8 * DAY):%Y-%m-%d %H:%M} UTC") in text
    assert "dora@" not in text.lower()
    promo = next(a for a in answers if a.message_id == "promo")
    assert promo.as_dict()["shared"]["SHARED_OPT_OUT"]["customer"] == "C-GUEST"


# Property: customers share mailboxes at random; opt-outs, opt-ins, bounces and complaints land on random ids.
MAILBOXES = ["a@x.org", "A@x.org", " a@X.org ", "b@x.org", "B@X.ORG", "c@x.org"]
CONSENT = st.one_of(st.none(), st.tuples(st.booleans(), st.one_of(st.none(), st.integers(1, 60))))
ROW = st.fixed_dictionaries({
    "email": st.sampled_from(MAILBOXES),
    "promotions": CONSENT,
    "everything": CONSENT,
    "unsubscribed": st.one_of(st.none(), st.integers(1, 60)),
    "bounced": st.one_of(st.none(), st.integers(1, 60)),
    "delivered": st.one_of(st.none(), st.integers(1, 60)),
    "complained": st.booleans(),
})

#: Half of who would get a message held out: the budget and the arms a property checks.
BUDGET = CAMPAIGN.replace("holdout_share: 0", "holdout_share: 0.5")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, min_size=1, max_size=7))
def test_property_no_mail_to_a_mailbox_that_opted_out_bounced_or_complained_under_any_id(mailbox_project, engine, rows):
    with engine.begin() as conn:
        for table in (Decision, Delivery, Run, Event, Preference, Customer, Product):
            conn.execute(delete(table.__table__))
    customers, prefs, events = [], [], []
    for i, r in enumerate(rows):
        cid = f"M{i}"
        customers.append(_customer(cid, 400, r["email"]))
        prefs.append(_pref(cid, "newsletter", True, 300))
        for topic, given_ in (("promotions", r["promotions"]), ("*", r["everything"])):
            if given_ is not None:
                prefs.append(_pref(cid, topic, *given_))
        if r["unsubscribed"] is not None:
            events.append(_ev(cid, "email_unsubscribed", r["unsubscribed"]))
        if r["bounced"] is not None:
            events.append(_ev(cid, "email_bounced_hard", r["bounced"]))
        if r["delivered"] is not None:
            events.append(_ev(cid, "email_delivered", r["delivered"]))
        if r["complained"]:
            events.append(_ev(cid, "email_complained", 30))
        events.append(_ev(cid, "view", 2, product_id="EB-200"))
    insert_shop(engine, customers, prefs, events)
    mailbox = {f"M{i}": r["email"].strip().lower() for i, r in enumerate(rows)}

    def latest(box: str, topic: str) -> bool | None:
        """The mailbox's latest word on ``topic`` (True: in), a dated change beating an undated one, out winning a tie."""
        said = [(-(r[key][1] if r[key][1] is not None else 10**6), not r[key][0], r[key][0])
                for i, r in enumerate(rows) if mailbox[f"M{i}"] == box
                for key in [{"promotions": "promotions", "*": "everything"}[topic]] if r[key] is not None]
        return max(said)[2] if said else None

    def dead(box: str) -> bool:
        mine = [r for i, r in enumerate(rows) if mailbox[f"M{i}"] == box]
        bounces = [r["bounced"] for r in mine if r["bounced"] is not None]
        deliveries = [r["delivered"] for r in mine if r["delivered"] is not None]
        return bool(bounces) and (not deliveries or min(bounces) < min(deliveries))

    def unsubscribed(box: str) -> bool:
        mine = [r for i, r in enumerate(rows) if mailbox[f"M{i}"] == box]
        opt_ins = [r["everything"][1] if r["everything"][1] is not None else 10**6 for r in mine
                   if r["everything"] is not None and r["everything"][0]]
        return any(r["unsubscribed"] is not None and (not opt_ins or min(opt_ins) > r["unsubscribed"]) for r in mine)

    result = plan(mailbox_project, engine, "mailbox", WINDOW, as_of=AS_OF, dry_run=True)
    sent = [(r["customer_id"], r["message_id"]) for r in result.decisions.records(False) if r["action"] == "send"]
    for cid, message in sent:
        box = mailbox[cid]
        assert latest(box, "*") is not False, (cid, message)
        if message == "promo":
            assert latest(box, "promotions") is not False, (cid, message)
        assert not unsubscribed(box) and not dead(box), (cid, message)
        assert not any(r["complained"] for i, r in enumerate(rows) if mailbox[f"M{i}"] == box), (cid, message)
    assert len({(mailbox[c], m) for c, m in sent}) == len(sent)  # and each message once per mailbox


#: Customers who may get mail: the mailbox, whether the id owns the promo's e-bike, its own opt-in to promotions,
#: and e-bike views (a higher promo score).
WILLING = st.tuples(st.sampled_from(MAILBOXES), st.booleans(), st.booleans(), st.integers(0, 2))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(WILLING, min_size=1, max_size=7), sent_before=st.lists(st.integers(0, 6), max_size=2))
def test_property_no_mailbox_gets_more_than_its_budget_and_each_is_in_one_arm_of_each_message(mailbox_project, engine, rows,
                                                                                            sent_before):
    with engine.begin() as conn:
        for table in (Decision, Delivery, Run, Event, Preference, Customer, Product):
            conn.execute(delete(table.__table__))
    customers, prefs, events = [], [], []
    for i, (email, owns, promotions, views) in enumerate(rows):
        cid = f"M{i}"
        customers.append(_customer(cid, 400, email))
        prefs += [_pref(cid, "newsletter", True, 300), _pref(cid, "promotions", promotions, 300)]
        events += [_ev(cid, "view", 1 + k, product_id="EB-200") for k in range(views)] + [_ev(cid, "view", 20, product_id="EB-100")]
        if owns:
            events.append(_ev(cid, "purchase", 100, product_id="EB-200", value=2499.0))
    # E-mails this week under some ids: the weekly cap's room is the mailbox's.
    events += [_ev(f"M{i % len(rows)}", "email_sent", 2, message_id=f"x{k}", topic="service") for k, i in enumerate(sent_before)]
    insert_shop(engine, customers, prefs, events)
    mailbox = {f"M{i}": r[0].strip().lower() for i, r in enumerate(rows)}
    received = {box: sum(1 for i in sent_before if mailbox[f"M{i % len(rows)}"] == box) for box in mailbox.values()}
    # Two e-mails a run, a weekly cap of two, half held out.
    (mailbox_project.campaigns_dir / "budget.yml").write_text(
        BUDGET.replace("policy:\n", "policy:\n  frequency_cap: {7d: 2}\n"), encoding="utf-8")
    decided = list(plan(mailbox_project, engine, "budget", WINDOW, as_of=AS_OF, dry_run=True).decisions.records(False))
    chosen = [(mailbox[r["customer_id"]], r["message_id"], r["action"]) for r in decided if r["action"] in ("send", "holdout")]
    for box in set(mailbox.values()):
        budget = max(0, min(2, 2 - received[box]))
        assert len({m for b, m, _ in chosen if b == box}) <= budget, (box, chosen)
    arms: dict[tuple[str, str], set[str]] = {}
    for box, message, action in chosen:
        arms.setdefault((box, message), set()).add(action)
    assert all(len(a) == 1 for a in arms.values()), arms
    sent = [(b, m) for b, m, a in chosen if a == "send"]
    assert len(sent) == len(set(sent))


def test_a_plan_without_shared_addresses_logs_nothing_new(mailbox_project, engine):
    insert_shop(engine, [_customer("C-SOLO", 400, "solo@example.org"), _customer("C-TWO", 400, "two@example.org")],
                _opted_in("C-SOLO") + _opted_in("C-TWO"), [_ev("C-SOLO", "view", 3, product_id="EB-200")])
    by = _decided(mailbox_project, engine)
    assert all("address_shared" not in r["features"] and "shared_unsubscribed" not in r["features"] for r in by.values())


@pytest.mark.parametrize("fact", ["opt-out", "email_complained", "email_bounced_hard"])
def test_an_opt_out_bounce_or_complaint_under_another_id_after_the_plan_stops_the_send(project, fact):
    from sqlalchemy import insert, select
    from tests.sendkit import AS_OF as SEND_AS_OF
    from tests.sendkit import build

    from relmail.sending.run import send

    engine = build(project)
    send(project, engine, "sendtest", WINDOW, limit=1, now=lambda: SEND_AS_OF)
    D, C = Delivery.__table__, Customer.__table__
    with engine.connect() as conn:
        victim = conn.execute(select(D.c.customer_id).where(D.c.status == "planned").order_by(D.c.id.desc()).limit(1)).scalar_one()
        address = conn.execute(select(C.c.email).where(C.c.id == victim)).scalar_one()
    later = SEND_AS_OF + timedelta(hours=1)
    with engine.begin() as conn:
        # The same mailbox as another customer id, in another case; what happened under it since the plan.
        conn.execute(insert(C).values(id="Z-TWIN", email=f" {address.upper()} ", locale="en_GB", timezone="UTC", attributes={}))
        if fact == "opt-out":
            conn.execute(insert(Preference.__table__).values(customer_id="Z-TWIN", topic="*", opted_in=False, updated_at=later,
                                                              source="unsubscribe-link"))
        else:
            conn.execute(insert(Event.__table__).values(customer_id="Z-TWIN", type=fact, occurred_at=later))
    send(project, engine, "sendtest", WINDOW, now=lambda: later)
    with engine.connect() as conn:
        status, error = conn.execute(select(D.c.status, D.c.last_error).where(D.c.customer_id == victim)).one()
    expected = ("OPTED_OUT: the same address opted out under customer Z-TWIN after the plan" if fact == "opt-out"
                else f"SUPPRESSED: {fact} under customer Z-TWIN (the same address) after the plan")
    assert (status, error) == ("withdrawn", expected)
    assert address.lower() not in error.lower()


#: The consent history's detail of a change relmail's own link or page made under C-OK, for C-OK-TWIN.
_THROUGH = "customer 'C-OK', which has the same address"
_SHARED = "  SHARED_OPT_OUT: the same address opted out of all e-mail under customer C-OK on "


@pytest.mark.parametrize("opt_out, reason, source", [
    # relmail's own link and page, and an import naming C-OK, opt the whole mailbox out: the twin's own record says via whom.
    (test_why_opt_out.by_link, "  UNSUBSCRIBED: opted out of all e-mail (global preference) on ",
     f"unsubscribe link (confirmation page; the unsubscribe link of {_THROUGH})"),
    (test_why_opt_out.by_one_click, "  UNSUBSCRIBED: opted out of all e-mail (global preference) on ",
     f"unsubscribe link (one-click List-Unsubscribe; the unsubscribe link of {_THROUGH})"),
    (test_why_opt_out.by_preference_page, "  NO_CONSENT: opted out of topic 'promotions' on ",
     f"preference page (the preference page of {_THROUGH})"),
    (test_why_opt_out.by_import, "  UNSUBSCRIBED: opted out of all e-mail (global preference) on ",
     "import (crm-consent.csv: the address's consent, for every customer id with it)"),
    (test_why_opt_out.by_webhook("unsubscribe"), _SHARED, "ESP webhook (sendgrid unsubscribe)"),
    (test_why_opt_out.by_webhook("spamreport"), _SHARED, "ESP webhook (sendgrid complaint)"),
    (test_why_opt_out.by_esp_export, _SHARED, "ESP export import (sendgrid unsubscribe; sendgrid-export.json)"),
], ids=["link", "one-click", "preference-page", "import", "webhook-unsubscribe", "webhook-complaint", "esp-export"])
def test_every_way_of_opting_out_under_one_id_stops_the_other_id_and_why_says_which_and_how(project, engine, tmp_path,
                                                                                            monkeypatch, opt_out, reason, source):
    from sqlalchemy import select

    from test_plan import CAMPAIGN as PLAN_CAMPAIGN
    from test_plan import build_shop

    monkeypatch.chdir(tmp_path)  # the import's file name as given
    (project.campaigns_dir / "test.yml").write_text(PLAN_CAMPAIGN, encoding="utf-8")
    build_shop(engine)
    P = Preference.__table__
    with engine.begin() as conn:
        # C-OK's registered twin: the same mailbox in another case, opted in to everything C-OK is.
        conn.execute(Customer.__table__.insert(), [_customer("C-OK-TWIN", 400, " C-OK@Example.ORG ")])
        rows = conn.execute(select(P).where(P.c.customer_id == "C-OK")).mappings().all()
        conn.execute(P.insert(), [{**r, "customer_id": "C-OK-TWIN"} for r in rows])
    opt_out(project, engine, tmp_path)
    plan(project, engine, "test", WINDOW, as_of=AS_OF)
    facts, answers = explain(engine, "C-OK-TWIN")
    assert answers and all(a.action == "suppress" and {"SHARED_OPT_OUT", "UNSUBSCRIBED", "NO_CONSENT"} & set(a.reasons)
                           for a in answers)
    line = format_explanations(facts, answers).splitlines()[3]
    # When: the opt-out's time (the one-click button's is the moment it was pressed).
    assert line.startswith(reason)
    assert line.endswith(f" UTC; source: {source}")
