"""relmail plan on a hand-built shop: exact reasons per customer, the ledger, replan, dry runs, gates."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from relmail.cli import cli
from relmail.errors import Conflict
from relmail.planning.run import plan
from relmail.store.models import Customer, Decision, Delivery, Event, Preference, Product, Run

AS_OF = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
WINDOW = "2026-W48"
DAY = timedelta(days=1)

CAMPAIGN = """\
title: Test campaign
policy:
  min_relevance: 0.3
  frequency_cap: {7d: 2, 30d: 6}
  topic_frequency_cap: {7d: 1}
  max_messages_per_run: 1
  holdout_share: 0
  contact_cost: 0
messages:
  - id: promo
    template: ebike_launch
    topic: promotions
    segments: [everyone]
    products: [EB-200]
    offer: promotion
    value: 10
  - id: welcome
    template: welcome_offer
    topic: promotions
    segments: [everyone]
    offer: new-customers-only
    value: 5
  - id: service
    template: service_reminder
    topic: service
    segments: [everyone]
    offer: service
    value: 3
    policy: {consent: opt-out}
"""

#: customer -> {message: reasons} the plan must give (empty = sent).
EXPECTED = {
    "C-OK": {"promo": [], "welcome": ["NOT_NEW_CUSTOMER"], "service": ["ARBITRATION_LOST"]},
    "C-NOCONSENT": {"promo": ["NO_CONSENT"], "welcome": ["NO_CONSENT", "NOT_NEW_CUSTOMER"], "service": []},
    "C-BOUNCE": {m: ["HARD_BOUNCE", "NOT_NEW_CUSTOMER"] if m == "welcome" else ["HARD_BOUNCE"] for m in ("promo", "welcome", "service")},
    "C-COMPLAIN": {m: ["COMPLAINED", "NOT_NEW_CUSTOMER"] if m == "welcome" else ["COMPLAINED"] for m in ("promo", "welcome", "service")},
    "C-UNSUB": {m: ["UNSUBSCRIBED", "NOT_NEW_CUSTOMER"] if m == "welcome" else ["UNSUBSCRIBED"] for m in ("promo", "welcome", "service")},
    "C-INVALID": {m: ["INVALID_ADDRESS", "NOT_NEW_CUSTOMER"] if m == "welcome" else ["INVALID_ADDRESS"] for m in ("promo", "welcome", "service")},
    "C-TICKET": {"promo": ["OPEN_TICKET", "RECENT_COMPLAINT"], "welcome": ["OPEN_TICKET", "RECENT_COMPLAINT", "NOT_NEW_CUSTOMER"], "service": []},
    "C-OWNER": {"promo": ["OWNS_PRODUCT"], "welcome": ["NOT_NEW_CUSTOMER"], "service": []},
    "C-CAP": {"promo": ["FREQUENCY_CAP"], "welcome": ["FREQUENCY_CAP", "NOT_NEW_CUSTOMER"], "service": ["FREQUENCY_CAP"]},
    "C-TOPICCAP": {"promo": ["TOPIC_FREQUENCY_CAP"], "welcome": ["TOPIC_FREQUENCY_CAP", "NOT_NEW_CUSTOMER"], "service": []},
    "C-ALREADY": {"promo": ["ALREADY_SENT"], "welcome": ["NOT_NEW_CUSTOMER"], "service": []},
    # Both offers qualify; the launch is worth more (value 10 vs 5), so it wins.
    "C-NEW": {"promo": [], "welcome": ["ARBITRATION_LOST"], "service": ["ARBITRATION_LOST"]},
    "C-LOW": {"promo": ["LOW_RELEVANCE"], "welcome": ["NOT_NEW_CUSTOMER"], "service": []},
}


def _customer(cid: str, days: float, email: str | None = None) -> dict:
    return {"id": cid, "email": email or f"{cid.lower()}@example.org", "first_name": cid[2:].title(), "last_name": None,
            "locale": "en_GB", "timezone": "Europe/Amsterdam", "created_at": AS_OF - days * DAY, "attributes": {}}


def _ev(cid: str, type_: str, days_ago: float, **kw) -> dict:
    row = {"event_id": None, "customer_id": cid, "type": type_, "occurred_at": AS_OF - days_ago * DAY,
           "product_id": None, "feature": None, "value": None, "message_id": None, "run_id": None, "topic": None}
    row.update(kw)
    return row


def build_shop(engine) -> None:
    """The hand-built customers of EXPECTED, each with one story."""
    customers = [_customer(c, 400) for c in EXPECTED if c not in ("C-NEW", "C-INVALID")]
    customers += [_customer("C-NEW", 5), _customer("C-INVALID", 400, "bad@@example.org")]
    prefs = []
    for c in EXPECTED:
        if c != "C-NOCONSENT":
            prefs.append({"customer_id": c, "topic": "promotions", "opted_in": True, "max_per_week": None,
                          "updated_at": AS_OF - 300 * DAY, "source": "import"})
    prefs.append({"customer_id": "C-UNSUB", "topic": "*", "opted_in": False, "max_per_week": None,
                  "updated_at": AS_OF - 10 * DAY, "source": "unsubscribe-link"})
    events = [
        # C-OK: likes e-bikes, reads our mail.
        _ev("C-OK", "view", 3, product_id="EB-200"), _ev("C-OK", "purchase", 60, product_id="EB-100", value=1799.0),
        _ev("C-OK", "email_sent", 40, message_id="old", topic="newsletter"), _ev("C-OK", "email_opened", 39, message_id="old"),
        _ev("C-NOCONSENT", "view", 3, product_id="EB-200"),
        _ev("C-BOUNCE", "view", 3, product_id="EB-200"),
        _ev("C-BOUNCE", "email_sent", 50, message_id="old", topic="newsletter"), _ev("C-BOUNCE", "email_bounced_hard", 50),
        _ev("C-COMPLAIN", "view", 3, product_id="EB-200"),
        _ev("C-COMPLAIN", "email_sent", 50, message_id="old", topic="newsletter"), _ev("C-COMPLAIN", "email_complained", 49),
        _ev("C-UNSUB", "view", 3, product_id="EB-200"),
        _ev("C-INVALID", "view", 3, product_id="EB-200"),
        _ev("C-TICKET", "view", 3, product_id="EB-200"), _ev("C-TICKET", "ticket_opened", 2, feature="T-1"),
        _ev("C-OWNER", "purchase", 100, product_id="EB-200", value=2499.0),
        _ev("C-CAP", "view", 3, product_id="EB-200"),
        _ev("C-CAP", "email_sent", 2, message_id="n1", topic="newsletter"), _ev("C-CAP", "email_sent", 5, message_id="n2", topic="newsletter"),
        _ev("C-TOPICCAP", "view", 3, product_id="EB-200"),
        _ev("C-TOPICCAP", "email_sent", 3, message_id="p1", topic="promotions"),
        _ev("C-ALREADY", "view", 3, product_id="EB-200"),
        _ev("C-ALREADY", "email_sent", 45, message_id="promo", topic="promotions"),
        _ev("C-NEW", "view", 1, product_id="EB-200"),
        # C-LOW: mailed twice two months ago, never opened, never looked at bikes.
        _ev("C-LOW", "email_sent", 60, message_id="x1", topic="newsletter"), _ev("C-LOW", "email_sent", 61, message_id="x2", topic="newsletter"),
    ]
    insert_shop(engine, customers, prefs, events)


#: The two e-bikes every hand-built shop sells.
PRODUCTS = [
    {"id": "EB-200", "name": "E-bike Stad 200", "category": "e-bikes", "price": 2499.0, "url": None, "features": ["app"]},
    {"id": "EB-100", "name": "E-bike Stad 100", "category": "e-bikes", "price": 1799.0, "url": None, "features": []},
]


def insert_shop(engine, customers: list[dict], prefs: list[dict], events: list[dict]) -> None:
    """Write a hand-built shop (with :data:`PRODUCTS`) in one transaction."""
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), customers)
        conn.execute(Preference.__table__.insert(), prefs)
        conn.execute(Event.__table__.insert(), events)
        conn.execute(Product.__table__.insert(), PRODUCTS)


@pytest.fixture
def plan_project(project, engine):
    (project.campaigns_dir / "test.yml").write_text(CAMPAIGN, encoding="utf-8")
    build_shop(engine)
    return project


def _reasons(result) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    for r in result.decisions.records(features=False):
        out.setdefault(r["customer_id"], {})[r["message_id"]] = r["reasons"]
    return out


def test_every_hand_built_customer_gets_exactly_the_expected_reasons(plan_project, engine):
    result = plan(plan_project, engine, "test", WINDOW, as_of=AS_OF, dry_run=True)
    assert _reasons(result) == EXPECTED
    actions = {(r["customer_id"], r["message_id"]): r["action"] for r in result.decisions.records(features=False)}
    assert actions[("C-OK", "promo")] == "send" and actions[("C-NEW", "promo")] == "send"
    assert all(a == ("send" if not EXPECTED[c][m] else "suppress") for (c, m), a in actions.items())


def test_a_plan_writes_one_run_and_a_decision_per_customer_and_message(plan_project, engine):
    result = plan(plan_project, engine, "test", WINDOW, as_of=AS_OF)
    with engine.connect() as conn:
        run = conn.execute(select(Run.__table__).where(Run.__table__.c.id == "test:2026-W48")).mappings().one()
        rows = conn.execute(select(Decision.__table__)).mappings().all()
    assert run["campaign"] == "test" and run["window"] == WINDOW and run["as_of"] == AS_OF
    assert len(rows) == len(EXPECTED) * 3 == len(result.decisions)
    by_key = {(r["customer_id"], r["message_id"]): r for r in rows}
    cap = by_key[("C-CAP", "promo")]
    assert cap["action"] == "suppress" and cap["reasons"] == "FREQUENCY_CAP"
    assert cap["features"]["sends_7"] == 2 and cap["features"]["cap_7d"] == 2
    ok = by_key[("C-OK", "promo")]
    assert ok["action"] == "send" and ok["score"] >= 0.3
    assert ok["features"]["consent_topic"] == 1 and "c.affinity" in ok["features"]
    assert ok["expected_value"] == pytest.approx(ok["score"] * 10, abs=1e-4)


def test_dry_run_writes_nothing(plan_project, engine):
    def snapshot():
        with engine.connect() as conn:
            return [conn.execute(select(func.count()).select_from(t.__table__)).scalar_one() for t in (Run, Decision, Delivery, Event)]

    before = snapshot()
    result = plan(plan_project, engine, "test", WINDOW, as_of=AS_OF, dry_run=True)
    assert len(result.decisions) == 39 and snapshot() == before


def test_a_planned_window_is_refused_without_replan(plan_project, engine):
    plan(plan_project, engine, "test", WINDOW, as_of=AS_OF)
    with pytest.raises(Conflict, match="--replan"):
        plan(plan_project, engine, "test", WINDOW, as_of=AS_OF)


def test_replan_keeps_delivered_decisions_and_replaces_the_rest(plan_project, engine):
    plan(plan_project, engine, "test", WINDOW, as_of=AS_OF)
    D, DL = Decision.__table__, Delivery.__table__
    with engine.begin() as conn:
        rows = conn.execute(select(D.c.id, D.c.customer_id, D.c.message_id).where(D.c.action == "send")).all()
        delivered = {r for r in rows if r[1] == "C-OK"}
        pending = {r for r in rows if r[1] == "C-NEW"}
        for (did, cid, mid), status in [(r, "accepted") for r in delivered] + [(r, "planned") for r in pending]:
            conn.execute(DL.insert().values(decision_id=did, run_id="test:2026-W48", customer_id=cid, message_id=mid,
                                            status=status, attempts=0, updated_at=AS_OF))
    kept_id = next(iter(delivered))[0]
    result = plan(plan_project, engine, "test", WINDOW, as_of=AS_OF, replan=True)
    assert result.kept == 1
    with engine.connect() as conn:
        rows = conn.execute(select(D.c.id, D.c.customer_id, D.c.message_id, D.c.action)).all()
        deliveries = conn.execute(select(DL.c.decision_id, DL.c.status)).all()
    ok_promo = [r for r in rows if r[1] == "C-OK" and r[2] == "promo"]
    assert ok_promo == [(kept_id, "C-OK", "promo", "send")]  # untouched, same id
    # The kept send uses the customer's one e-mail of this run: nothing else for them.
    assert {r[3] for r in rows if r[1] == "C-OK" and r[2] != "promo"} == {"suppress"}
    assert deliveries == [(kept_id, "accepted")]  # the undelivered one's delivery went with its decision
    assert len(rows) == 39


def test_frequency_caps_count_sends_planned_by_other_runs(plan_project, engine):
    other = CAMPAIGN.replace("- id: promo\n", "- id: promo2\n").replace("- id: welcome\n", "- id: welcome2\n")
    other = other.replace("- id: service\n", "- id: service2\n")
    (plan_project.campaigns_dir / "other.yml").write_text(other, encoding="utf-8")
    first = plan(plan_project, engine, "test", WINDOW, as_of=AS_OF)
    second = plan(plan_project, engine, "other", WINDOW, as_of=AS_OF + timedelta(hours=1))
    sent_first = {r["customer_id"] for r in first.decisions.records(False) if r["action"] == "send"}
    again = {r["customer_id"]: r for r in second.decisions.records() if r["message_id"] == "promo2"}
    # C-OK got 'promo' from the first run (not delivered yet): 'promo2' is a second promotion within 7 days.
    assert "C-OK" in sent_first
    assert again["C-OK"]["reasons"] == ["TOPIC_FREQUENCY_CAP"]
    assert again["C-OK"]["features"]["topic_planned_7"] == 1


ROW = st.fixed_dictionaries({
    "consent": st.sampled_from([None, True, False]),
    "unsubscribed": st.booleans(),
    "bounced": st.booleans(),
    "complained": st.booleans(),
    "sends_7": st.integers(0, 3),
    "promo_sends_7": st.integers(0, 2),
    "viewed": st.booleans(),
})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, min_size=1, max_size=8))
def test_property_no_promotion_without_consent_or_after_bounce_or_complaint_and_caps_hold(project, engine, rows):
    (project.campaigns_dir / "test.yml").write_text(CAMPAIGN, encoding="utf-8")
    with engine.begin() as conn:
        for t in (Event, Preference, Customer, Decision, Run):
            conn.execute(t.__table__.delete())
        customers, prefs, events = [], [], []
        for i, r in enumerate(rows):
            cid = f"P{i:03d}"
            customers.append(_customer(cid, 200))
            if r["consent"] is not None:
                prefs.append({"customer_id": cid, "topic": "promotions", "opted_in": r["consent"], "max_per_week": None,
                              "updated_at": AS_OF - 100 * DAY, "source": "import"})
            if r["unsubscribed"]:
                prefs.append({"customer_id": cid, "topic": "*", "opted_in": False, "max_per_week": None,
                              "updated_at": AS_OF - 5 * DAY, "source": "import"})
            if r["bounced"]:
                events.append(_ev(cid, "email_bounced_hard", 20))
            if r["complained"]:
                events.append(_ev(cid, "email_complained", 20))
            if r["viewed"]:
                events.append(_ev(cid, "view", 2, product_id="EB-200"))
            for k in range(r["sends_7"]):
                events.append(_ev(cid, "email_sent", 1 + k, message_id=f"n{k}", topic="newsletter"))
            for k in range(r["promo_sends_7"]):
                events.append(_ev(cid, "email_sent", 1.5 + k, message_id=f"p{k}", topic="promotions"))
        conn.execute(Customer.__table__.insert(), customers)
        if prefs:
            conn.execute(Preference.__table__.insert(), prefs)
        if events:
            conn.execute(Event.__table__.insert(), events)
    other = CAMPAIGN.replace("- id: promo\n", "- id: promo2\n").replace("- id: welcome\n", "- id: welcome2\n")
    (project.campaigns_dir / "other.yml").write_text(other.replace("- id: service\n", "- id: service2\n"), encoding="utf-8")
    # Two runs in the same window: the first is written (not delivered yet), the second must count it.
    first = plan(project, engine, "test", WINDOW, as_of=AS_OF)
    second = plan(project, engine, "other", WINDOW, as_of=AS_OF + timedelta(hours=2), dry_run=True)
    sends: dict[str, int] = {}
    promos: dict[str, int] = {}
    for d in [*first.decisions.records(False), *second.decisions.records(False)]:
        r = rows[int(d["customer_id"][1:])]
        if d["action"] != "send":
            continue
        sends[d["customer_id"]] = sends.get(d["customer_id"], 0) + 1
        if d["message_id"].startswith(("promo", "welcome")):
            promos[d["customer_id"]] = promos.get(d["customer_id"], 0) + 1
            assert r["consent"] is True and not r["unsubscribed"] and not r["bounced"] and not r["complained"]
    for cid, n in sends.items():
        r = rows[int(cid[1:])]
        assert r["sends_7"] + r["promo_sends_7"] + n <= 2  # global cap: 2 per 7 days, across both runs
        assert r["promo_sends_7"] + promos.get(cid, 0) <= 1  # promotions topic cap: 1 per 7 days
    with engine.begin() as conn:
        conn.execute(Decision.__table__.delete())
        conn.execute(Run.__table__.delete())


def test_holdouts_are_stable_across_replans_and_logged_like_sends(plan_project, engine):
    (plan_project.campaigns_dir / "test.yml").write_text(CAMPAIGN.replace("holdout_share: 0", "holdout_share: 0.5"), encoding="utf-8")
    first = plan(plan_project, engine, "test", WINDOW, as_of=AS_OF)
    again = plan(plan_project, engine, "test", WINDOW, as_of=AS_OF, replan=True)
    held = lambda res: sorted((r["customer_id"], r["message_id"]) for r in res.decisions.records(False) if r["action"] == "holdout")  # noqa: E731
    assert held(first) == held(again) != []
    rows = {(r["customer_id"], r["message_id"]): r for r in first.decisions.records()}
    for key in held(first):
        assert rows[key]["reasons"] == ["HOLDOUT"] and rows[key]["features"]["holdout_share"] == 0.5
        assert "consent_topic" in rows[key]["features"] and "c.consent" in rows[key]["features"]


def test_cli_plan_prints_the_summary_and_gates_fail_with_their_exit_codes(plan_project, engine, tmp_path):
    runner = CliRunner()
    base = ["--project", str(plan_project.root), "plan", "test", "--window", WINDOW, "--as-of", "2026-11-23T09:00:00Z", "--dry-run"]
    ok = runner.invoke(cli, base + ["--out", str(tmp_path / "plan.csv")])
    assert ok.exit_code == 0, ok.output
    assert "Run test:2026-W48 as of 2026-11-23 09:00 UTC (dry run: nothing written)" in ok.output
    assert "ARBITRATION_LOST" in ok.output and (tmp_path / "plan.csv").read_text().startswith("customer_id,message_id,action")
    rate = runner.invoke(cli, base + ["--max-suppression-rate", "0.5"])
    assert rate.exit_code == 20 and "suppression rate" in rate.output
    few = runner.invoke(cli, base + ["--min-sends", "1000"])
    assert few.exit_code == 21 and "--min-sends" in few.output
    both = runner.invoke(cli, base + ["--min-sends", "1000", "--max-suppression-rate", "0.1"])
    assert both.exit_code == 20
    # The JSON says which gates failed, each with its exit code; the process exits with the first one's.
    data = runner.invoke(cli, base + ["--min-sends", "1000", "--max-suppression-rate", "0.1", "--json"])
    assert data.exit_code == 20
    assert [(g["gate"], g["exit_code"]) for g in json.loads(data.stdout)["gates_failed"]] == [("max_suppression_rate", 20), ("min_sends", 21)]
    assert json.loads(runner.invoke(cli, base + ["--json"]).stdout)["gates_failed"] == []


def test_diff_against_last_before_the_first_run_plans_and_says_there_is_nothing_to_compare(plan_project, engine, tmp_path):
    # A fresh install's first scheduled Friday preview (examples/ci/cron): no run yet is no failure.
    runner = CliRunner()
    base = ["--project", str(plan_project.root), "plan", "test", "--window", WINDOW, "--as-of", "2026-11-23T09:00:00Z", "--dry-run"]
    out = runner.invoke(cli, base + ["--diff-against", "last", "--out", str(tmp_path / "plan.md")])
    assert out.exit_code == 0, out.output
    assert out.stderr == "Note: campaign 'test' has no run yet: no changes to show (--diff-against last).\n"
    assert "Changes since" not in out.stdout and (tmp_path / "plan.md").exists()
    # The Markdown is a summary and the suppression list: the line says so, not that it holds every decision.
    md = (tmp_path / "plan.md").read_text()
    held = int(re.search(r"#### Suppressed and held out \(([\d,]+)\)", md).group(1).replace(",", ""))
    assert re.search(rf"Wrote the summary of [\d,]+ decisions to .*plan\.md \(md\), with {min(held, 200):,} of the {held:,} "
                     r"suppressions and hold-outs\.", out.stdout), out.stdout
    missing = runner.invoke(cli, base + ["--diff-against", "test:2026-W01"])
    assert missing.exit_code == 8 and "no run 'test:2026-W01' in the ledger" in missing.stderr


def test_cli_diff_against_shows_who_moved_and_why(plan_project, engine, tmp_path):
    runner = CliRunner()
    base = ["--project", str(plan_project.root), "plan", "test", "--window", WINDOW, "--as-of", "2026-11-23T09:00:00Z", "--dry-run"]
    assert runner.invoke(cli, base + ["--out", str(tmp_path / "old.jsonl")]).exit_code == 0
    # C-OK opens a service ticket: the promotion moves from send to suppress.
    with engine.begin() as conn:
        conn.execute(Event.__table__.insert(), [_ev("C-OK", "ticket_opened", 1, feature="T-9")])
    out = runner.invoke(cli, base + ["--diff-against", str(tmp_path / "old.jsonl"), "--out", str(tmp_path / "new.md")])
    assert out.exit_code == 0, out.output
    assert f"Changes since {tmp_path / 'old.jsonl'}: 1 customer, 3 decisions (36 unchanged)" in out.output
    lines = out.output.splitlines()
    at = lines.index(next(line for line in lines if line.startswith("customer  message  before")))
    assert [line.split() for line in lines[at + 2:at + 5]] == [
        ["C-OK", "promo", "send", "suppress", "(OPEN_TICKET", "RECENT_COMPLAINT)"],
        ["welcome", "suppress", "(NOT_NEW_CUSTOMER)", "suppress", "(OPEN_TICKET", "RECENT_COMPLAINT", "NOT_NEW_CUSTOMER)"],
        ["service", "suppress", "(ARBITRATION_LOST)", "send"]]
    md = (tmp_path / "new.md").read_text()
    assert md.startswith("### relmail plan `test:2026-W48` (dry run, nothing written)")
    assert "| C-OK | promo | suppress | 0.74 | OPEN_TICKET RECENT_COMPLAINT |" in md
    assert "| C-OK | promo | send | suppress (OPEN_TICKET RECENT_COMPLAINT) |" in md
    assert "|  | service | suppress (ARBITRATION_LOST) | send |" in md
    assert "| send -> suppress | 1 |\n| suppress -> send | 1 |\n| suppress, other reasons | 1 |" in md


#: The reason codes the issue requires on the demo shop (ADDRESS_SUPPRESSED needs an erasure first).
DEMO_CODES = {"NO_CONSENT", "UNSUBSCRIBED", "HARD_BOUNCE", "INVALID_ADDRESS", "COMPLAINED", "FREQUENCY_CAP",
              "TOPIC_FREQUENCY_CAP", "ALREADY_SENT", "OPEN_TICKET", "RECENT_COMPLAINT", "OWNS_PRODUCT",
              "NOT_NEW_CUSTOMER", "FATIGUE", "LOW_RELEVANCE", "ARBITRATION_LOST", "HOLDOUT"}


def test_the_demo_campaign_on_the_demo_shop_shows_every_reason_code(project, engine):
    from relmail.demo import ROLES, generate

    generate(engine, customers=1500, seed=7, as_of=AS_OF)
    result = plan(project, engine, "weekly", WINDOW, as_of=AS_OF, dry_run=True)
    assert set(result.reason_counts()) >= DEMO_CODES
    by = {(r["customer_id"], r["message_id"]): r for r in result.decisions.records(False)}
    assert by[(ROLES["hard_bounce"], "newsletter")]["reasons"][0] == "HARD_BOUNCE"
    # Last week's newsletter readers: the newsletter repeats at most every 14 days.
    assert next(m for m in result.messages if m.message_id == "newsletter").reasons["ALREADY_SENT"] > 100
    assert "OWNS_PRODUCT" in by[(ROLES["owns_eb200"], "ebike-launch")]["reasons"]
    assert {"OPEN_TICKET", "RECENT_COMPLAINT"} <= set(by[(ROLES["open_ticket"], "ebike-launch")]["reasons"])
    assert by[(ROLES["loyal"], "welcome-offer")]["reasons"][-1] == "NOT_NEW_CUSTOMER"
    assert "UNSUBSCRIBED" in by[(ROLES["unsubscribed"], "newsletter")]["reasons"]
    # The demo campaign's message data fits the shipped templates.
    from relmail.campaigns import load_campaign
    from relmail.planning.gate import render_sample

    assert render_sample(project, engine, load_campaign(project, "weekly"), result, sample=5) == []


def test_an_empty_store_plans_nothing_without_errors(project, engine):
    result = plan(project, engine, "weekly", WINDOW, as_of=AS_OF, dry_run=True)
    assert len(result.decisions) == 0 and result.totals["audience"] == 0 and result.suppression_rate == 0.0


def test_unknown_segment_is_named_with_the_campaign_file(project, engine):
    from relmail.errors import ValidationError

    (project.campaigns_dir / "bad.yml").write_text(CAMPAIGN.replace("segments: [everyone]\n    products", "segments: [nobody]\n    products"))
    text = CAMPAIGN.replace("segments: [everyone]\n    products", "segments: [nobody]\n    products")
    line = text.splitlines().index("    segments: [nobody]") + 1
    with pytest.raises(ValidationError, match=rf"bad.yml:{line}: field 'messages.0.segments': unknown segment 'nobody'"):
        plan(project, engine, "bad", WINDOW, as_of=AS_OF, dry_run=True)


def test_the_bulk_ledger_write_round_trips_awkward_text_on_both_backends(engine):
    import numpy as np
    import orjson

    from relmail.planning import decisions as dec

    features = [orjson.dumps({"topic": 'say "hi"\\now', "tab": "a\tb", "n": 1.5}).decode(), '{"topic":"x"}']
    batch = dec.Decisions(
        customer_id=np.array(["C1", "C\t2"], dtype=object), message_id=np.array(["m", "m"], dtype=object),
        action=np.array(["send", "suppress"], dtype=object), score=np.array([0.5, np.nan]),
        expected_value=np.array([1.25, 0.0]), reasons=np.array(["", "NO_CONSENT"], dtype=object),
        features=np.array(features, dtype=object))
    with engine.begin() as conn:
        # One batch of ordinary ids (PostgreSQL's fast COPY text path), one with a tab in an id.
        assert dec.write(conn, "r:1", batch.take(np.array([0])), AS_OF) == 1
        assert dec.write(conn, "r:1", batch.take(np.array([1])), AS_OF) == 1
    with engine.connect() as conn:
        rows = conn.execute(select(Decision.__table__).order_by(Decision.__table__.c.id)).mappings().all()
    assert [r["customer_id"] for r in rows] == ["C1", "C\t2"]
    assert rows[0]["features"] == {"topic": 'say "hi"\\now', "tab": "a\tb", "n": 1.5}
    assert rows[0]["created_at"] == AS_OF and rows[0]["expected_value"] == 1.25 and rows[1]["reasons"] == "NO_CONSENT"
    assert rows[1]["score"] == 0.0  # a NaN score is stored as 0


def test_render_gate_renders_a_sample_and_fails_with_exit_22(plan_project, engine, tmp_path):
    runner = CliRunner()
    base = ["--project", str(plan_project.root), "plan", "test", "--window", WINDOW, "--as-of", "2026-11-23T09:00:00Z", "--dry-run"]
    fine = runner.invoke(cli, base + ["--json"])
    assert fine.exit_code == 0, fine.output
    import json

    assert json.loads(fine.output)["render_errors"] == 0
    (plan_project.templates_dir / "broken.html").write_text(
        '{% extends "layouts/base.html" %}{% block subject %}Hi{% endblock %}'
        "{% block content %}{{ customer.first_name|no_such_filter }}{% endblock %}", encoding="utf-8")
    (plan_project.campaigns_dir / "test.yml").write_text(CAMPAIGN.replace("template: ebike_launch", "template: broken"), encoding="utf-8")
    bad = runner.invoke(cli, base + ["--out", str(tmp_path / "plan.md")])
    assert bad.exit_code == 22, bad.output
    assert "render error: promo [broken.html + text from the HTML] for C-NEW (en_GB): " in bad.output
    assert "no_such_filter" in bad.output
    assert "**2 render error(s):**" in (tmp_path / "plan.md").read_text()


def test_recipients_who_get_the_base_template_in_another_language_are_a_warning(plan_project, engine):
    """The base template is in the default locale's language; French customers with no .fr variant get it
    without any render failing. The plan says so (a warning, not a gate), naming the file to add."""
    with engine.begin() as conn:
        conn.execute(Customer.__table__.update().values(locale="fr_FR"))
    base = ["--project", str(plan_project.root), "plan", "test", "--window", WINDOW, "--as-of", "2026-11-23T09:00:00Z",
            "--dry-run", "--json"]
    import json

    out = CliRunner().invoke(cli, base)
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    sends = {m["message_id"]: m["send"] for m in data["messages"]}
    warned = {w["message_id"]: w["text"] for w in data["warnings"] if w["rule"] == "OTHER_LANGUAGE"}
    assert set(warned) == {m for m, n in sends.items() if n} == {"promo", "service"}
    assert warned["promo"] == (f"promo: {sends['promo']} recipient(s) get ebike_launch.html, written in 'en', not in their "
                               f"language ({sends['promo']} fr_FR); add ebike_launch.fr.html for them")
    french = plan_project.templates_dir / "ebike_launch.fr.html"
    french.write_text((plan_project.templates_dir / "ebike_launch.html").read_text(encoding="utf-8"), encoding="utf-8")
    again = json.loads(CliRunner().invoke(cli, base).stdout)
    assert [w["message_id"] for w in again["warnings"] if w["rule"] == "OTHER_LANGUAGE"] == ["service"]


def test_a_campaign_naming_a_missing_template_is_refused_before_anything_is_planned(plan_project, engine):
    path = plan_project.campaigns_dir / "test.yml"
    path.write_text(CAMPAIGN.replace("template: ebike_launch", "template: ebike_lunch"), encoding="utf-8")
    line = CAMPAIGN.split("template: ebike_launch")[0].count("\n") + 1
    out = CliRunner().invoke(cli, ["--project", str(plan_project.root), "plan", "test", "--window", WINDOW,
                                   "--as-of", "2026-11-23T09:00:00Z"])
    assert out.exit_code == 4, out.output
    assert f"{path}:{line}: field 'messages.0.template': no template 'ebike_lunch.html' in" in out.stderr
    assert "ebike_launch" in out.stderr  # the templates there, to spot the typo
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Run.__table__)).scalar_one() == 0


def test_a_template_without_a_subject_fails_the_gate_naming_its_file(plan_project, engine):
    (plan_project.templates_dir / "nosubject.html").write_text(
        "<html><body><p>Hi {{ customer.first_name }}</p><p><a href='{{ links.unsubscribe }}'>Unsubscribe</a></p></body></html>",
        encoding="utf-8")
    (plan_project.campaigns_dir / "test.yml").write_text(CAMPAIGN.replace("template: ebike_launch", "template: nosubject"),
                                                         encoding="utf-8")
    out = CliRunner().invoke(cli, ["--project", str(plan_project.root), "plan", "test", "--window", WINDOW,
                                   "--as-of", "2026-11-23T09:00:00Z", "--dry-run", "--json"])
    assert out.exit_code == 22, out.output
    problems = json.loads(out.stdout)["render_problems"]
    assert problems and {(p["file"], p["line"]) for p in problems} == {("nosubject.html", None)}
    assert all("no subject" in p["error"] for p in problems)


def test_a_plan_racing_another_for_the_same_window_is_refused_by_the_run_lock(plan_project, engine, monkeypatch):
    import relmail.planning.partition as plan_module

    real = plan_module.compute_features
    refused = []

    def with_a_rival(*args, **kwargs):
        # While this plan computes, another planner starts on the same window: the run's lock refuses it.
        monkeypatch.setattr(plan_module, "compute_features", real)
        with pytest.raises(Conflict, match=r"run test:2026-W48 is being worked on by .+:\d+ since") as err:
            plan(plan_project, engine, "test", WINDOW, as_of=AS_OF)
        refused.append(err.value)
        return real(*args, **kwargs)

    monkeypatch.setattr(plan_module, "compute_features", with_a_rival)
    plan(plan_project, engine, "test", WINDOW, as_of=AS_OF)
    assert len(refused) == 1
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Decision.__table__)).scalar_one() == 39  # the first plan's


def test_a_run_row_written_meanwhile_by_a_writer_without_the_lock_fails_the_plan_cleanly(plan_project, engine, monkeypatch):
    import relmail.planning.partition as plan_module

    real = plan_module.compute_features

    def with_a_rival(*args, **kwargs):
        # ``relmail runs import`` writes runs without the run lock: its run appears while this plan computes.
        monkeypatch.setattr(plan_module, "compute_features", real)
        with engine.begin() as conn:
            conn.execute(Run.__table__.insert().values(id="test:2026-W48", campaign="test", window=WINDOW, as_of=AS_OF,
                                                       seed=1, status="imported", config_hash="", created_at=AS_OF,
                                                       updated_at=AS_OF))
        return real(*args, **kwargs)

    monkeypatch.setattr(plan_module, "compute_features", with_a_rival)
    with pytest.raises(Conflict, match="planned by another process meanwhile"):
        plan(plan_project, engine, "test", WINDOW, as_of=AS_OF)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Decision.__table__)).scalar_one() == 0


def test_the_ledger_write_keeps_every_row_in_the_given_order_across_statement_groups(engine, monkeypatch):
    """SQLite inserts several rows per statement: a chunk that is not a multiple of the group
    size, and several chunks, still write every row once, in ``order``, with its own values."""
    import numpy as np

    from relmail.planning import decisions as dec

    monkeypatch.setattr(dec, "ROWS_PER_INSERT", 7)
    monkeypatch.setattr(dec, "CHUNK", 30)
    n = 75  # chunks of 30, 30, 15: each 4 groups of 7 and a rest of 2, or 2 groups and a rest of 1
    ids = np.array([f"C{i:03d}" for i in range(n)], dtype=object)
    batch = dec.Decisions(
        customer_id=ids, message_id=np.array([f"m{i % 3}" for i in range(n)], dtype=object),
        action=np.array(["send" if i % 2 else "suppress" for i in range(n)], dtype=object),
        score=np.arange(n) / 100, expected_value=np.arange(n) / 10,
        reasons=np.array([f"R{i}" for i in range(n)], dtype=object),
        features=np.array([f'{{"i":{i}}}' for i in range(n)], dtype=object))
    order = np.random.default_rng(3).permutation(n)
    with engine.begin() as conn:
        assert dec.write(conn, "r:1", batch, AS_OF, order=order) == n
    with engine.connect() as conn:
        rows = conn.execute(select(Decision.__table__).order_by(Decision.__table__.c.id)).mappings().all()
    assert [r["customer_id"] for r in rows] == ids[order].tolist()
    for r in rows:
        i = int(r["customer_id"][1:])
        assert (r["message_id"], r["action"], r["reasons"], r["features"]) == (f"m{i % 3}", "send" if i % 2 else "suppress",
                                                                            f"R{i}", {"i": i})
        assert r["score"] == pytest.approx(i / 100) and r["expected_value"] == pytest.approx(i / 10)
        assert r["run_id"] == "r:1" and r["created_at"] == AS_OF


def test_on_postgresql_the_bulk_statements_run_without_jit_and_features_without_parallel_workers(plan_project, engine, monkeypatch):
    """JIT costs about a second per audience or feature statement; PostgreSQL's parallel workers
    only add partial aggregates to feature statements that already run side by side."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL settings")
    import relmail.features.compute as compute
    import relmail.planning.run as plan_module

    seen: dict[str, list[tuple[str, str]]] = {"audience": [], "features": []}

    def settings_of(conn):
        return (conn.exec_driver_sql("SHOW jit").scalar(), conn.exec_driver_sql("SHOW max_parallel_workers_per_gather").scalar())

    real_audience, real_fetch = plan_module.audience, compute.fetch_columns

    def audience(conn, *args):
        seen["audience"].append(settings_of(conn))
        return real_audience(conn, *args)

    def fetch_columns(conn, stmt, *args):
        seen["features"].append(settings_of(conn))
        return real_fetch(conn, stmt, *args)

    monkeypatch.setattr(plan_module, "audience", audience)
    monkeypatch.setattr(compute, "fetch_columns", fetch_columns)
    plan(plan_project, engine, "test", WINDOW, as_of=AS_OF, dry_run=True, workers=1)
    assert seen["audience"] and {jit for jit, _ in seen["audience"]} == {"off"}
    assert seen["features"] and set(seen["features"]) == {("off", "0")}


def test_plan_holds_the_run_lock_itself_and_resolves_window_auto(plan_project, engine):
    """A Python caller gets the CLI's policy: a replan cannot replace decisions a sender is working on."""
    from relmail.store import locks

    plan(plan_project, engine, "test", WINDOW, as_of=AS_OF)
    with locks.acquire(engine, "test:2026-W48"):
        with pytest.raises(Conflict, match=r"run test:2026-W48 is being worked on by"):
            plan(plan_project, engine, "test", WINDOW, as_of=AS_OF, replan=True)
        assert len(plan(plan_project, engine, "test", WINDOW, as_of=AS_OF, dry_run=True).decisions) == 39  # a preview takes no lock
    # ``auto`` is the campaign's current week as of ``now``: Sunday 23:30 UTC is Monday in Amsterdam.
    result = plan(plan_project, engine, "test", "auto", now=datetime(2026, 11, 29, 23, 30, tzinfo=UTC), dry_run=True)
    assert result.window.key == "2026-W49" and result.as_of == datetime(2026, 11, 29, 23, 30, tzinfo=UTC)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(locks.L)).scalar_one() == 0
    with pytest.raises(ValueError, match="only a dry run"):
        plan(plan_project, engine, "test", WINDOW, customers=("C-OK",))


def test_a_planner_whose_lock_was_taken_over_while_it_computed_writes_nothing(plan_project, engine, monkeypatch):
    import relmail.planning.partition as plan_module
    from relmail.store import locks

    real = plan_module.compute_features

    def taken_over(*args, **kwargs):
        # This planner stalled past the lock timeout; another process took its lock over meanwhile.
        with engine.begin() as conn:
            conn.execute(locks.L.update().where(locks.L.c.key == "test:2026-W48").values(token="someone-else"))
        return real(*args, **kwargs)

    monkeypatch.setattr(plan_module, "compute_features", taken_over)
    with pytest.raises(Conflict, match="was taken over by another process"):
        plan(plan_project, engine, "test", WINDOW, as_of=AS_OF)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Run.__table__)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(Decision.__table__)).scalar_one() == 0
