"""Estimators, metrics and model files, on arrays (no database)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from relmail.errors import ModelError
from relmail.learn import metrics, store
from relmail.learn.dataset import FeatureSpec, split_mask
from relmail.learn.incrementality import newcombe, wilson
from relmail.learn.interaction import Interaction
from relmail.learn.metalearners import Proportional, TLearner, TransformedOutcome, XLearner
from relmail.learn.model import load_model
from relmail.learn.outcomes import OutcomeTable
from relmail.learn.train import TrainOptions, train_message
from relmail.project import init_project

FAST = TrainOptions(outcomes=("conversion",), kinds=("t_learner", "x_learner"), bases=("logistic",), test_share=0.3)


def planted(n=3000, seed=0):
    """The mail helps only customers with x > 0 (+25 points); segment 'a' buys more anyway."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    seg = rng.choice(["a", "b", "c"], n)
    t = rng.integers(0, 2, n).astype(np.int8)
    p = 0.1 + 0.1 * (seg == "a") + 0.25 * t * (x > 0)
    y = (rng.random(n) < p).astype(np.int8)
    return x, seg, t, y


def planted_table(n=3000, seed=0) -> OutcomeTable:
    x, seg, t, y = planted(n, seed)
    zeros = np.zeros(n, np.int8)
    irritation = (np.random.default_rng(seed + 1).random(n) < 0.05).astype(np.int8)
    return OutcomeTable(
        decision_id=np.arange(n),
        run_id=np.array(["r1"] * n, dtype=object),
        customer_id=np.array([f"C{i:07d}" for i in range(n)], dtype=object),
        message_id=np.array(["promo"] * n, dtype=object),
        treated=t,
        as_of=[datetime(2025, 3, 1, tzinfo=UTC)] * n,
        features=[{"x": float(a), "segment": str(b), "tags": ["ignored"]} for a, b in zip(x, seg)],
        outcomes={"open": y, "click": y, "visit": y, "conversion": y, "unsubscribe": irritation, "complaint": zeros, "irritation": irritation},
        revenue=np.where(y == 1, 80.0, 0.0),
    )


@pytest.mark.parametrize("cls", [TLearner, XLearner, TransformedOutcome, Interaction])
def test_uplift_estimators_rank_the_helped_customers_first(cls):
    x, seg, t, y = planted()
    spec = FeatureSpec.infer([{"x": a, "segment": b} for a, b in zip(x, seg)])
    X = spec.encode([{"x": a, "segment": b} for a, b in zip(x, seg)])
    est = cls(spec.layout, "logistic").fit(X, y, t)
    up = est.predict_uplift(X)
    top = np.argsort(-up)[: len(up) // 2]
    # Half the customers have x > 0; nearly all of the top half must be them.
    assert (x[top] > 0).mean() > 0.9
    # The segment that buys more anyway is not mistaken for a helped one.
    assert abs(up[seg == "a"].mean() - up[seg == "b"].mean()) < 0.08


def test_keep_at_random_ranking_keeps_the_volume_share_and_perfect_ranking_more():
    x, seg, t, y = planted(20000, 3)
    rnd = np.mean([metrics.keep_at(np.random.default_rng(s).random(len(y)), y, t, 0.3, s) for s in range(10)])
    assert rnd == pytest.approx(0.3, abs=0.05)
    assert metrics.keep_at(x, y, t, 0.5) > 0.9
    assert metrics.qini_coefficient(x, y, t) > metrics.qini_coefficient(-x, y, t)
    # A constant score ranks like random (seeded tie-break), not in input order.
    assert metrics.keep_at(np.zeros(len(y)), y, t, 0.5) == pytest.approx(0.5, abs=0.08)


def test_ipw_value_recovers_the_arm_rate_on_randomized_data():
    rng = np.random.default_rng(0)
    arm = rng.choice(["a", "b", "none"], 30000)
    y = (rng.random(30000) < np.where(arm == "a", 0.3, 0.1)).astype(float)
    assert metrics.ipw_value(y, arm, np.array(["a"] * 30000), 1 / 3) == pytest.approx(0.3, abs=0.015)
    assert metrics.ipw_value_stochastic(y, arm, {"a": 0.5, "none": 0.5}, 1 / 3) == pytest.approx(0.2, abs=0.015)


def test_calibration_table_and_auc():
    rng = np.random.default_rng(1)
    p = rng.random(5000)
    y = (rng.random(5000) < p).astype(int)
    assert metrics.calibration_error(p, y) < 0.03
    assert metrics.calibration_error(np.clip(p + 0.3, 0, 1), y) > 0.2
    assert metrics.auc(p, y) > 0.7
    assert np.isnan(metrics.auc(p, np.ones(5000)))


def test_newcombe_interval_contains_the_difference_and_excludes_zero_for_a_clear_lift():
    d, lo, hi = newcombe(150, 1000, 100, 1000)
    assert d == pytest.approx(0.05) and lo < d < hi
    assert lo > 0
    d, lo, hi = newcombe(11, 100, 10, 100)
    assert lo < 0 < hi
    assert wilson(0, 50)[0] == 0.0 and 0 < wilson(0, 50)[1] < 0.1


def test_split_is_by_customer_deterministic_and_near_the_share():
    ids = [f"C{i}" for i in range(10000)]
    a = split_mask(ids, 5, 0.5)
    assert (a == split_mask(ids, 5, 0.5)).all()
    assert 0.47 < a.mean() < 0.53
    assert (a != split_mask(ids, 6, 0.5)).any()


def test_feature_spec_types_unknown_categories_and_missing_values():
    spec = FeatureSpec.infer([{"n": 1, "c": "x", "flag": True, "const": 3}, {"n": 2.5, "c": "y", "flag": False, "const": 3}])
    assert spec.numeric == ["flag", "n"] and list(spec.categorical) == ["c"]
    X = spec.encode([{"n": None, "c": "never-seen"}])
    assert np.isnan(X[0, 1]) and X[0, 2] == -1
    cols = spec.encode_columns({"n": np.array([1.0, 2.0]), "c": np.array(["y", "x"])})
    assert cols[:, 2].tolist() == [1.0, 0.0]


@pytest.fixture
def model_project(tmp_path):
    return init_project(tmp_path / "shop")


@pytest.mark.slow
def test_trained_model_round_trips_and_serves_the_plan_api(model_project):
    root = store.models_dir(model_project)
    assert load_model(model_project, "promo") is None
    result = train_message(root, "promo", planted_table(), FAST)
    assert result["version"] == 1
    sel = result["selection"]["conversion"]
    assert sel["chosen"] in ("t_learner/logistic", "x_learner/logistic")
    assert "highest cross-validated qini" in sel["reason"]
    model = load_model(model_project, "promo")
    meta = model.meta
    assert meta["training"]["date_from"].startswith("2025-03-01") and meta["training"]["test_share"] == 0.3
    pred = model.predict({"x": np.array([-2.0, 2.0]), "segment": np.array(["b", "b"])})
    assert set(pred) == {"p_positive_sent", "uplift", "p_irritation"}
    assert pred["uplift"][1] - pred["uplift"][0] > 0.15
    assert 0.0 < pred["p_irritation"][0] < 0.15
    contrib = model.contributions({"x": np.array([2.0]), "segment": np.array(["b"])})
    j = contrib["columns"].index("x")
    assert contrib["values"][0, j] == max(contrib["values"][0], key=abs) and contrib["values"][0, j] > 0.05
    assert model.explain({"x": 2.0, "segment": "b"})[0]["feature"] == "x"
    assert model.value_per_conversion == pytest.approx(80.0)
    # A second training is a new version; the newest is what load_model gives.
    train_message(root, "promo", planted_table(seed=1), FAST)
    assert load_model(model_project, "promo").version == 2 and load_model(model_project, "promo", version=1).version == 1


@pytest.mark.slow
def test_a_changed_model_file_is_refused(model_project):
    root = store.models_dir(model_project)
    train_message(root, "promo", planted_table(), FAST)
    path = root / "promo" / "v0001.skops"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum does not match"):
        load_model(model_project, "promo")


@pytest.mark.slow
def test_a_model_file_with_an_untrusted_type_is_refused_even_with_a_matching_checksum(model_project):
    import json
    import os

    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    root = store.models_dir(model_project)
    train_message(root, "promo", planted_table(), FAST)
    path = root / "promo" / "v0001.skops"
    sio.dump({"outcomes": {}, "irritation": FunctionTransformer(func=os.system)}, path)
    meta_path = root / "promo" / "v0001.json"
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = store._sha256(path)  # an attacker who also rewrites the sidecar
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="untrusted types posix.system"):
        load_model(model_project, "promo")


def test_model_names_cannot_escape_the_models_folder(model_project):
    with pytest.raises(ModelError, match="not a valid model name"):
        load_model(model_project, "../etc")


def test_proportional_model_ranks_like_the_response_model_and_averages_to_the_lift():
    from relmail.learn.metalearners import Proportional

    x, seg, t, y = planted(4000, 2)
    rows = [{"x": a, "segment": b} for a, b in zip(x, seg)]
    spec = FeatureSpec.infer(rows)
    X = spec.encode(rows)
    est = Proportional(spec.layout, "logistic").fit(X, y, t)
    up, resp = est.predict_uplift(X), est.predict_treated(X)
    assert (np.argsort(up) == np.argsort(resp)).all()
    observed = y[t == 1].mean() - y[t == 0].mean()
    assert up[t == 1].mean() == pytest.approx(observed, rel=0.1)


def test_a_previous_models_logged_predictions_are_never_training_features():
    from relmail.learn.dataset import FeatureSpec

    rows = [
        {"recency_days": float(i), "model_uplift": i / 10, "expected_value": i * 2.0, "u.recency_days": 0.1 * i,
         "p.opens_30": -0.1 * i, "model_version": f"v{i % 2}"}
        for i in range(6)
    ]
    spec = FeatureSpec.infer(rows)
    assert spec.numeric == ["recency_days"] and spec.categorical == {}


def _encoded(x, seg):
    rows = [{"x": a, "segment": b} for a, b in zip(x, seg)]
    spec = FeatureSpec.infer(rows)
    return spec, spec.encode(rows)


def test_linear_models_bend_on_many_valued_numbers_and_trees_and_flags_get_no_curve():
    from relmail.learn.bases import Layout, classifier

    rng = np.random.default_rng(11)
    n = 8000
    x = rng.uniform(-3, 3, n)
    flag = rng.integers(0, 2, n)
    t = rng.integers(0, 2, n).astype(np.int8)
    # The mail helps the customers at both ends of x: no straight line on x ranks them first.
    y = (rng.random(n) < 0.1 + 0.3 * t * (np.abs(x) > 1.5)).astype(np.int8)
    X = np.column_stack([x, flag]).astype(float)
    layout = Layout.of(X, 2, 0)
    assert layout.curved == (0,)  # the 0/1 flag has two values: nothing to bend
    assert Layout(2, 0).curved == ()  # a layout without data (an old model's) bends nothing
    rare = (np.arange(n) < 40).astype(np.int8)
    assert Layout.of(X, 2, 0, y).curved == (0,) and Layout.of(X, 2, 0, rare).curved == ()  # 40 events cannot pay for a curve
    for cls in (Interaction, TLearner):
        curved = cls(layout, "logistic").fit(X, y, t).predict_uplift(np.array([[-2.5, 0], [0.0, 0], [2.5, 0]]))
        assert curved[0] - curved[1] > 0.1 and curved[2] - curved[1] > 0.1
    straight = Interaction(Layout(2, 0), "logistic").fit(X, y, t).predict_uplift(np.array([[-2.5, 0], [0.0, 0], [2.5, 0]]))
    assert min(straight[0], straight[2]) - straight[1] < 0.05
    steps = {base: [name for name, *_ in classifier(layout, base)[0].transformers] for base in ("hgb", "logistic")}
    assert "curve" not in steps["hgb"] and "curve" in steps["logistic"]


@pytest.mark.slow
def test_interaction_model_learns_the_effect_not_the_baseline_and_round_trips(model_project):
    x, seg, t, y = planted(6000, 4)
    spec, X = _encoded(x, seg)
    est = Interaction(spec.layout, "logistic").fit(X, y, t)
    up = est.predict_uplift(X)
    # The planted effect is +25 points for x > 0 and none otherwise.
    assert up[x > 1].mean() == pytest.approx(0.25, abs=0.08)
    assert abs(up[x < -1].mean()) < 0.08
    # Its probabilities are calibrated to each group's observed rate.
    assert est.predict_sent(X, True)[t == 1].mean() == pytest.approx(y[t == 1].mean(), abs=0.01)
    assert est.predict_sent(X, False)[t == 0].mean() == pytest.approx(y[t == 0].mean(), abs=0.01)
    with pytest.raises(ValueError, match="logistic regression only"):
        Interaction(spec.layout, "hgb")
    # Saved and loaded through the model file like every other estimator.
    opts = TrainOptions(outcomes=("conversion",), kinds=("interaction",), bases=("logistic",), test_share=0.3, cv_repeats=1)
    result = train_message(store.models_dir(model_project), "promo", planted_table(), opts)
    assert result["selection"]["conversion"]["chosen"] == "interaction/logistic"
    model = load_model(model_project, "promo")
    pred = model.predict({"x": np.array([-2.0, 2.0]), "segment": np.array(["b", "b"])})
    assert pred["uplift"][1] - pred["uplift"][0] > 0.15


@pytest.mark.slow
def test_estimators_sharing_a_t_learners_group_models_predict_exactly_as_when_fitted_alone():
    x, seg, t, y = planted(3000, 5)
    spec, X = _encoded(x, seg)
    groups = TLearner(spec.layout, "logistic").fit(X, y, t)
    for cls in (XLearner, Proportional):
        alone = cls(spec.layout, "logistic").fit(X, y, t).predict_uplift(X)
        shared = cls(spec.layout, "logistic").fit(X, y, t, groups=groups).predict_uplift(X)
        assert np.allclose(alone, shared)


def test_candidates_skip_base_learners_an_estimator_does_not_run_on():
    from relmail.learn.select import candidate_names

    names = candidate_names(("t_learner", "interaction"), ("logistic", "hgb"))
    assert names == [("t_learner", "logistic"), ("t_learner", "hgb"), ("interaction", "logistic")]


@pytest.mark.slow
def test_selection_keeps_the_response_like_model_unless_another_clearly_beats_it():
    from relmail.learn.select import choose

    kinds = ("t_learner", "proportional")
    # A planted, varying effect: the T-learner's lead is far beyond the noise.
    x, seg, t, y = planted(4000, 6)
    spec, X = _encoded(x, seg)
    ids = np.array([f"C{i}" for i in range(len(y))], dtype=object)
    got = choose(X, y, t, ids, spec.layout, kinds=kinds, bases=("logistic",), repeats=2)
    assert (got.kind, got.base) == ("t_learner", "logistic")
    assert "mean of 2 repeated 2-fold splits" in got.reason and "exceeds one standard error" in got.reason
    # The same effect for everyone: the T-learner's lead on this draw is
    # noise, and the proportional model (ranking like the response model) is kept.
    rng = np.random.default_rng(9)
    y_flat = (rng.random(len(y)) < 0.15 + 0.1 * t).astype(np.int8)
    got = choose(X, y_flat, t, ids, spec.layout, kinds=kinds, bases=("logistic",), repeats=2)
    assert got.kind == "proportional" and got.reason.startswith("t_learner/logistic has the highest")
    assert "within one standard error" in got.reason and "ranks like the response model" in got.reason
    assert {c["kind"] for c in got.candidates} == {"t_learner", "proportional"}
    assert all(c["qini_spread"] is not None for c in got.candidates)
    # Held-out customers responding more than sent ones: the proportional model's order is the response
    # model's reversed, and the reason says so instead of "ranks like the response model".
    y_lower = (rng.random(len(y)) < 0.25 - 0.1 * t).astype(np.int8)
    got = choose(X, y_lower, t, ids, spec.layout, kinds=kinds, bases=("logistic",), repeats=2)
    assert got.kind == "proportional" and "within one standard error" in got.reason
    assert "ranks the likeliest customers last" in got.reason and "ranks like the response model" not in got.reason


@pytest.mark.slow
def test_uplift_calibration_shrinks_overconfident_predictions_and_the_model_applies_it(model_project):
    from relmail.learn.select import uplift_calibration

    x, _seg, t, y = planted(20000, 8)
    true = 0.25 * (x > 0)
    # Predictions twice as far apart as the truth: the slope comes out near 1/2.
    slope, intercept = uplift_calibration([2 * true - 0.1], y, t)
    assert slope == pytest.approx(0.5, abs=0.1)
    assert (intercept + slope * (2 * true - 0.1)).mean() == pytest.approx(true.mean(), abs=0.02)
    # Scores that carry no signal cannot flip the ranking: the slope stays positive.
    noise = np.random.default_rng(1).random(len(y))
    assert uplift_calibration([noise], y, t)[0] > 0
    # The trained model serves calibrated uplift: the sidecar's map applied to the raw estimator.
    train_message(store.models_dir(model_project), "promo", planted_table(), FAST)
    model = load_model(model_project, "promo")
    cal = model.meta["estimators"]["outcomes"]["conversion"]["uplift"]["calibration"]
    X = model.encode({"x": np.array([-2.0, 0.5, 2.0]), "segment": np.array(["b", "b", "b"])})
    raw = model.uplift["conversion"].predict_uplift(X)
    assert np.allclose(model.predict(X, "conversion")["uplift"], cal["intercept"] + cal["slope"] * raw)
    assert "Uplift is calibrated on the validation predictions" in model.meta["selection"]["conversion"]["reason"]


@pytest.mark.parametrize("base", ["logistic", "hgb"])
def test_a_feature_no_decision_logged_a_value_for_is_silent_and_changes_nothing(base):
    import warnings

    from relmail.learn.bases import Layout

    # A customer's frequency wish that no customer stated: an all-missing column.
    # scikit-learn's imputer used to warn once per fit (dozens of lines in a cron log).
    rng = np.random.default_rng(5)
    n = 2000
    x = rng.uniform(0, 1, n)
    t = rng.integers(0, 2, n).astype(np.int8)
    y = (rng.random(n) < 0.1 + 0.2 * t * x).astype(np.int8)
    with_empty = np.column_stack([x, np.full(n, np.nan)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = TLearner(Layout.of(with_empty, 2, 0, y), base).fit(with_empty, y, t).predict_uplift(with_empty[:50])
    alone = TLearner(Layout.of(x[:, None], 1, 0, y), base).fit(x[:, None], y, t).predict_uplift(x[:50, None])
    np.testing.assert_allclose(got, alone, atol=1e-6)


def _small_experiment(seed: int, n: int = 300):
    """A randomized experiment of ``n`` customers whose e-mail works for high ``x``; a good and a random score."""
    rng = np.random.default_rng(seed)
    x = rng.random(n)
    t = (rng.random(n) < 0.5).astype(float)
    y = (rng.random(n) < 0.05 + 0.15 * t * x).astype(float)
    good = [x + rng.normal(0, 0.3, n) for _ in range(3)]
    noise = [rng.normal(0, 1, n) for _ in range(3)]
    return good, noise, y, t


def test_a_fixed_normalizer_gives_the_samples_own_figure_on_the_sample_itself():
    good, _, y, t = _small_experiment(0)
    assert metrics.qini_coefficient(good[0], y, t, total=metrics.incremental_total(y, t, "qini")) == pytest.approx(
        metrics.qini_coefficient(good[0], y, t))
    assert metrics.keep_at(good[0], y, t, 0.5, total=metrics.incremental_total(y, t, "keep_at_50")) == pytest.approx(
        metrics.keep_at(good[0], y, t, 0.5))


def test_the_leads_standard_error_on_small_data_is_not_blown_up_by_resamples_without_lift():
    """Resamples of 300 customers whose own lift is near zero divided the lead by almost nothing (SEs up to 5.6)."""
    from relmail.learn.select import _lead

    ses = [_lead(good, noise, y, t, criterion, 0)[1]
           for seed in range(20) for good, noise, y, t in [_small_experiment(seed)] for criterion in ("qini", "keep_at_50")]
    assert max(ses) < 1.0 and float(np.median(ses)) < 0.3


@pytest.mark.parametrize("base", ["logistic", "hgb"])
def test_many_category_features_train_on_every_base_learner(base):
    # A shop's export: a few numbers and several coded columns (store, zip, channel,
    # category). One-hot, the matrix is mostly zeros; gradient boosting needs it dense.
    rng = np.random.default_rng(11)
    n = 1500
    rows = [
        {
            "recency": float(rng.integers(1, 400)),
            "store": str(rng.choice(["101", "102", "115", "207", "310"])),
            "zip": str(rng.choice(["01067", "10115", "20095", "50667", "80331", "70173"])),
            "channel": str(rng.choice(["web", "app", "instore"])),
            "category": str(rng.choice(["dresses", "shoes", "jeans", "bags", "knitwear"])),
        }
        for _ in range(n)
    ]
    spec = FeatureSpec.infer(rows)
    X = spec.encode(rows)
    t = rng.integers(0, 2, n).astype(np.int8)
    y = (rng.random(n) < 0.1 + 0.1 * t).astype(np.int8)
    up = TLearner(spec.layout_of(X, y), base).fit(X, y, t).predict_uplift(X)
    assert up.shape == (n,) and np.isfinite(up).all()


@pytest.mark.slow
def test_evaluate_says_when_the_test_part_shows_no_lift_its_figures_could_be_shares_of(model_project):
    from relmail.learn.evaluate import evaluate_model, unreliable_lifts

    root = store.models_dir(model_project)
    train_message(root, "promo", planted_table(), FAST)
    model = load_model(model_project, "promo")
    clear = evaluate_model(model, planted_table())
    low, high = clear["outcomes"]["conversion"]["lift_interval"]
    assert 0 < low < clear["outcomes"]["conversion"]["observed_lift"] < high
    assert unreliable_lifts([clear]) == []
    # The same customers where the e-mail changed nothing: keep@K divides by noise, and evaluate says so.
    flat = planted_table()
    rng = np.random.default_rng(9)
    y = (rng.random(len(flat)) < 0.15).astype(np.int8)
    flat.outcomes = {**flat.outcomes, "conversion": y}
    noise = evaluate_model(model, flat)
    notes = unreliable_lifts([noise])
    assert len(notes) == 1 and notes[0].startswith("promo/conversion: on these")
    assert "cannot be told from zero" in notes[0] and "size means little" in notes[0]
    assert ("loses outcomes" in notes[0]) == (noise["outcomes"]["conversion"]["observed_lift"] < 0)
    # Held-out customers clearly respond more: keep@K is a share of the size of a loss, and evaluate says so.
    hurt = planted_table()
    hurt.outcomes = {**hurt.outcomes, "conversion": (rng.random(len(flat)) < 0.3 - 0.2 * hurt.treated).astype(np.int8)}
    notes = unreliable_lifts([evaluate_model(model, hurt)])
    assert len(notes) == 1 and "as it is negative, mailing everyone loses outcomes: keep@K is a share of the size" in notes[0]
    assert "cannot be told from zero" not in notes[0]


@pytest.mark.slow
def test_a_fallback_reason_gives_the_chosen_models_own_figures_not_only_the_rejected_ones():
    from relmail.learn.select import choose

    x, seg, t, y = planted(4000, 6)
    spec, X = _encoded(x, seg)
    ids = np.array([f"C{i}" for i in range(len(y))], dtype=object)
    y_flat = (np.random.default_rng(9).random(len(y)) < 0.15 + 0.1 * t).astype(np.int8)
    got = choose(X, y_flat, t, ids, spec.layout, kinds=("t_learner", "proportional"), bases=("logistic",), repeats=2)
    assert got.kind == "proportional"
    rows = {c["kind"]: c for c in got.candidates}
    # "it keeps ..." first describes the T-learner, which was not chosen; the figures of the model that was follow.
    chosen = f"is chosen instead; it keeps {rows['proportional']['keep_at_30']:.3f} at 30% volume and {rows['proportional']['keep_at_50']:.3f} at 50%"
    assert chosen in got.reason
    assert f"it keeps {rows['t_learner']['keep_at_30']:.3f} of incremental outcomes at 30% volume" in got.reason


@pytest.mark.slow
def test_a_model_copied_to_another_folder_loads_the_payload_beside_its_sidecar(model_project, tmp_path):
    import shutil

    root = store.models_dir(model_project)
    train_message(root, "promo", planted_table(), FAST)
    features = {"x": np.array([-2.0, 2.0]), "segment": np.array(["b", "b"])}
    before = load_model(model_project, "promo").predict(features)
    # Copied into another project, under another message's name; the original project is gone.
    other = init_project(tmp_path / "other")
    shutil.copytree(root / "promo", store.models_dir(other) / "autumn-promo")
    shutil.rmtree(root / "promo")
    copied = load_model(other, "autumn-promo")
    assert copied.key == "autumn-promo" and copied.meta["trained_as"] == "promo"
    np.testing.assert_array_equal(copied.predict(features)["uplift"], before["uplift"])
    assert [m["key"] for m in store.list_models(store.models_dir(other))] == ["autumn-promo"]
    # A sidecar next to the payload of another version is refused with its field, not called tampered.
    folder = store.models_dir(other) / "autumn-promo"
    (folder / "v0001.skops").rename(folder / "v0002.skops")
    (folder / "v0001.json").rename(folder / "v0002.json")
    with pytest.raises(ModelError, match=r"v0002\.json: field 'file': names 'v0001\.skops'"):
        load_model(other, "autumn-promo")


@pytest.mark.slow
def test_the_reason_says_when_the_training_customers_show_no_lift_to_rank_by():
    from relmail.learn.select import choose

    x, seg, t, y = planted(4000, 6)
    spec, X = _encoded(x, seg)
    ids = np.array([f"C{i}" for i in range(len(y))], dtype=object)
    got = choose(X, y, t, ids, spec.layout, kinds=("t_learner", "proportional"), bases=("logistic",), repeats=1)
    assert "training rows the e-mail's lift is" not in got.reason
    # The e-mail changes nothing: whatever wins, its figures are shares of noise, and the reason says so.
    y_none = (np.random.default_rng(8).random(len(y)) < 0.15).astype(np.int8)
    got = choose(X, y_none, t, ids, spec.layout, kinds=("t_learner", "proportional"), bases=("logistic",), repeats=1)
    assert " On these 4,000 training rows the e-mail's lift is" in got.reason and "cannot be told from zero" in got.reason
    # It lowers the outcome: the keep figures are shares of the size of a loss.
    y_hurt = (np.random.default_rng(8).random(len(y)) < 0.3 - 0.15 * t).astype(np.int8)
    got = choose(X, y_hurt, t, ids, spec.layout, kinds=("t_learner", "proportional"), bases=("logistic",), repeats=1)
    assert "keep@K is a share of the size of that loss" in got.reason and "cannot be told from zero" not in got.reason


def test_keep_at_is_higher_for_the_better_ranking_also_when_mailing_everyone_loses_outcomes():
    """--criterion keep_at_* chose the worst model on such data: the figure was divided by the negative total."""
    from relmail.learn.select import _lead

    rng = np.random.default_rng(4)
    n = 4000
    helped = (rng.random(n) < 0.3).astype(float)  # the e-mail helps these; it hurts the others more
    t = (rng.random(n) < 0.5).astype(float)
    y = (rng.random(n) < 0.2 + np.where(helped == 1, 0.15, -0.12) * t).astype(float)
    assert metrics.incremental_total(y, t, "keep_at_50") < 0
    right, wrong = helped + rng.normal(0, 0.1, n), -helped + rng.normal(0, 0.1, n)
    for volume in (0.3, 0.5):
        assert metrics.keep_at(right, y, t, volume) > 0 > metrics.keep_at(wrong, y, t, volume)
    random_keep = np.mean([metrics.keep_at(rng.random(n), y, t, 0.3, s) for s in range(20)])
    assert random_keep == pytest.approx(-0.3, abs=0.1)
    lead, se = _lead([right], [wrong], y, t, "keep_at_50", 0)
    assert lead > 3 * se > 0
