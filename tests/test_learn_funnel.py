"""The funnel model: a rare outcome (a purchase) modelled through the outcome it happens after (a visit)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from relmail.learn import store
from relmail.learn.bases import predict_probability
from relmail.learn.dataset import FeatureSpec
from relmail.learn.estimators import Funnel, nested
from relmail.learn.metalearners import Proportional
from relmail.learn.model import load_model
from relmail.learn.outcomes import OutcomeTable
from relmail.learn.select import Upstream, choose
from relmail.learn.train import TrainOptions, train_message, upstream_first
from relmail.project import init_project


def experiment(n: int, seed: int, buy: float = 0.05, stray: float = 0.0):
    """The mail raises visits of customers with x > 0 (+25 points); a visitor buys with chance ``buy``.

    Customers with x < 0 visit more anyway (a response model ranks them
    first). Purchases are rare (about 1.5%) and their uplift is the visit
    uplift times ``buy``. ``stray``: the chance of a purchase without a visit.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = rng.integers(0, 2, n).astype(np.int8)
    visit = (rng.random(n) < 0.05 + 0.5 * (x < 0) + 0.25 * t * (x > 0)).astype(np.int8)
    conversion = ((visit == 1) & (rng.random(n) < buy) | (rng.random(n) < stray)).astype(np.int8)
    return x, t, visit, conversion


def as_table(x, t, visit, conversion) -> OutcomeTable:
    n = len(x)
    zeros = np.zeros(n, np.int8)
    return OutcomeTable(
        decision_id=np.arange(n),
        run_id=np.array(["r1"] * n, dtype=object),
        customer_id=np.array([f"C{i:07d}" for i in range(n)], dtype=object),
        message_id=np.array(["promo"] * n, dtype=object),
        treated=t,
        as_of=[datetime(2025, 3, 1, tzinfo=UTC)] * n,
        features=[{"x": float(a)} for a in x],
        outcomes={"open": zeros, "click": zeros, "visit": visit, "conversion": conversion, "unsubscribe": zeros,
                  "complaint": zeros, "irritation": zeros},
        revenue=np.where(conversion == 1, 80.0, 0.0),
    )


def _helped_first(uplift, x) -> float:
    """Share of the top half by predicted uplift that the e-mail really helps (x > 0)."""
    top = np.argsort(-uplift, kind="stable")[: len(x) // 2]
    return float((x[top] > 0).mean())


def test_funnel_uplift_is_the_upstream_uplift_times_the_chance_to_convert_and_ranks_the_helped_first():
    x, t, visit, conversion = experiment(6000, 1)
    spec = FeatureSpec.infer([{"x": float(a)} for a in x])
    X = spec.encode([{"x": float(a)} for a in x])
    funnel = Funnel(spec.layout_of(X, conversion), "logistic", 0, "t_learner").fit(X, conversion, t, upstream=visit)
    up = funnel.upstream_.predict_uplift(X)
    np.testing.assert_allclose(funnel.predict_uplift(X), up * predict_probability(funnel.ratio_, X))
    # The visit model sees many more cases than the rare purchases: it finds who the mail helps,
    # where a response-like model of the purchases ranks the customers who visit anyway first.
    direct = Proportional(spec.layout_of(X, conversion), "logistic", 0).fit(X, conversion, t).predict_uplift(X)
    assert _helped_first(funnel.predict_uplift(X), x) > 0.9
    assert _helped_first(funnel.predict_uplift(X), x) > _helped_first(direct, x) + 0.4


def test_an_outcome_nests_in_its_upstream_only_when_its_cases_happen_after_it():
    visit = np.array([1, 1, 1, 0, 0, 1] * 10)
    assert nested(np.array([1, 0, 1, 0, 0, 0] * 10), visit)
    # Purchases without a visit (a fifth of them): not a funnel.
    assert not nested(np.array([1, 0, 1, 1, 0, 1] * 10), visit)
    assert not nested(np.zeros(60, int), visit)
    assert upstream_first(("conversion", "visit", "open")) == ["visit", "open", "conversion"]
    assert upstream_first(("conversion", "open")) == ["conversion", "open"]


def test_selection_keeps_the_funnel_unless_a_direct_model_of_the_rare_outcome_clearly_beats_it():
    x, t, visit, conversion = experiment(6000, 2)
    spec = FeatureSpec.infer([{"x": float(a)} for a in x])
    X = spec.encode([{"x": float(a)} for a in x])
    ids = np.array([f"C{i}" for i in range(len(x))], dtype=object)
    up = Upstream("visit", "t_learner", "logistic", visit)
    got = choose(X, conversion, t, ids, spec.layout_of(X, conversion), kinds=("t_learner", "proportional"), bases=("logistic",),
                 repeats=1, upstream=up)
    assert {c["kind"] for c in got.candidates} == {"t_learner", "proportional", "funnel"}
    assert (got.kind, got.base) == ("funnel", "logistic")
    assert "funnel/logistic" in got.reason
    # Without an upstream there is no funnel candidate and the proportional model is the safe one.
    plain = choose(X, conversion, t, ids, spec.layout_of(X, conversion), kinds=("t_learner", "proportional"), bases=("logistic",),
                   repeats=1)
    assert {c["kind"] for c in plain.candidates} == {"t_learner", "proportional"}


@pytest.mark.slow
def test_train_models_a_rare_purchase_through_visits_and_the_saved_model_ranks_the_helped_first(tmp_path):
    project = init_project(tmp_path / "shop")
    table = as_table(*experiment(8000, 3))
    # Conversion is listed first: training still chooses the visit model before it.
    opts = TrainOptions(outcomes=("conversion", "visit"), kinds=("t_learner", "proportional", "funnel"), bases=("logistic",), cv_repeats=1)
    result = train_message(store.models_dir(project), "promo", table, opts)
    assert list(result["selection"]) == ["visit", "conversion"]
    assert result["selection"]["visit"]["chosen"] == "t_learner/logistic"
    assert result["selection"]["conversion"]["chosen"] == "funnel/logistic"
    model = load_model(project, "promo")
    assert model.meta["estimators"]["outcomes"]["conversion"]["uplift"]["kind"] == "funnel"
    pred = model.predict({"x": np.array([-2.0, 2.0])}, "conversion")
    assert pred["uplift"][1] > pred["uplift"][0]
    # Purchases that mostly happen without a visit: no funnel, the rare outcome is modelled directly.
    stray = as_table(*experiment(8000, 3, buy=0.01, stray=0.01))
    result = train_message(store.models_dir(project), "promo", stray, opts)
    assert "funnel" not in {c["kind"] for c in result["selection"]["conversion"]["candidates"]}
    # Left out of the estimators setting: no funnel either.
    without = TrainOptions(outcomes=("visit", "conversion"), kinds=("t_learner", "proportional"), bases=("logistic",), cv_repeats=1)
    result = train_message(store.models_dir(project), "promo", table, without)
    assert result["selection"]["conversion"]["chosen"] != "funnel/logistic"
    assert "funnel" not in {c["kind"] for c in result["selection"]["conversion"]["candidates"]}
