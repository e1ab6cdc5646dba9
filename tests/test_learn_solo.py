"""The solo model: one logistic regression on the features and the sent flag, fitted on sends and hold-outs."""

from __future__ import annotations

import numpy as np
import pytest
from tests.test_learn_models import planted_table

from relmail.learn import store
from relmail.learn.bases import Layout
from relmail.learn.dataset import FeatureSpec
from relmail.learn.interaction import Solo
from relmail.learn.metalearners import Proportional
from relmail.learn.model import load_model
from relmail.learn.train import TrainOptions, train_message
from relmail.project import init_project

SHIFT = 0.6


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def shifted(n: int, seed: int, sent_share: float = 0.5):
    """The mail adds :data:`SHIFT` to every customer's log-odds; the baseline rises with x and in segment 'a'.

    Returns the encoded rows, x, the segments, the sent flag, the outcome and each customer's true uplift.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    seg = rng.choice(["a", "b"], n)
    t = (rng.random(n) < sent_share).astype(np.int8)
    baseline = -3.0 + 0.5 * x + 0.7 * (seg == "a")
    y = (rng.random(n) < _sigmoid(baseline + SHIFT * t)).astype(np.int8)
    rows = [{"x": float(a), "segment": str(b)} for a, b in zip(x, seg)]
    spec = FeatureSpec.infer(rows)
    return spec, spec.encode(rows), x, seg, t, y, _sigmoid(baseline + SHIFT) - _sigmoid(baseline)


def test_solo_uplift_ranks_like_its_baseline_and_averages_to_the_observed_lift():
    spec, X, x, seg, t, y, _ = shifted(8000, 1)
    est = Solo(spec.layout, "logistic").fit(X, y, t)
    up = est.predict_uplift(X)
    base, sent = est.predict_sent(X, False), est.predict_sent(X, True)
    # One shift for everyone: while the chance with the mail is below one half, a larger baseline means a larger uplift.
    rare = sent < 0.5
    assert rare.mean() > 0.95
    order = np.argsort(base[rare])
    assert (np.diff(up[rare][order]) >= -1e-12).all()
    # The uplift is on the probability scale: its mean is the observed lift.
    assert up.mean() == pytest.approx(y[t == 1].mean() - y[t == 0].mean(), abs=0.015)
    # It learned the baseline from both groups: x and the segment both raise it.
    assert np.corrcoef(up, x)[0, 1] > 0.6 and up[seg == "a"].mean() > up[seg == "b"].mean()


def test_solo_learns_the_baseline_from_the_hold_outs_too():
    spec, X, x, _seg, t, y, _ = shifted(4000, 3, sent_share=0.25)
    # Hold-outs whose outcomes fall with x instead of rising: the send-only
    # response model (the proportional one) cannot see them, the solo model can.
    held = t == 0
    y_other = y.copy()
    y_other[held] = np.sort(y[held])[np.argsort(np.argsort(-x[held]))]
    for cls, moved in ((Solo, True), (Proportional, False)):
        before = cls(spec.layout, "logistic").fit(X, y, t).predict_uplift(X)
        after = cls(spec.layout, "logistic").fit(X, y_other, t).predict_uplift(X)
        assert bool(np.corrcoef(before, x)[0, 1] - np.corrcoef(after, x)[0, 1] > 0.5) == moved


def test_solo_sees_numbers_straight_and_runs_on_logistic_regression_only():
    spec, X, _x, _seg, t, y, _ = shifted(3000, 2)
    bent = Layout(spec.layout.n_numeric, spec.layout.n_categorical, (0,))
    est = Solo(bent, "logistic").fit(X, y, t)
    assert "curve" not in [name for name, *_ in est.prep_.transformers]
    with pytest.raises(ValueError, match="solo estimator runs on logistic regression only"):
        Solo(spec.layout, "hgb")


@pytest.mark.slow
def test_a_trained_solo_model_round_trips_through_the_model_file(tmp_path):
    project = init_project(tmp_path / "shop")
    opts = TrainOptions(outcomes=("conversion",), kinds=("solo",), bases=("logistic", "hgb"), test_share=0.3, cv_repeats=1)
    result = train_message(store.models_dir(project), "promo", planted_table(), opts)
    assert result["selection"]["conversion"]["chosen"] == "solo/logistic"
    model = load_model(project, "promo")
    rows = {"x": np.array([-2.0, 2.0]), "segment": np.array(["a", "b"])}
    raw = model.uplift["conversion"].predict_uplift(model.encode(rows))
    assert isinstance(model.uplift["conversion"], Solo) and np.isfinite(raw).all()
