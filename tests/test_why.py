"""relmail why: explanations from the ledger, asserted word for word."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from relmail.cli import cli
from relmail.errors import NotFound
from relmail.planning.run import plan
from relmail.planning.why import explain, format_explanations
from relmail.store.models import Customer, Event
from test_plan import AS_OF, CAMPAIGN, WINDOW, _ev, build_shop


@pytest.fixture
def planned(project, engine):
    (project.campaigns_dir / "test.yml").write_text(CAMPAIGN, encoding="utf-8")
    build_shop(engine)
    plan(project, engine, "test", WINDOW, as_of=AS_OF)
    return project


def test_why_explains_a_suppressed_customer(planned, engine):
    facts, exps = explain(engine, "C-CAP")
    print(format_explanations(facts, exps))
    assert format_explanations(facts, exps) == SUPPRESSED


def test_why_explains_a_sent_customer(planned, engine):
    facts, exps = explain(engine, "C-OK", "test:2026-W48")
    print(format_explanations(facts, exps))
    assert format_explanations(facts, exps) == SENT


def test_why_says_a_global_opt_out_is_one_not_a_link_or_provider_event(planned, engine):
    # C-UNSUB opted out of everything (a preference record, as a Mailchimp unsubscribed export writes):
    # the explanation must say so, not "unsubscribed (link or provider event) after the last opt-in".
    facts, exps = explain(engine, "C-UNSUB")
    text = format_explanations(facts, exps)
    print(text)
    assert "UNSUBSCRIBED: opted out of all e-mail (global preference)" in text
    assert "link or provider event" not in text


def test_why_explains_hard_rules_without_a_score(planned, engine):
    facts, exps = explain(engine, "C-BOUNCE")
    text = format_explanations(facts, exps)
    print(text)
    assert text == BOUNCED


@pytest.mark.parametrize("bounces, suppressed", [(3, True), (2, False)])
def test_why_names_repeated_soft_bounces(project, engine, bounces, suppressed):
    # C-OK reads our mail (an open 39 days ago); since then its last e-mails soft-bounced.
    (project.campaigns_dir / "test.yml").write_text(CAMPAIGN, encoding="utf-8")
    build_shop(engine)
    with engine.begin() as conn:
        conn.execute(Event.__table__.insert(), [_ev("C-OK", "email_bounced_soft", days, run_id=f"weekly:{days}", message_id="old")
                                                for days in (30, 20, 10)[:bounces]])
    plan(project, engine, "test", WINDOW, as_of=AS_OF)
    text = format_explanations(*explain(engine, "C-OK"))
    print(text)
    line = "  REPEATED_SOFT_BOUNCE: 3 soft bounces since the last delivery, open or click 39 days before the plan; the limit is 3"
    assert (line in text.splitlines()) is suppressed
    assert ("promo: SEND" in text) is not suppressed


def test_why_cli_json_and_unknown_customer(planned, engine):
    runner = CliRunner()
    out = runner.invoke(cli, ["--project", str(planned.root), "why", "C-TICKET", "--json"])
    assert out.exit_code == 0, out.output
    import json

    data = json.loads(out.output)
    promo = next(d for d in data["decisions"] if d["message_id"] == "promo")
    assert [r["code"] for r in promo["reasons"]] == ["OPEN_TICKET", "RECENT_COMPLAINT"]
    assert promo["reasons"][0]["explanation"] == "1 open service ticket: service comes first, promotions wait"
    missing = runner.invoke(cli, ["--project", str(planned.root), "why", "C-NOBODY"])
    assert missing.exit_code == 8 and "no decisions for customer 'C-NOBODY'" in missing.output
    with pytest.raises(NotFound):
        explain(engine, "C-OK", "test:2099-W01")


def test_why_says_why_a_customer_has_no_decision_and_what_to_look_at(planned, engine):
    """A customer of the store the run never considered is not "unknown": the message says they were in no
    message's audience as of the run's time and how to see a segment's members; an id the store lacks says so."""
    from test_plan import _customer

    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [_customer("C-LATE", -1)])  # signed up after the plan's time
    runner = CliRunner()
    late = runner.invoke(cli, ["--project", str(planned.root), "why", "C-LATE", "--run", "test:2026-W48"])
    assert late.exit_code == 8
    assert late.stderr.strip() == (
        "Error: customer 'C-LATE' has no decisions in run 'test:2026-W48': they were in the audience of none of its "
        "messages as of 2026-11-23 09:00 UTC (a message considers the members of its segments; "
        "relmail segments show NAME --as-of 2026-11-23T09:00:00Z lists them)")
    anywhere = runner.invoke(cli, ["--project", str(planned.root), "why", "C-LATE"])
    assert anywhere.exit_code == 8
    assert anywhere.stderr.strip() == (
        "Error: no decisions for customer 'C-LATE' in any run: they were in the audience of no message of any planned "
        "run (a message considers the members of its segments; relmail segments show NAME lists them)")
    typo = runner.invoke(cli, ["--project", str(planned.root), "why", "C-OKK", "--run", "test:2026-W48"])
    assert typo.exit_code == 8
    assert typo.stderr.strip() == ("Error: customer 'C-OKK' has no decisions in run 'test:2026-W48': "
                                   "no customer 'C-OKK' in the store (never imported, or erased)")



def test_why_and_customers_show_take_a_customers_address_for_its_id(planned, engine):
    """A marketer knows the address a customer writes from, not the id an import made: either names the customer,
    in any case; an address several customers share asks for the id; an unknown id in a preview says it is unknown."""
    from test_plan import _customer

    runner = CliRunner()
    root = str(planned.root)
    by_id = runner.invoke(cli, ["--project", root, "why", "C-OK", "--run", "test:2026-W48"])
    by_address = runner.invoke(cli, ["--project", root, "why", " C-OK@Example.ORG", "--run", "test:2026-W48"])
    assert by_address.exit_code == 0, by_address.output
    assert by_address.output == by_id.output and by_id.output.startswith("C-OK in run test:2026-W48")
    preview = runner.invoke(cli, ["--project", root, "why", "c-ok@example.org", "--campaign", "test", "--window", "2026-W49",
                                  "--as-of", "2026-11-30T09:00:00Z"])
    assert preview.exit_code == 0 and preview.output.startswith("C-OK in run test:2026-W49"), preview.output
    shown = runner.invoke(cli, ["--project", root, "customers", "show", "C-OK@example.org"])
    assert shown.exit_code == 0 and shown.output.startswith("C-OK  Ok <c-ok@example.org>"), shown.output

    with engine.begin() as conn:  # a guest checkout with the address of an account
        conn.execute(Customer.__table__.insert(), [_customer("C-GUEST", 10, email="C-OK@example.org")])
    shared = runner.invoke(cli, ["--project", root, "why", "c-ok@example.org"])
    assert shared.exit_code == 8
    assert shared.stderr.strip() == ("Error: 2 customers have the address 'c-ok@example.org' (C-GUEST, C-OK): "
                                     "name one by its id")
    unknown = runner.invoke(cli, ["--project", root, "why", "C-OKK", "--campaign", "test", "--window", "2026-W49",
                                  "--as-of", "2026-11-30T09:00:00Z"])
    assert unknown.exit_code == 8
    assert unknown.stderr.strip() == ("Error: customer 'C-OKK' is in no audience of campaign 'test' for window 2026-W49: "
                                      "no customer 'C-OKK' in the store (never imported, or erased)")


SUPPRESSED = """\
C-CAP in run test:2026-W48 (as of 2026-11-23 09:00 UTC)

promo: SUPPRESS  score 0.41, expected value 4.13
  score from: consent +0.20, affinity +0.15, recency +0.04
  FREQUENCY_CAP: 2 e-mails within 7 calendar days (the plan's day and the 6 before), cap is 2

welcome: SUPPRESS  score 0.55, expected value 2.75
  score from: consent +0.50, engagement +0.05
  FREQUENCY_CAP: 2 e-mails within 7 calendar days (the plan's day and the 6 before), cap is 2
  NOT_NEW_CUSTOMER: an existing customer (customer for 400 days, 0 orders); the offer is for new customers only

service: SUPPRESS  score 0.31, expected value 0.93
  score from: consent +0.17, recency +0.11, engagement +0.03
  FREQUENCY_CAP: 2 e-mails within 7 calendar days (the plan's day and the 6 before), cap is 2"""

SENT = """\
C-OK in run test:2026-W48 (as of 2026-11-23 09:00 UTC)

promo: SEND  score 0.74, expected value 7.41
  score from: affinity +0.29, consent +0.20, recency +0.14
  every rule passed, and it was the best message for this customer in this run

welcome: SUPPRESS  score 0.76, expected value 3.81
  score from: consent +0.50, engagement +0.26
  NOT_NEW_CUSTOMER: an existing customer (customer for 400 days, 1 order); the offer is for new customers only

service: SUPPRESS  score 0.67, expected value 2.02
  score from: recency +0.33, engagement +0.17, consent +0.17
  ARBITRATION_LOST: 'promo' was worth more to this customer; room for 1 e-mail in this run"""

BOUNCED = """\
C-BOUNCE in run test:2026-W48 (as of 2026-11-23 09:00 UTC)

promo: SUPPRESS  score 0.41 (not considered: a hard rule applies)
  HARD_BOUNCE: the address hard-bounced on 2026-10-04 09:00 UTC, with no delivery, open or click since

welcome: SUPPRESS  score 0.55 (not considered: a hard rule applies)
  HARD_BOUNCE: the address hard-bounced on 2026-10-04 09:00 UTC, with no delivery, open or click since
  NOT_NEW_CUSTOMER: an existing customer (customer for 400 days, 0 orders); the offer is for new customers only

service: SUPPRESS  score 0.53 (not considered: a hard rule applies)
  HARD_BOUNCE: the address hard-bounced on 2026-10-04 09:00 UTC, with no delivery, open or click since"""


def test_why_says_when_the_address_hard_bounced_and_who_reported_it(planned, engine):
    # HARD_BOUNCE said neither when nor where from, where UNSUBSCRIBED says both: a shop could not tell last week's
    # bounce in its own mailbox from one years old.
    with engine.begin() as conn:
        conn.execute(Event.__table__.update().where(Event.__table__.c.customer_id == "C-BOUNCE",
                                                    Event.__table__.c.type == "email_bounced_hard").values(event_id="smtp:h:0f3a"))
    text = format_explanations(*explain(engine, "C-BOUNCE"))
    assert ("HARD_BOUNCE: the address hard-bounced on 2026-10-04 09:00 UTC (source: bounce mailbox), with no delivery, "
            "open or click since") in text


def test_why_says_why_an_address_is_invalid_without_printing_it(planned, engine):
    """The decision logs only the flag; the reason is the stored address's, worked out when asked."""
    text = format_explanations(*explain(engine, "C-INVALID"))
    assert "INVALID_ADDRESS: the e-mail address is not a valid address: the part after the @-sign contains invalid characters: '@'" \
        in text and "bad@@example.org" not in text
    with engine.begin() as conn:  # corrected since the plan (the next import clears the flag)
        conn.execute(Customer.__table__.update().where(Customer.__table__.c.id == "C-INVALID").values(email="bad@example.org"))
    text = format_explanations(*explain(engine, "C-INVALID"))
    assert "the e-mail address was not a valid address when this was decided; the stored one is valid now" in text


def test_no_consent_beside_a_global_opt_out_says_the_customer_opted_out_not_that_no_opt_in_was_given():
    from relmail.planning.why import because

    # Zero values are not logged: consent_global absent = 0, the customer opted out of all e-mail.
    logged = {"topic": "promotions", "consent_topic": None, "global_opt_in_counts": 1.0}
    said = dict(because(["NO_CONSENT", "UNSUBSCRIBED"], logged, 0.0))
    assert said["NO_CONSENT"] == ("no consent on record for topic 'promotions', and the customer opted out of all "
                                  "e-mail (UNSUBSCRIBED)")
    assert said["UNSUBSCRIBED"].startswith("opted out of all e-mail (global preference)")
    # Never asked: the plain sentence. Unsubscribed by a link or provider event (no global record): the same.
    plain = "no consent on record for topic 'promotions' and no global opt-in; this campaign needs an opt-in"
    assert dict(because(["NO_CONSENT"], {**logged, "consent_global": None}, 0.0))["NO_CONSENT"] == plain
    assert dict(because(["NO_CONSENT", "UNSUBSCRIBED"], {**logged, "consent_global": None, "unsubscribed_event": 1.0},
                        0.0))["NO_CONSENT"] == plain
