"""The DR-learner: a regression of the doubly robust pseudo-outcome on the features."""

from __future__ import annotations

import numpy as np
import pytest

from relmail.learn import store
from relmail.learn.estimators import DRLearner, Layout
from relmail.learn.model import load_model
from relmail.learn.train import TrainOptions, train
from relmail.project import init_project
from test_learn_pooled import table


def experiment(n: int, seed: int):
    """The e-mail helps customers with x0 > 0 (+20 points), does nothing for the rest; x1 only moves the baseline."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    t = rng.integers(0, 2, n).astype(np.int8)
    base = 0.1 + 0.1 * (X[:, 1] > 0)
    y = (rng.random(n) < base + 0.2 * t * (X[:, 0] > 0)).astype(np.int8)
    return X, t, y


@pytest.mark.parametrize("base", ["logistic", "hgb"])
def test_dr_learner_ranks_the_helped_first_and_its_uplift_averages_the_lift(base):
    X, t, y = experiment(12000, 1)
    est = DRLearner(Layout.of(X, 2, 0, y), base).fit(X, y, t)
    fresh = np.random.default_rng(5).normal(size=(6000, 2))
    uplift = est.predict_uplift(fresh)
    top = np.argsort(-uplift, kind="stable")[:3000]
    # The baseline feature x1 does not pull customers up the ranking: the effect does.
    assert (fresh[top, 0] > 0).mean() > 0.9
    assert uplift.mean() == pytest.approx(0.1, abs=0.03)


def test_dr_learner_needs_sends_and_hold_outs():
    X, _, y = experiment(200, 2)
    with pytest.raises(ValueError, match="both sends and hold-outs"):
        DRLearner(Layout(2, 0)).fit(X, y, np.ones(200))


@pytest.mark.parametrize("base", ["logistic", "hgb"])
def test_train_saves_a_dr_learner_that_predicts_the_same_after_loading(tmp_path, base):
    project = init_project(tmp_path / "shop")
    X, t, y = experiment(4000, 3)
    rows = [("r1", f"A{i}", "a", int(ti), float(xi), int(yi)) for i, (xi, ti, yi) in enumerate(zip(X[:, 0], t, y))]
    opts = TrainOptions(outcomes=("conversion",), kinds=("dr_learner",), bases=(base,), test_share=0.3, cv_repeats=1)
    (result,) = train(None, store.models_dir(project), ["a"], opts, table=table(rows))
    assert result["selection"]["conversion"]["chosen"] == f"dr_learner/{base}"
    x = {"x": np.array([-2.0, 2.0])}
    first = load_model(project, "a").predict(x, "conversion")["uplift"]
    np.testing.assert_array_equal(first, load_model(project, "a").predict(x, "conversion")["uplift"])
    assert first[1] > first[0]
