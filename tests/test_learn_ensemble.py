"""The ensemble: a fixed set of uplift estimators, each standardized, averaged; judged from their out-of-fold predictions."""

from __future__ import annotations

import numpy as np
import pytest
from tests.test_learn_models import planted, planted_table
from tests.test_learn_pooled import campaign

from relmail.learn import metrics, store
from relmail.learn.dataset import FeatureSpec, split_mask
from relmail.learn.estimators import Ensemble, Interaction, Layout, Pooled, TLearner
from relmail.learn.model import load_model
from relmail.learn.select import _cross_fit, choose
from relmail.learn.train import TrainOptions, train_message
from relmail.project import init_project

KINDS = ("ensemble", "interaction", "t_learner")


def _planted_rows(n=3000, seed=0):
    x, seg, t, y = planted(n, seed)
    rows = [{"x": float(a), "segment": str(b)} for a, b in zip(x, seg)]
    spec = FeatureSpec.infer(rows)
    return spec, spec.encode(rows), x, t, y


def test_blend_weighs_members_alike_whatever_their_raw_spread_and_keeps_the_probability_scale():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=1000), rng.normal(size=1000)
    narrow, wide = 0.02 + 0.001 * a, 0.05 + 0.1 * b
    out = Ensemble.blend([narrow, wide], *Ensemble.standardization([narrow, wide]))
    # Standardized first: both members count alike, the wide one does not outvote the narrow one.
    assert np.corrcoef(out, a)[0, 1] == pytest.approx(np.corrcoef(out, b)[0, 1], abs=0.05)
    # Back on the members' scale: their mean centre and mean spread.
    assert out.mean() == pytest.approx((narrow.mean() + wide.mean()) / 2, abs=1e-12)
    z = ((a - a.mean()) / a.std() + (b - b.mean()) / b.std()) / 2
    assert np.allclose(out - out.mean(), (narrow.std() + wide.std()) / 2 * z)


def test_a_flat_member_adds_its_centre_and_not_its_rounding_noise_to_the_ranking():
    rng = np.random.default_rng(1)
    signal = rng.normal(size=500) * 0.01
    # Trees too shallow to split give a constant up to float rounding.
    flat = np.full(500, 0.09) + rng.normal(size=500) * 1e-17
    out = Ensemble.blend([signal, flat], *Ensemble.standardization([signal, flat]))
    assert np.array_equal(np.argsort(out), np.argsort(signal))
    assert out.mean() == pytest.approx((signal.mean() + 0.09) / 2)


def test_ensemble_ranks_the_helped_customers_first_and_predicts_the_blend_of_its_members():
    spec, X, x, t, y = _planted_rows(6000, 0)
    est = Ensemble(spec.layout).fit(X, y, t)
    assert [(m.kind, m.base) for m in est.members_] == [("interaction", "logistic"), ("t_learner", "logistic"), ("t_learner", "hgb")]
    up = est.predict_uplift(X)
    top = np.argsort(-up)[: len(up) // 2]
    assert (x[top] > 0).mean() > 0.9
    # Uplift on the probability scale: the mean predicted effect is near the true mean effect (+25 points for half).
    assert up.mean() == pytest.approx(0.125, abs=0.03)
    fresh = X[:200]
    members = [m.predict_uplift(fresh) for m in est.members_]
    assert np.allclose(est.predict_uplift(fresh), Ensemble.blend(members, est.centers_, est.spreads_))


def test_with_other_messages_sends_the_pooled_model_is_the_member_in_place_of_the_interaction_model():
    X, t, y, Xs, ys = campaign(2000, 2000, 1, width=2)
    alone = Ensemble(Layout(2, 0)).fit(X, y, t)
    pooled = Ensemble(Layout(2, 0)).fit(X, y, t, siblings=(Xs, ys))
    assert type(alone.members_[0]) is Interaction
    assert type(pooled.members_[0]) is Pooled
    assert [type(m) for m in pooled.members_[1:]] == [TLearner, TLearner]


def test_selection_judges_the_ensemble_on_its_members_out_of_fold_predictions_blended_fold_by_fold():
    spec, X, _x, t, y = _planted_rows(3000, 2)
    ids = np.array([f"C{i}" for i in range(len(y))], dtype=object)
    choice = choose(X, y, t, ids, spec.layout, seed=0, kinds=KINDS, repeats=1)
    row = next(c for c in choice.candidates if c["kind"] == "ensemble")
    assert row["base"] == "mixed"
    # The same figure from the members' out-of-fold scores, standardized within each fold's scored rows:
    # no member is refitted, and no outcome decides which members take part.
    fold = split_mask(ids, 0, 0.5, salt="validation")
    names = [("interaction", "logistic"), ("t_learner", "logistic"), ("t_learner", "hgb")]
    scores, _ = _cross_fit(X, y, t, fold, spec.layout, 0, names, KINDS, ("logistic", "hgb"))
    blended = np.zeros(len(y))
    for held in (fold, ~fold):
        part = [scores[n][held] for n in names]
        blended[held] = Ensemble.blend(part, *Ensemble.standardization(part))
    assert row["qini"] == pytest.approx(metrics.qini_coefficient(blended, y, t, 0), abs=1e-12)


def test_the_ensemble_is_a_candidate_only_when_all_its_members_are():
    spec, X, _x, t, y = _planted_rows(2000, 1)
    ids = np.array([f"C{i}" for i in range(len(y))], dtype=object)
    without_trees = choose(X, y, t, ids, spec.layout, kinds=KINDS, bases=("logistic",), repeats=1)
    assert "ensemble" not in [c["kind"] for c in without_trees.candidates]
    not_asked = choose(X, y, t, ids, spec.layout, kinds=("interaction", "t_learner"), repeats=1)
    assert "ensemble" not in [c["kind"] for c in not_asked.candidates]


def test_the_ensemble_must_beat_the_safe_model_like_any_candidate():
    # The mail helps everyone alike: the heterogeneous members only add noise, the proportional model is kept.
    rng = np.random.default_rng(4)
    n = 4000
    x = rng.normal(size=n)
    t = rng.integers(0, 2, n).astype(np.int8)
    y = (rng.random(n) < 0.1 + 0.05 * (x > 0) + 0.05 * t).astype(np.int8)
    ids = np.array([f"C{i}" for i in range(n)], dtype=object)
    choice = choose(x.reshape(-1, 1), y, t, ids, Layout(1, 0), kinds=("ensemble", "interaction", "t_learner", "proportional"),
                    criterion="qini", repeats=1)
    assert choice.kind == "proportional"


@pytest.mark.slow
def test_a_chosen_ensemble_round_trips_through_the_model_file_with_its_reason(tmp_path):
    project = init_project(tmp_path / "shop")
    opts = TrainOptions(outcomes=("visit", "conversion"), kinds=(*KINDS, "funnel"), test_share=0.3, cv_repeats=1)
    result = train_message(store.models_dir(project), "promo", planted_table(6000, 0), opts)
    selection = result["selection"]["visit"]
    assert selection["chosen"] == "ensemble/mixed"
    assert "averages the standardized uplift of interaction/logistic, t_learner/logistic, t_learner/hgb" in selection["reason"]
    model = load_model(project, "promo")
    est = model.uplift["visit"]
    assert isinstance(est, Ensemble) and [m.kind for m in est.members_] == ["interaction", "t_learner", "t_learner"]
    rows = {"x": np.array([-2.0, 2.0]), "segment": np.array(["b", "b"])}
    pred = model.predict(rows, "visit")
    # Calibrated uplift on the probability scale: about nothing where x < 0, about +25 points where x > 0.
    assert pred["uplift"][0] < 0.08 and 0.12 < pred["uplift"][1] < 0.4
    slope, intercept = model.uplift_calibration["visit"]
    assert np.allclose(pred["uplift"], intercept + slope * est.predict_uplift(model.encode(rows)))
    # The conversion funnel builds on the visit model chosen, here the ensemble, and is stored with it.
    assert result["selection"]["conversion"]["chosen"] == "funnel/mixed"
    funnel = model.uplift["conversion"]
    assert isinstance(funnel.upstream_, Ensemble) and len(funnel.upstream_.members_) == 3
    assert np.isfinite(model.predict(rows, "conversion")["uplift"]).all()
