"""The plan with a trained model: expected value, NEGATIVE_UPLIFT, NOT_WORTH_IT, and why from the ledger."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from click.testing import CliRunner
from tests.test_plan import insert_shop

from relmail.campaigns import parse_campaign
from relmail.cli import cli
from relmail.features import FeatureFrame
from relmail.learn import load_model, models_dir
from relmail.learn.outcomes import OutcomeTable
from relmail.learn.train import TrainOptions, train_message
from relmail.planning.run import plan
from relmail.planning.why import explain, format_explanations
from relmail.rules import RULES, rules_for
from relmail.score.outputs import is_model_output

AS_OF = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
WINDOW = "2026-W48"
DAY = timedelta(days=1)
FAST = TrainOptions(outcomes=("conversion",), kinds=("t_learner",), bases=("logistic",), test_share=0.2)

CAMPAIGN = """\
policy:
  min_relevance: 0
  holdout_share: 0
  topic_frequency_cap: {7d: 5}
{extra}
messages:
  - id: promo
    template: ebike_launch
    topic: promotions
    segments: [everyone]
    products: [EB-200]
    offer: promotion
    value: 100
"""

#: customer -> days since their last purchase (the planted effect is on recency).
BUYERS = {"C-RECENT": 20, "C-RECENT2": 35, "C-LAPSED": 300, "C-LAPSED2": 340}


def planted_table(n: int = 3000, seed: int = 0) -> OutcomeTable:
    """The mail helps recent buyers (+20 points) and puts lapsed ones off (−15 points); few unsubscribe."""
    rng = np.random.default_rng(seed)
    recency = rng.uniform(1, 400, n).round(0)
    sends = rng.integers(0, 4, n)
    t = rng.integers(0, 2, n).astype(np.int8)
    p = 0.25 + t * np.where(recency < 120, 0.2, -0.15)
    y = (rng.random(n) < p).astype(np.int8)
    irritation = (t == 1) & (rng.random(n) < 0.004)
    zeros = np.zeros(n, np.int8)
    # Logged as the plan logs: zeros left out.
    features = [{"recency_days": float(r), **({"sends_90": int(s)} if s else {}), "topic": "promotions"} for r, s in zip(recency, sends)]
    return OutcomeTable(
        decision_id=np.arange(n),
        run_id=np.array(["r1"] * n, dtype=object),
        customer_id=np.array([f"T{i:07d}" for i in range(n)], dtype=object),
        message_id=np.array(["promo"] * n, dtype=object),
        treated=t,
        as_of=[datetime(2026, 9, 1, tzinfo=UTC)] * n,
        features=features,
        outcomes={"open": y, "click": y, "visit": y, "conversion": y, "unsubscribe": irritation.astype(np.int8),
                  "complaint": zeros, "irritation": irritation.astype(np.int8)},
        revenue=np.where(y == 1, 80.0, 0.0),
    )


def build_shop(engine) -> None:
    customers, prefs, events = [], [], []
    for cid, days in BUYERS.items():
        customers.append({"id": cid, "email": f"{cid.lower()}@example.org", "first_name": "A", "last_name": None, "locale": "en_GB",
                          "timezone": "Europe/Amsterdam", "created_at": AS_OF - 400 * DAY, "attributes": {}})
        prefs.append({"customer_id": cid, "topic": "promotions", "opted_in": True, "max_per_week": None,
                      "updated_at": AS_OF - 300 * DAY, "source": "import"})
        events.append({"event_id": None, "customer_id": cid, "type": "purchase", "occurred_at": AS_OF - days * DAY,
                       "product_id": "EB-100", "feature": None, "value": 1799.0, "message_id": None, "run_id": None, "topic": None})
    insert_shop(engine, customers, prefs, events)


def write_campaign(project, extra: str = "") -> None:
    (project.campaigns_dir / "test.yml").write_text(CAMPAIGN.replace("{extra}", extra), encoding="utf-8")


@pytest.fixture
def plan_project(project, engine):
    write_campaign(project)
    build_shop(engine)
    return project


def train(project) -> None:
    train_message(models_dir(project), "promo", planted_table(), FAST)


def by_customer(result) -> dict[str, dict]:
    return {r["customer_id"]: r for r in result.decisions.records()}


@pytest.mark.slow
def test_negative_uplift_is_suppressed_and_the_model_gets_what_the_ledger_logs(plan_project, engine):
    train(plan_project)
    result = plan(plan_project, engine, "test", WINDOW, as_of=AS_OF)
    got = by_customer(result)
    for cid in ("C-RECENT", "C-RECENT2"):
        assert got[cid]["action"] == "send" and got[cid]["reasons"] == []
        assert got[cid]["features"]["model_uplift"] > 0.05
    for cid in ("C-LAPSED", "C-LAPSED2"):
        assert got[cid]["action"] == "suppress" and got[cid]["reasons"] == ["NEGATIVE_UPLIFT"]
        assert got[cid]["features"]["model_uplift"] < -0.05
    assert result.summary()["models"] == {"promo": {"version": 1, "outcome": "conversion", "missing_features": [],
                                                    "uplift_unused": None}}

    model = load_model(plan_project, "promo")
    for r in got.values():
        f = r["features"]
        # Expected value = P(conversion) x value - P(irritation) x CLV, and it is what arbitration used.
        # (the logged probabilities are rounded to 4 decimals, so allow for that times the cost)
        expected = f["model_p_positive"] * 100 - f["model_p_irritation"] * f["irritation_cost"]
        assert f["expected_value"] == pytest.approx(expected, abs=1e-4 * (100 + f["irritation_cost"]))
        assert r["expected_value"] == pytest.approx(f["expected_value"], abs=1e-3)
        assert f["irritation_cost"] > 100  # the clv feature of a customer who spent 1799
        # Predicting from the logged features (as training reads them) gives the logged predictions.
        again = model.predict([f])
        assert again["uplift"][0] == pytest.approx(f["model_uplift"], abs=1e-4)
        assert again["p_positive_sent"][0] == pytest.approx(f["model_p_positive"], abs=1e-4)
        assert f["model_version"] == 1 and f["model_outcome"] == "conversion"
        assert "u.recency_days" in f


@pytest.mark.slow
def test_a_huge_irritation_cost_makes_every_send_not_worth_it(plan_project, engine):
    train(plan_project)
    write_campaign(plan_project, "  irritation_cost: 1000000")
    got = by_customer(plan(plan_project, engine, "test", WINDOW, as_of=AS_OF, dry_run=True))
    assert got["C-RECENT"]["reasons"] == ["NOT_WORTH_IT"] and got["C-RECENT"]["action"] == "suppress"
    assert got["C-LAPSED"]["reasons"] == ["NEGATIVE_UPLIFT", "NOT_WORTH_IT"]
    assert got["C-RECENT"]["features"]["irritation_cost"] == 1000000
    assert got["C-RECENT"]["features"]["message_value"] == 100
    # A policy can switch the model rules off; the model's expected value still ranks.
    write_campaign(plan_project, "  irritation_cost: 1000000\n  rules: {NOT_WORTH_IT: false, NEGATIVE_UPLIFT: false}")
    got = by_customer(plan(plan_project, engine, "test", WINDOW, as_of=AS_OF, dry_run=True))
    assert all(r["action"] == "send" for r in got.values())
    assert got["C-RECENT"]["expected_value"] < 0


@pytest.mark.slow
def test_without_a_model_or_with_model_off_the_plan_is_unchanged(plan_project, engine):
    before = plan(plan_project, engine, "test", WINDOW, as_of=AS_OF, dry_run=True)
    assert "models" not in before.summary()
    assert not any("model_uplift" in r["features"] for r in before.decisions.records())
    train(plan_project)
    write_campaign(plan_project, "  model: 'off'")
    off = plan(plan_project, engine, "test", WINDOW, as_of=AS_OF, dry_run=True)
    assert list(off.decisions.records()) == list(before.decisions.records())
    write_campaign(plan_project)
    on = plan(plan_project, engine, "test", WINDOW, as_of=AS_OF, dry_run=True)
    assert list(on.decisions.records()) != list(before.decisions.records())


@pytest.mark.slow
def test_model_weight_blends_p_positive_into_the_relevance_score(plan_project, engine):
    train(plan_project)
    base = by_customer(plan(plan_project, engine, "test", WINDOW, as_of=AS_OF, dry_run=True))
    (plan_project.campaigns_dir / "test.yml").write_text(CAMPAIGN.replace("{extra}", "") + "scoring: {model_weight: 1}\n", encoding="utf-8")
    full = by_customer(plan(plan_project, engine, "test", WINDOW, as_of=AS_OF, dry_run=True))
    for cid, r in full.items():
        assert r["score"] == pytest.approx(r["features"]["model_p_positive"], abs=1e-4)
        assert r["features"]["c.model"] == pytest.approx(r["score"], abs=1e-4)
        assert base[cid]["score"] != pytest.approx(r["score"], abs=1e-3)


@pytest.mark.slow
def test_why_shows_the_model_from_the_ledger(plan_project, engine):
    train(plan_project)
    plan(plan_project, engine, "test", WINDOW, as_of=AS_OF)
    facts, exps = explain(engine, "C-LAPSED")
    text = format_explanations(facts, exps)
    print(text)
    lines = text.splitlines()
    assert lines[2].startswith("promo: SUPPRESS  score ")
    assert lines[4].startswith("  model v1: P(conversion | sent) 0.")
    assert ", uplift -0." in lines[4] and "P(unsubscribe or complaint) 0." in lines[4]
    # Its recency lies on the flat, harmed side of the planted step, like the
    # training median it is compared with: the feature is named, its sign is not fixed.
    assert lines[5].startswith("  uplift from: recency_days=300 ")
    assert lines[6].startswith("  NEGATIVE_UPLIFT: model v1 predicts this e-mail lowers the chance of conversion by ")
    assert lines[6].endswith("): better not to send")

    out = CliRunner().invoke(cli, ["--project", str(plan_project.root), "why", "C-RECENT", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)["decisions"][0]
    assert data["model"]["version"] == 1 and data["model"]["uplift"] > 0
    assert data["model"]["contributions"][0]["feature"] == "recency_days" and data["model"]["contributions"][0]["value"] == 20


def even_table(rate_sent: float, rate_held: float, n: int = 3000) -> OutcomeTable:
    """Half sent, half held out, with exactly these outcome rates whatever the customer: one lift for everyone."""
    table = planted_table(n)
    rng = np.random.default_rng(5)
    t = np.zeros(n, np.int8)
    t[rng.permutation(n)[: n // 2]] = 1
    y = np.zeros(n, np.int8)
    for group, rate in ((t == 1, rate_sent), (t == 0, rate_held)):
        rows = np.flatnonzero(group)
        y[rng.choice(rows, int(round(rate * len(rows))), replace=False)] = 1
    table.treated[:] = t
    for name in ("open", "click", "visit", "conversion"):
        table.outcomes[name] = y
    table.revenue = np.where(y == 1, 80.0, 0.0)
    return table


PROPORTIONAL = TrainOptions(outcomes=("conversion",), kinds=("proportional",), bases=("logistic",), test_share=0.2, cv_repeats=1)


@pytest.mark.slow
def test_a_lift_that_cannot_be_told_from_zero_holds_no_one_back(plan_project, engine):
    # Sends converted a point less than hold-outs: chance at these numbers. The proportional model gives every
    # customer that sign, so on its uplift alone the plan would hold the whole audience back.
    trained = train_message(models_dir(plan_project), "promo", even_table(0.24, 0.25), PROPORTIONAL)
    assert "the plan holds no one back on this model's uplift (NEGATIVE_UPLIFT)" in trained["selection"]["conversion"]["reason"]
    model = load_model(plan_project, "promo")
    assert np.all(model.predict([{"recency_days": 20.0}, {"recency_days": 300.0}], "conversion")["uplift"] < 0)
    result = plan(plan_project, engine, "test", WINDOW, as_of=AS_OF, dry_run=True)
    got = by_customer(result)
    assert {r["action"] for r in got.values()} == {"send"}
    # Logged as unknown, as for a model without hold-outs; the contributions logged are P(conversion)'s.
    assert all(r["features"]["model_uplift"] is None and "model_p_positive" in r["features"] for r in got.values())
    assert not any(k.startswith("u.") for r in got.values() for k in r["features"])
    unused = result.summary()["models"]["promo"]["uplift_unused"]
    assert re.match(r"on its 2,\d{3} training rows the e-mail's conversion lift is -0\.0\d+ \(95% CI \[-0\.\d+, \+0\.\d+\]\), "
                    r"which cannot be told from zero, and its proportional/logistic uplift", unused), unused

    out = CliRunner().invoke(cli, ["--project", str(plan_project.root), "plan", "test", "--window", WINDOW,
                                   "--as-of", AS_OF.isoformat(), "--render-sample", "0"])
    assert out.exit_code == 0, out.output
    assert "  Its uplift holds no one back (NEGATIVE_UPLIFT): on its " in out.output
    facts, exps = explain(engine, "C-LAPSED")
    assert ", uplift not used (the training customers' lift cannot be told from zero), " in format_explanations(facts, exps)
    # The flag is the model's account of itself, never a feature the next model learns from.
    assert is_model_output("model_uplift_unused")


@pytest.mark.slow
def test_a_clearly_negative_lift_still_holds_the_message_back(plan_project, engine):
    trained = train_message(models_dir(plan_project), "promo", even_table(0.15, 0.30), PROPORTIONAL)
    assert "holds no one back" not in trained["selection"]["conversion"]["reason"]
    result = plan(plan_project, engine, "test", WINDOW, as_of=AS_OF, dry_run=True)
    assert {tuple(r["reasons"]) for r in by_customer(result).values()} == {("NEGATIVE_UPLIFT",)}
    assert result.summary()["models"]["promo"]["uplift_unused"] is None


# Rules on frames, no database -----------------------------------------------------------------

RULE_CAMPAIGN = parse_campaign("messages: [{id: m, template: t, topic: x, segment: s, offer: promotion, value: 10}]", "c.yml")
MSG = RULE_CAMPAIGN.messages[0]


def _frame(**cols) -> FeatureFrame:
    n = len(next(iter(cols.values())))
    return FeatureFrame(np.array([f"C{i}" for i in range(n)]), AS_OF, {f"m.{k}": np.asarray(v, dtype=float) for k, v in cols.items()})


def test_model_rules_fire_on_their_conditions_and_unknown_uplift_never_suppresses():
    f = _frame(model_uplift=[-0.01, 0.0, 0.02, np.nan], expected_value=[1.0, 0.0, -2.0, np.nan])
    assert RULES["NEGATIVE_UPLIFT"].evaluate(f, MSG, MSG.policy).mask.tolist() == [True, False, False, False]
    assert RULES["NOT_WORTH_IT"].evaluate(f, MSG, MSG.policy).mask.tolist() == [False, True, True, False]
    # Without model columns in the frame the rules do not apply at all.
    codes = {r.code for r in rules_for(MSG, FeatureFrame(np.array(["C0"]), AS_OF, {}))}
    assert codes.isdisjoint({"NEGATIVE_UPLIFT", "NOT_WORTH_IT"})
    assert {"NEGATIVE_UPLIFT", "NOT_WORTH_IT"} <= {r.code for r in rules_for(MSG, f)}


def test_model_rule_sentences_come_from_logged_values():
    assert RULES["NOT_WORTH_IT"].explain({
        "expected_value": -3.2, "model_p_positive": 0.05, "message_value": 40, "model_p_irritation": 0.0104,
        "irritation_cost": 500, "model_outcome": "conversion"}) == (
        "expected value -3.20 ≤ 0: P(conversion) 5.0% × value 40 = 2.00, "
        "less P(unsubscribe or complaint) 1.0% × cost of losing the customer 500.00 = 5.20")
    # A small chance of losing the customer is what tips a low-value message: it is shown, not rounded to 0.0%.
    assert RULES["NOT_WORTH_IT"].explain({
        "expected_value": -0.0262, "model_p_positive": 0.051, "message_value": 1, "model_p_irritation": 0.00044,
        "irritation_cost": 175.37, "model_outcome": None}) == (
        "expected value -0.03 ≤ 0: P(a positive outcome) 5.1% × value 1 = 0.05, "
        "less P(unsubscribe or complaint) 0.044% × cost of losing the customer 175.37 = 0.08")
    assert RULES["NEGATIVE_UPLIFT"].explain({"model_uplift": -0.031, "model_version": 2, "model_outcome": "click"}) == (
        "model v2 predicts this e-mail lowers the chance of click by 3.1 points (uplift -0.0310): better not to send")


@pytest.mark.slow
def test_the_plan_command_names_the_model_it_scored_with(plan_project, engine):
    train(plan_project)
    out = CliRunner().invoke(cli, ["--project", str(plan_project.root), "plan", "test", "--window", WINDOW,
                                   "--as-of", AS_OF.isoformat(), "--dry-run", "--render-sample", "0"])
    assert out.exit_code == 0, out.output
    assert "Scored promo with model 1 (outcome conversion)." in out.output


@pytest.mark.slow
def test_a_pooled_model_decides_the_plan_from_its_own_and_the_other_messages_sends(plan_project, engine):
    own = planted_table(1500, 0)
    other = planted_table(4000, 1)
    other = other.subset(other.treated == 1)
    other.message_id[:] = "other"
    other.customer_id[:] = [f"S{i:07d}" for i in range(len(other))]
    pooled = TrainOptions(outcomes=("conversion",), kinds=("pooled",), bases=("logistic",), test_share=0.2, cv_repeats=1)
    result = train_message(models_dir(plan_project), "promo", own, pooled, siblings=other)
    assert result["selection"]["conversion"]["chosen"] == "pooled/logistic" and result["sibling_messages"] == ["other"]
    got = by_customer(plan(plan_project, engine, "test", WINDOW, as_of=AS_OF))
    # The same planted effect as the other models find: recent buyers helped, lapsed ones put off.
    for cid in ("C-RECENT", "C-RECENT2"):
        assert got[cid]["action"] == "send" and got[cid]["features"]["model_uplift"] > 0.05
    for cid in ("C-LAPSED", "C-LAPSED2"):
        assert got[cid]["reasons"] == ["NEGATIVE_UPLIFT"] and got[cid]["features"]["model_uplift"] < -0.05
    model = load_model(plan_project, "promo")
    for r in got.values():
        assert model.predict([r["features"]])["uplift"][0] == pytest.approx(r["features"]["model_uplift"], abs=1e-4)


@pytest.mark.slow
def test_a_model_trained_on_features_the_plan_lacks_is_a_plan_warning(plan_project, engine):
    # An imported experiment with the shop's own column names: the plan computes none of them.
    table = planted_table()
    rng = np.random.default_rng(3)
    table.features = [{"spend_last_year": float(rng.uniform(0, 500)), "store": str(rng.choice(["101", "207"])),
                       "recency_days": f["recency_days"]} for f in table.features]
    train_message(models_dir(plan_project), "promo", table, FAST)
    result = plan(plan_project, engine, "test", WINDOW, as_of=AS_OF, dry_run=True)
    warned = [w for w in result.warnings if w.rule == "MODEL_FEATURES"]
    assert len(warned) == 1 and warned[0].message_id == "promo"
    assert "lacks 2 of the 3 features" in warned[0].text and "spend_last_year, store" in warned[0].text
    # A model the plan can feed gets none.
    train(plan_project)
    assert not [w for w in plan(plan_project, engine, "test", WINDOW, as_of=AS_OF, dry_run=True).warnings if w.rule.startswith("MODEL_")]


def test_messages_scored_on_different_outcomes_are_a_plan_warning():
    from types import SimpleNamespace

    from relmail.planning.model_warning import model_warnings

    summaries = [SimpleNamespace(message_id="sale", audience=10), SimpleNamespace(message_id="new", audience=10),
                 SimpleNamespace(message_id="last", audience=10)]
    models = {"sale": {"version": 1, "outcome": "visit", "missing_features": []},
              "new": {"version": 1, "outcome": "conversion", "missing_features": []},
              "last": {"version": 1, "outcome": "conversion", "missing_features": []}}
    warned = model_warnings(models, {"sale": 3, "new": 3, "last": 3}, summaries)
    assert [(w.message_id, w.rule) for w in warned] == [("sale", "MODEL_OUTCOMES")]
    assert "P(visit)" in warned[0].text and "P(conversion)" in warned[0].text
    models["sale"]["outcome"] = "conversion"
    assert model_warnings(models, {"sale": 3, "new": 3, "last": 3}, summaries) == []


@pytest.mark.slow
def test_a_preview_for_a_customer_the_store_lacks_is_one_line_with_a_model(plan_project, engine):
    # The preview scores a frame of no customers: the model must answer with no rows, not fail in scikit-learn.
    train(plan_project)
    out = CliRunner().invoke(cli, ["--project", str(plan_project.root), "why", "C-NOBODY", "--campaign", "test",
                                   "--window", WINDOW])
    assert out.exit_code == 8 and isinstance(out.exception, SystemExit), out.output
    assert out.output.strip().splitlines() == ["Error: customer 'C-NOBODY' is in no audience of campaign 'test' for window 2026-W48: "
                                                 "no customer 'C-NOBODY' in the store (never imported, or erased)"]
    assert load_model(plan_project, "promo").predict({"recency_days": np.array([])})["uplift"].shape == (0,)
