"""A customer held out of a message stays in its control group: a later run of the campaign does not send it to her."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from relmail.planning.run import plan
from relmail.planning.why import explain_window
from relmail.store.models import Decision, Run
from test_plan import insert_shop

CAMPAIGN = """\
title: Spring
policy:
  min_relevance: 0
  max_messages_per_run: 5
  frequency_cap: {7d: 10, 30d: 20}
  topic_frequency_cap: {7d: 10, 30d: 20}
messages:
  - id: launch
    template: newsletter
    topic: newsletter
    segments: [everyone]
    offer: loyalty
  - id: news
    template: newsletter
    topic: newsletter
    segments: [everyone]
    offer: loyalty
    repeat_after_days: 7
"""
MONDAY = datetime(2026, 3, 9, 6, 0, tzinfo=UTC)


@pytest.fixture
def shop(project, engine):
    (project.campaigns_dir / "spring.yml").write_text(CAMPAIGN, encoding="utf-8")
    (project.campaigns_dir / "other.yml").write_text(CAMPAIGN.replace("Spring", "Other"), encoding="utf-8")
    customers = [{"id": cid, "email": f"{cid.lower()}@example.org", "first_name": "Anna", "last_name": None, "locale": "en_GB",
                  "timezone": "Europe/Amsterdam", "created_at": datetime(2025, 1, 1, tzinfo=UTC), "attributes": {}}
                 for cid in ("C1", "C2")]
    prefs = [{"customer_id": cid, "topic": "newsletter", "opted_in": True, "max_per_week": None,
              "updated_at": datetime(2025, 1, 1, tzinfo=UTC), "source": "import"} for cid in ("C1", "C2")]
    looked = [{"event_id": None, "customer_id": cid, "type": "view", "occurred_at": datetime(2025, 6, 1, tzinfo=UTC),
               "product_id": "EB-200", "feature": None, "value": None, "message_id": None, "run_id": None, "topic": None}
              for cid in ("C1", "C2")]
    insert_shop(engine, customers, prefs, looked)
    return project


def _held(engine, campaign: str, window: str, as_of: datetime, message: str, customer: str = "C1") -> None:
    """An earlier run of ``campaign`` that held ``customer`` out of ``message``."""
    with engine.begin() as conn:
        conn.execute(Run.__table__.insert().values(id=f"{campaign}:{window}", campaign=campaign, window=window, as_of=as_of, seed=1,
                                                   status="done", config_hash="", created_at=as_of, updated_at=as_of))
        conn.execute(Decision.__table__.insert().values(
            run_id=f"{campaign}:{window}", customer_id=customer, message_id=message, action="holdout", score=0.5,
            expected_value=0.5, reasons="HOLDOUT", features={"topic": "newsletter"}, created_at=as_of))


def _decided(result) -> dict[tuple[str, str], tuple[str, str]]:
    d = result.decisions
    return {(c, m): (a, r) for c, m, a, r in zip(d.customer_id, d.message_id, d.action, d.reasons)}


def test_a_one_off_message_is_never_sent_to_its_control_group(shop, engine):
    _held(engine, "spring", "2026-W02", MONDAY - timedelta(weeks=9), "launch")
    decided = _decided(plan(shop, engine, "spring", "2026-W11", as_of=MONDAY, dry_run=True))
    assert decided[("C1", "launch")] == ("suppress", "HELD_OUT")
    assert decided[("C2", "launch")][0] == "send"  # only the customer held out
    assert decided[("C1", "news")][0] == "send"  # only the message she was held out of
    facts, explanations = explain_window(shop, engine, "C1", "spring", "2026-W11", as_of=MONDAY)
    (launch,) = [e for e in explanations if e.message_id == "launch"]
    assert launch.because == [("HELD_OUT", "held out of this message by an earlier run: the customer stays in its control "
                                           "group, so the message's effect can be measured")]


def test_a_recurring_message_keeps_her_from_the_issue_she_was_held_out_of_only(shop, engine):
    _held(engine, "spring", "2026-W10", MONDAY - timedelta(days=3), "news")  # a run 3 days before: the same issue
    assert _decided(plan(shop, engine, "spring", "2026-W11", as_of=MONDAY, dry_run=True))[("C1", "news")] == ("suppress", "HELD_OUT")
    # A week later the next issue goes to her (7 days: as ALREADY_SENT counts a send).
    nxt = _decided(plan(shop, engine, "spring", "2026-W11", as_of=MONDAY + timedelta(days=4), dry_run=True))
    assert nxt[("C1", "news")][0] == "send"


def test_another_campaigns_hold_outs_and_a_released_control_group_do_not_count(shop, engine):
    _held(engine, "other", "2026-W02", MONDAY - timedelta(weeks=9), "launch")
    assert _decided(plan(shop, engine, "spring", "2026-W11", as_of=MONDAY, dry_run=True))[("C1", "launch")][0] == "send"
    _held(engine, "spring", "2026-W02", MONDAY - timedelta(weeks=9), "launch")
    spring = shop.campaigns_dir / "spring.yml"
    spring.write_text(CAMPAIGN.replace("  min_relevance: 0\n", "  min_relevance: 0\n  rules: {HELD_OUT: false}\n"), encoding="utf-8")
    assert _decided(plan(shop, engine, "spring", "2026-W11", as_of=MONDAY, dry_run=True))[("C1", "launch")][0] == "send"
