"""Rules, score, arbitration and hold-outs on synthetic feature frames (no database)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relmail.campaigns import parse_campaign
from relmail.errors import ValidationError
from relmail.features import FeatureFrame
from relmail.planning.arbitration import arbitrate, customer_hashes, holdout_draw
from relmail.rules import HARD, RULES, rules_for
from relmail.score.transparent import BlendedScorer, TransparentScorer

CAMPAIGN = parse_campaign("""
policy: {frequency_cap: {7d: 3, 30d: 8}, topic_frequency_cap: {7d: 1}, fatigue_threshold: 0.5, min_relevance: 0.4}
messages:
  - {id: m, template: t, topic: promotions, segments: [everyone], products: [EB-200], offer: promotion, value: 10}
  - {id: tip, template: t, topic: product-tips, segments: [everyone], products: [LOCK-S1], feature: share-access, offer: usage-tip}
  - {id: svc, template: t, topic: service, segments: [everyone], offer: service}
  - {id: new, template: t, topic: promotions, segments: [everyone], offer: new-customers-only}
""", "c.yml")
MSG = CAMPAIGN.message("m")

BASE = {
    "consent_global": 1, "unsubscribed_event": 0, "hard_bounced": 0, "email_valid": 1, "address_suppressed": 0,
    "complained_ever": 0, "complaints_90": 0, "sends_7": 0, "sends_30": 0, "sends_90": 0, "planned_7": 0, "planned_30": 0,
    "frequency_wish": np.nan, "open_tickets": 0, "fatigue": 0, "opens_30": 0, "is_new": 0, "loyal": 0, "tenure_days": 500,
    "orders_total": 2, "days_since_open": 10, "recency_days": 40, "soft_bounces": 0, "days_since_delivery": np.nan,
}
PER = {"consent_topic": 1, "topic_sends_7": 0, "topic_sends_30": 0, "topic_planned_7": 0, "topic_planned_30": 0,
       "already_sent": 0, "planned_same": 0, "recent_tickets": 0, "owns_product": 0, "category_affinity": 2.0,
       "feature_usage_30": 0, "score": 0.9}


def frame(*rows: dict) -> FeatureFrame:
    cols: dict[str, np.ndarray] = {}
    names = list(BASE) + [f"{m.id}.{k}" for m in CAMPAIGN.messages for k in PER]
    for name in names:
        key = name.split(".", 1)[1] if "." in name else name
        default = PER[key] if "." in name else BASE[key]
        cols[name] = np.array([float(r.get(name, r.get(key, default))) for r in rows])
    ids = np.array([f"C{i}" for i in range(len(rows))])
    return FeatureFrame(customer_ids=ids, as_of=datetime(2026, 11, 23, tzinfo=UTC), columns=cols)


@pytest.mark.parametrize("code, row, fires", [
    ("NO_CONSENT", {"consent_topic": 0}, True),
    ("NO_CONSENT", {"consent_topic": np.nan}, True),
    ("NO_CONSENT", {"consent_topic": 1}, False),
    ("UNSUBSCRIBED", {"consent_global": 0}, True),
    ("UNSUBSCRIBED", {"unsubscribed_event": 1}, True),
    ("HARD_BOUNCE", {"hard_bounced": 1}, True),
    ("REPEATED_SOFT_BOUNCE", {"soft_bounces": 3}, True),
    ("REPEATED_SOFT_BOUNCE", {"soft_bounces": 2}, False),
    ("INVALID_ADDRESS", {"email_valid": 0}, True),
    ("ADDRESS_SUPPRESSED", {"address_suppressed": 1}, True),
    ("COMPLAINED", {"complained_ever": 1}, True),
    ("FREQUENCY_CAP", {"sends_7": 2, "planned_7": 1}, True),
    ("FREQUENCY_CAP", {"sends_7": 2}, False),
    ("FREQUENCY_CAP", {"sends_7": 1, "frequency_wish": 1}, True),
    ("FREQUENCY_CAP", {"sends_30": 8}, True),
    ("TOPIC_FREQUENCY_CAP", {"m.topic_sends_7": 1}, True),
    ("TOPIC_FREQUENCY_CAP", {"m.topic_planned_7": 1}, True),
    ("ALREADY_SENT", {"m.already_sent": 1}, True),
    ("ALREADY_SENT", {"m.planned_same": 1}, True),
    ("OPEN_TICKET", {"open_tickets": 1}, True),
    ("RECENT_COMPLAINT", {"m.recent_tickets": 2}, True),
    ("OWNS_PRODUCT", {"m.owns_product": 1}, True),
    ("FATIGUE", {"fatigue": 0.5}, True),
    ("FATIGUE", {"fatigue": 0.49}, False),
    ("LOW_RELEVANCE", {"m.score": 0.39}, True),
    ("LOW_RELEVANCE", {"m.score": 0.4}, False),
])
def test_each_rule_fires_exactly_on_its_condition(code, row, fires):
    out = RULES[code].evaluate(frame(row, {}), MSG, MSG.policy)
    assert out.mask.tolist() == [fires, False]


def test_service_messages_pass_the_service_first_rules_and_tips_go_to_owners():
    svc, tip, new = CAMPAIGN.message("svc"), CAMPAIGN.message("tip"), CAMPAIGN.message("new")
    assert {"OPEN_TICKET", "RECENT_COMPLAINT", "FATIGUE", "OWNS_PRODUCT"}.isdisjoint(r.code for r in rules_for(svc))
    assert "OWNS_PRODUCT" not in {r.code for r in rules_for(tip)}
    assert "NOT_NEW_CUSTOMER" in {r.code for r in rules_for(new)} and "NOT_NEW_CUSTOMER" not in {r.code for r in rules_for(MSG)}


def test_hard_rules_cannot_be_switched_off_but_others_can():
    assert {"NO_CONSENT", "UNSUBSCRIBED", "HARD_BOUNCE", "REPEATED_SOFT_BOUNCE", "INVALID_ADDRESS", "ADDRESS_SUPPRESSED", "REMOVED_FROM_SHOP",
            "COMPLAINED", "SHARED_OPT_OUT", "SHARED_HARD_BOUNCE", "SHARED_COMPLAINT"} == HARD
    camp = parse_campaign("policy: {rules: {FATIGUE: false}}\nmessages: [{id: a, template: t, topic: x, segment: s, offer: promotion}]", "c.yml")
    assert "FATIGUE" not in {r.code for r in rules_for(camp.messages[0])}


#: What a plan logs with the caps' limits since their windows are calendar days.
CAL = {"calendar_days": 1}


def test_a_decision_logged_before_the_calendar_day_windows_is_explained_as_its_plan_counted():
    # Its plan counted the 7 days before its as-of time to the minute: why must not say calendar days.
    assert RULES["FREQUENCY_CAP"].explain({"sends_7": 3, "frequency_wish": None, "cap_7d": 2, "cap_30d": 8}) == (
        "3 e-mails in the last 7 days, cap is 2")
    assert RULES["ALREADY_SENT"].explain({"already_sent": 1, "repeat_after_days": 7}) == (
        "this message was already sent to the customer in the last 7 days; it repeats at most every 7 days")


def test_explanations_come_from_logged_values():
    assert RULES["FREQUENCY_CAP"].explain({"sends_7": 3, "frequency_wish": None, "cap_7d": 2, "cap_30d": 8, **CAL}) == "3 e-mails within 7 calendar days (the plan's day and the 6 before), cap is 2"
    assert RULES["FREQUENCY_CAP"].explain({"sends_7": 1, "planned_7": 1, "frequency_wish": 2, "cap_7d": 2, **CAL}) == (
        "2 e-mails (1 sent, 1 planned) within 7 calendar days (the plan's day and the 6 before; planned: by runs of the 6 days "
        "either side), cap is 2 (the customer's own wish)")
    assert RULES["TOPIC_FREQUENCY_CAP"].explain({"topic": "promotions", "topic_sends_7": 1, "topic_planned_30": 1,
                                                 "topic_sends_30": 2, "topic_cap_7d": 1, "topic_cap_30d": 3, **CAL}) == (
        "1 e-mail on 'promotions' within 7 calendar days (the plan's day and the 6 before), cap is 1; "
        "3 e-mails on 'promotions' (2 sent, 1 planned) within 30 calendar days (the plan's day and the 29 before; planned: by runs "
        "of the 29 days either side), cap is 3")
    assert RULES["TOPIC_FREQUENCY_CAP"].explain({"topic": "news", "topic_sends_7": 1, "topic_cap_7d": 2}) == (
        "frequency cap for the topic reached")  # under every logged cap: the rule's summary
    assert RULES["ALREADY_SENT"].explain({"already_sent": 1, "repeat_after_days": 7, **CAL}) == (
        "this message was already sent to the customer within 7 calendar days (the plan's day and the 6 before); "
        "it repeats at most every 7 days")
    assert RULES["ALREADY_SENT"].explain({"already_sent": 1, "repeat_after_days": 1, **CAL}) == (
        "this message was already sent to the customer on the plan's day; it repeats at most every 1 day")
    assert RULES["ALREADY_SENT"].explain({"already_sent": 0, "planned_same": 1, "repeat_after_days": 7}) == (
        "this message is already planned for the customer in another run, planned for a day less than 7 days from the "
        "plan's; it repeats at most every 7 days")
    assert RULES["ALREADY_SENT"].explain({"already_sent": 1}) == "this message was already sent to the customer"
    assert RULES["NO_CONSENT"].explain({"topic": "promotions", "consent_topic": None}) == (
        "no consent on record for topic 'promotions', and this campaign needs an explicit opt-in")
    assert RULES["NO_CONSENT"].explain({"topic": "promotions"}) == "opted out of topic 'promotions'"
    assert RULES["LOW_RELEVANCE"].explain({"score": 0.21, "min_relevance": 0.3}) == "relevance 0.21 is below the threshold 0.30"
    assert RULES["REPEATED_SOFT_BOUNCE"].explain({"soft_bounces": 3, "days_since_delivery": 41.6, "soft_bounce_limit": 3,
                                                  "soft_bounce_days": 90}) == (
        "3 soft bounces since the last delivery, open or click 42 days before the plan; the limit is 3")
    assert RULES["REPEATED_SOFT_BOUNCE"].explain({"soft_bounces": 4, "days_since_delivery": None, "soft_bounce_limit": 4,
                                                  "soft_bounce_days": 90}) == (
        "4 soft bounces in the last 90 days, with no delivery, open or click since; the limit is 4")


def test_the_soft_bounce_limit_is_a_campaign_setting():
    camp = parse_campaign("policy: {soft_bounce_limit: 5}\n"
                          "messages: [{id: a, template: t, topic: x, segment: s, offer: promotion}]", "c.yml")
    a = camp.messages[0]
    assert a.policy.soft_bounce_limit == 5 and MSG.policy.soft_bounce_limit == 3
    out = RULES["REPEATED_SOFT_BOUNCE"].evaluate(frame({"soft_bounces": 4}, {"soft_bounces": 5}), a, a.policy)
    assert out.mask.tolist() == [False, True] and out.detail["soft_bounce_limit"] == 5
    with pytest.raises(ValidationError, match="soft_bounce_limit"):
        parse_campaign("messages: [{id: a, template: t, topic: x, segment: s, offer: promotion, "
                       "policy: {soft_bounce_limit: 5}}]", "c.yml")
    with pytest.raises(ValidationError, match="soft_bounce_limit"):
        parse_campaign("policy: {soft_bounce_limit: 0}\nmessages: [{id: a, template: t, topic: x, segment: s, offer: promotion}]",
                       "c.yml")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.fixed_dictionaries({
    "consent_topic": st.sampled_from([0.0, 1.0, np.nan]), "category_affinity": st.floats(0, 50),
    "days_since_open": st.one_of(st.just(np.nan), st.floats(0, 2000)), "recency_days": st.one_of(st.just(np.nan), st.floats(0, 3000)),
    "sends_90": st.integers(0, 30), "owns_product": st.sampled_from([0.0, 1.0]), "feature_usage_30": st.floats(0, 100),
}), min_size=1, max_size=20), st.sampled_from(["m", "tip", "svc", "new"]))
def test_property_score_is_in_unit_interval_and_contributions_add_up(rows, mid):
    f = frame(*[{f"{k2}.{k}" if k in PER else k: v for k, v in r.items() for k2 in [mid]} for r in rows])
    score, contrib = TransparentScorer(CAMPAIGN.scoring.weights).score(f, CAMPAIGN.message(mid))
    assert ((score >= 0) & (score <= 1)).all()
    assert np.allclose(sum(contrib.values()), score)


def test_a_model_can_replace_or_blend_with_the_score():
    class Constant:
        def columns(self, message):
            return ()

        def score(self, frame, message):
            return np.full(len(frame), 0.2), {}

    f = frame({}, {"m.category_affinity": 0})
    base, _ = TransparentScorer().score(f, MSG)
    blended, contrib = BlendedScorer(TransparentScorer(), Constant(), 0.25).score(f, MSG)
    assert np.allclose(blended, 0.75 * base + 0.25 * 0.2) and np.allclose(contrib["model"], 0.05)
    replaced, _ = BlendedScorer(TransparentScorer(), Constant(), 1.0).score(f, MSG)
    assert np.allclose(replaced, 0.2)


CAND = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2), st.floats(-5, 50), st.integers(0, 3)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(CAND, st.lists(st.integers(0, 3), min_size=6, max_size=6), st.lists(st.integers(0, 2), min_size=18, max_size=18))
def test_property_arbitration_equals_greedy_and_respects_every_budget(cands, budgets, topic_budgets):
    # One candidate per (customer, message): keep the first of duplicates.
    seen, rows = set(), []
    for i, (c, t, ev, prio) in enumerate(cands):
        if (c, i % 5) not in seen:
            seen.add((c, i % 5))
            rows.append((c, t, ev, prio, i % 5))
    cust = np.array([r[0] for r in rows], dtype=np.int64)
    topic = np.array([r[1] for r in rows], dtype=np.int64)
    ev = np.array([r[2] for r in rows])
    prio = np.array([r[3] for r in rows], dtype=np.int64)
    order = np.array([r[4] for r in rows], dtype=np.int64)
    tb = np.array([topic_budgets[c * 3 + t] for c, t in zip(cust, topic)], dtype=np.int64)
    win = arbitrate(cust, topic, ev, prio, order, np.array(budgets, dtype=np.int64)[cust], tb)
    # Reference: the plain greedy loop, best expected value first.
    expect = np.zeros(len(rows), dtype=bool)
    used, used_t = {}, {}
    for i in sorted(range(len(rows)), key=lambda i: (cust[i], -ev[i], -prio[i], order[i])):
        c, t = int(cust[i]), int(topic[i])
        if used.get(c, 0) < budgets[c] and used_t.get((c, t), 0) < tb[i]:
            expect[i] = True
            used[c] = used.get(c, 0) + 1
            used_t[(c, t)] = used_t.get((c, t), 0) + 1
    assert win.tolist() == expect.tolist()


def test_holdout_draw_is_stable_independent_per_message_and_close_to_the_share():
    ids = np.array([f"C{i:07d}" for i in range(20000)])
    h = customer_hashes(ids)
    a = holdout_draw(42, h, "ebike-launch")
    assert np.array_equal(a, holdout_draw(42, customer_hashes(ids), "ebike-launch"))  # stable across re-runs
    assert abs((a < 0.1).mean() - 0.1) < 0.01
    b = holdout_draw(42, h, "newsletter")
    assert abs(((a < 0.1) & (b < 0.1)).mean() - 0.01) < 0.004  # messages draw independently
    assert not np.array_equal(a, holdout_draw(43, h, "ebike-launch"))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**62), st.floats(0.01, 0.5))
def test_property_holdout_share_is_close_to_configured(seed, share):
    h = customer_hashes([f"C{i}" for i in range(4000)])
    got = (holdout_draw(seed, h, "m") < share).mean()
    assert abs(got - share) < 4 * np.sqrt(share * (1 - share) / 4000) + 1e-9


def test_unsubscribed_is_explained_by_what_decided_it():
    """A logged global opt-out (absent: 0) is the global preference; an unknown one (null) leaves the unsubscribe event."""
    explain = RULES["UNSUBSCRIBED"].explain
    assert explain({"unsubscribed_event": 1}) == "opted out of all e-mail (global preference)"
    assert explain({"consent_global": None, "unsubscribed_event": 1}) == "unsubscribed (link or provider event) after the last opt-in"
    assert explain({"consent_global": 1, "unsubscribed_event": 1}) == "unsubscribed (link or provider event) after the last opt-in"
