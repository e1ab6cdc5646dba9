"""The pairwise estimator: the pooled model whose effect terms also hold products of two features."""

from __future__ import annotations

import numpy as np

from relmail.learn import store
from relmail.learn.estimators import Layout, Pairwise, Pooled, _cross_pairs
from relmail.learn.model import load_model
from relmail.learn.select import candidate_names
from relmail.learn.train import TrainOptions, train
from relmail.project import init_project
from test_learn_pooled import table


def both_high(n: int, seed: int):
    """The e-mail helps only customers with x0 > 0 *and* x1 > 0 (+25 points); a sibling message does the same."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    t = rng.integers(0, 2, n).astype(np.int8)
    helped = (X[:, 0] > 0) & (X[:, 1] > 0)
    y = (rng.random(n) < 0.1 + 0.25 * t * helped).astype(np.int8)
    Xs = rng.normal(size=(n, 2))
    ys = (rng.random(n) < 0.1 + 0.25 * ((Xs[:, 0] > 0) & (Xs[:, 1] > 0))).astype(np.int8)
    return X, t, y, Xs, ys


def _helped_in_top_quarter(uplift, X) -> float:
    top = np.argsort(-uplift, kind="stable")[: len(X) // 4]
    return float(((X[top, 0] > 0) & (X[top, 1] > 0)).mean())


def test_products_come_from_pairs_of_different_features_only():
    X = np.random.default_rng(0).normal(size=(200, 3))
    X[:, 2] = np.arange(200) % 3  # a category code
    layout = Layout.of(X, 2, 1)
    est = Pairwise(layout).fit(X, (X[:, 0] > 0).astype(int), np.arange(200) % 2)
    left, right = _cross_pairs(est.prep_)
    # 2 scaled numbers, 3 one-hot codes, a 5-column spline for each number: 15 columns, 6 per number, 3 for the category.
    assert len(left) == (15 * 15 - 6 * 6 - 6 * 6 - 3 * 3) // 2
    assert est._products(est._basis(X)).shape == (200, len(left))


def test_pairwise_model_finds_an_effect_that_needs_two_features_at_once():
    pairwise, pooled = [], []
    for seed in range(3):
        X, t, y, Xs, ys = both_high(8000, seed)
        layout = Layout.of(X, 2, 0, y)
        fresh = np.random.default_rng(100 + seed).normal(size=(8000, 2))
        pairwise.append(_helped_in_top_quarter(Pairwise(layout).fit(X, y, t, siblings=(Xs, ys)).predict_uplift(fresh), fresh))
        pooled.append(_helped_in_top_quarter(Pooled(layout).fit(X, y, t, siblings=(Xs, ys)).predict_uplift(fresh), fresh))
    # A quarter of customers are helped; a sum of one curve per feature
    # cannot single out the corner where both are high, a product can.
    assert np.mean(pairwise) > np.mean(pooled) + 0.03


def test_pairwise_is_a_candidate_only_with_siblings_like_the_pooled_model():
    assert ("pairwise", "logistic") in candidate_names()
    assert ("pairwise", "hgb") not in candidate_names()


def test_train_saves_a_pairwise_model_that_predicts_the_same(tmp_path):
    project = init_project(tmp_path / "shop")
    X, t, y, Xs, ys = both_high(3000, 7)
    rows = [("r1", f"A{i}", "a", int(ti), float(xi), int(yi)) for i, (xi, ti, yi) in enumerate(zip(X[:, 0], t, y))]
    rows += [("r1", f"B{i}", "b", 1, float(xi), int(yi)) for i, (xi, yi) in enumerate(zip(Xs[:, 0], ys))]
    opts = TrainOptions(outcomes=("conversion",), kinds=("pairwise",), bases=("logistic",), test_share=0.3, cv_repeats=1)
    (result,) = train(None, store.models_dir(project), ["a"], opts, table=table(rows))
    assert result["selection"]["conversion"]["chosen"] == "pairwise/logistic"
    model = load_model(project, "a")
    x = {"x": np.array([-2.0, 0.5, 2.0])}
    before = model.predict(x, "conversion")["uplift"]
    again = load_model(project, "a").predict(x, "conversion")["uplift"]
    np.testing.assert_array_equal(before, again)
    assert before[2] > before[0]
