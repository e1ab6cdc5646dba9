"""Estimators, metrics and model files, on arrays (no database)."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from relmail.errors import ModelError
from relmail.learn import metrics, store
from relmail.learn.dataset import FeatureSpec, split_mask
from relmail.learn.estimators import TLearner, TransformedOutcome, XLearner
from relmail.learn.incrementality import newcombe, wilson
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
        as_of=[datetime(2025, 3, 1, tzinfo=timezone.utc)] * n,
        features=[{"x": float(a), "segment": str(b), "tags": ["ignored"]} for a, b in zip(x, seg)],
        outcomes={"open": y, "click": y, "visit": y, "conversion": y, "unsubscribe": irritation, "complaint": zeros, "irritation": irritation},
        revenue=np.where(y == 1, 80.0, 0.0),
    )


@pytest.mark.parametrize("cls", [TLearner, XLearner, TransformedOutcome])
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
def shop(tmp_path):
    return init_project(tmp_path / "shop")


def test_trained_model_round_trips_and_serves_the_plan_api(shop):
    root = store.models_dir(shop)
    assert load_model(shop, "promo") is None
    result = train_message(root, "promo", planted_table(), FAST)
    assert result["version"] == 1
    sel = result["selection"]["conversion"]
    assert sel["chosen"] in ("t_learner/logistic", "x_learner/logistic")
    assert "highest cross-validated qini" in sel["reason"]
    model = load_model(shop, "promo")
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
    assert load_model(shop, "promo").version == 2 and load_model(shop, "promo", version=1).version == 1


def test_a_changed_model_file_is_refused(shop):
    root = store.models_dir(shop)
    train_message(root, "promo", planted_table(), FAST)
    path = root / "promo" / "v0001.skops"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum does not match"):
        load_model(shop, "promo")


def test_a_model_file_with_an_untrusted_type_is_refused_even_with_a_matching_checksum(shop):
    import json
    import os

    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    root = store.models_dir(shop)
    train_message(root, "promo", planted_table(), FAST)
    path = root / "promo" / "v0001.skops"
    sio.dump({"outcomes": {}, "irritation": FunctionTransformer(func=os.system)}, path)
    meta_path = root / "promo" / "v0001.json"
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = store._sha256(path)  # an attacker who also rewrites the sidecar
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="untrusted types posix.system"):
        load_model(shop, "promo")


def test_model_names_cannot_escape_the_models_folder(shop):
    with pytest.raises(ModelError, match="not a valid model name"):
        load_model(shop, "../etc")


def test_proportional_model_ranks_like_the_response_model_and_averages_to_the_lift():
    from relmail.learn.estimators import Proportional

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
