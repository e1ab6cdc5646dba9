"""The simulator of bench/ (known per-customer effects) and what relmail learns from it.

The simulator is the benchmark's ground truth, so it is tested first: the
effects it states are the ones a randomized comparison measures. The
well-specified learner, which knows the simulator's functional form, is the
ceiling of what a training half can teach: it must be written in the
simulator's own terms, and rank at least as well as a T-learner. Then
relmail, trained on a simulated experiment, must come close to the
oracle's ranking where the effect is learnable.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from relmail.learn.dataset import FeatureSpec, split_mask
from relmail.learn.model import load_model
from relmail.learn.train import TrainOptions, train_message
from relmail.project import init_project

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
simulator = importlib.import_module("simulator")
protocol = importlib.import_module("protocol")


@pytest.fixture(scope="module")
def sim():
    return simulator.simulate(20_000, seed=11)


def test_the_stated_effects_are_what_the_randomized_experiment_measures(sim):
    table = sim.table
    assert set(table.message_id) == set(simulator.MESSAGES)
    for message in simulator.MESSAGES:
        rows = table.message_id == message
        t = table.treated[rows]
        # A quarter per message and a quarter held out of every message.
        assert 0.45 < t.mean() < 0.55
        for outcome in simulator.OUTCOMES:
            y = table.outcomes[outcome][rows].astype(float)
            tau = sim.effects[outcome][rows]
            measured = y[t == 1].mean() - y[t == 0].mean()
            se = np.sqrt(y[t == 1].var() / (t == 1).sum() + y[t == 0].var() / (t == 0).sum())
            assert abs(measured - tau.mean()) < 3 * se, (message, outcome)
        # The sleeping dogs: the e-mail lowers their visits, truly and measurably.
        hurt = sim.hurt[rows]
        y = table.outcomes["visit"][rows].astype(float)
        assert (sim.effects["visit"][rows][hurt] < 0).all() and sim.effects["visit"][rows][~hurt].mean() > 0.02
        assert y[hurt & (t == 1)].mean() < y[hurt & (t == 0)].mean()
    sent = table.treated == 1
    unsub = table.outcomes["unsubscribe"]
    assert unsub[~sent].sum() == 0
    assert unsub[sent & sim.hurt].mean() > 5 * unsub[sent & ~sim.hurt].mean()
    assert 0.005 < table.outcomes["conversion"].mean() < 0.02  # a rare outcome


def test_learnability_tells_varying_visit_effects_from_rare_conversions(sim):
    for message in ("shoes", "dresses"):
        assert simulator.learnability(sim, message, "visit") >= simulator.LEARNABLE_RATIO
    for message in simulator.MESSAGES:
        assert simulator.learnability(sim, message, "conversion") < simulator.LEARNABLE_RATIO


def test_expected_keep_of_the_oracle_is_the_ceiling(sim):
    rows = sim.table.message_id == "shoes"
    effect = sim.effects["visit"][rows]
    oracle = protocol.expected_keep(effect, effect, 0.5, seed=0)
    random = np.mean([protocol.expected_keep(np.random.default_rng(s).random(len(effect)), effect, 0.5, s) for s in range(20)])
    # With customers the e-mail hurts, mailing the best half keeps more than mailing everyone.
    assert oracle > 1.0 and abs(random - 0.5) < 0.02
    for score in (-effect, np.zeros(len(effect)), sim.table.outcomes["visit"][rows]):
        assert protocol.expected_keep(score, effect, 0.5, seed=0) < oracle


#: The coefficients :func:`simulator.simulate` writes: intercept and baseline terms, and each message's effect terms.
TRUE_BASELINE = (-1.4, (0.35, -0.10, 0.3, 0.2))  # -2.0 - 0.10 * (recency - 6): -1.4 - 0.10 * recency
TRUE_EFFECT = {"shoes": (-0.8, 1.4), "dresses": (-0.8, 1.4, 0.3), "sale": (-0.8, 0.4)}


def test_the_well_specified_terms_are_the_simulators_own(sim):
    for message in simulator.MESSAGES:
        rows = sim.table.message_id == message
        baseline, effect = simulator.true_terms(sim.table.subset(rows).features, message)
        logit = TRUE_BASELINE[0] + baseline @ np.array(TRUE_BASELINE[1])
        tau = 1 / (1 + np.exp(-(logit + effect @ np.array(TRUE_EFFECT[message])))) - 1 / (1 + np.exp(-logit))
        np.testing.assert_allclose(tau, sim.effects["visit"][rows], rtol=0, atol=1e-12)
        # The sleeping-dog flag is the first effect term.
        assert (effect[:, 0] == sim.hurt[rows]).all()


def _t_learner(train, test, outcome: str) -> np.ndarray:
    """scikit-uplift's TwoModels(logistic), the benchmark's T-learner: one logistic regression per group."""
    spec = FeatureSpec.infer(train.features)
    X_fit, X_test = spec.encode(train.features), spec.encode(test.features)
    prep = spec.layout.preprocessor(curves=False).fit(X_fit)
    Z_fit, Z_test = prep.transform(X_fit), prep.transform(X_test)
    y, t = train.outcomes[outcome], train.treated == 1
    p = [LogisticRegression(max_iter=2000).fit(Z_fit[g], y[g]).predict_proba(Z_test)[:, 1] for g in (t, ~t)]
    return p[0] - p[1]


def test_the_well_specified_learner_keeps_at_least_what_a_t_learner_keeps():
    big = simulator.simulate(40_000, seed=5)
    for message in ("shoes", "dresses"):  # the learnable arms
        rows = big.table.message_id == message
        part = big.table.subset(rows)
        test = split_mask(part.customer_id, 5, 0.5)
        train_rows, test_rows = part.subset(~test), part.subset(test)
        effect = big.effects["visit"][rows][test]
        keep = {name: protocol.expected_keep(score, effect, 0.5, seed=5) for name, score in (
            ("well_specified", simulator.well_specified(train_rows, test_rows, message, "visit")),
            ("t_learner", _t_learner(train_rows, test_rows, "visit")),
            ("oracle", effect))}
        assert keep["well_specified"] >= keep["t_learner"], (message, keep)
        # Knowing the form leaves only a few coefficients' estimation error: next to the oracle.
        assert keep["well_specified"] >= 0.98 * keep["oracle"], (message, keep)
    # A conversion's uplift is the visit uplift times a purchase chance that grows with spend.
    rows = big.table.message_id == "dresses"
    part = big.table.subset(rows)
    test = split_mask(part.customer_id, 5, 0.5)
    score = simulator.well_specified(part.subset(~test), part.subset(test), "dresses", "conversion")
    effect = big.effects["conversion"][rows][test]
    assert protocol.expected_keep(score, effect, 0.5, seed=5) >= 0.98 * protocol.expected_keep(effect, effect, 0.5, seed=5)


@pytest.mark.slow
def test_relmail_comes_within_a_tenth_of_the_oracle_where_the_effect_is_learnable(sim, tmp_path):
    project = init_project(tmp_path / "shop")
    rows = sim.table.message_id == "dresses"
    part = sim.table.subset(rows)
    effect = sim.effects["visit"][rows]
    options = TrainOptions(split_seed=11, test_share=0.5, outcomes=("visit",), kinds=("t_learner", "interaction", "proportional"),
                           bases=("logistic",), cv_repeats=1)
    train_message(tmp_path / "shop" / "models", "dresses", part, options)
    model = load_model(project, "dresses")
    test = split_mask(part.customer_id, 11, 0.5)
    uplift = model.predict(part.subset(test).features, "visit")["uplift"]
    oracle = protocol.expected_keep(effect[test], effect[test], 0.5, seed=11)
    assert protocol.expected_keep(uplift, effect[test], 0.5, seed=11) >= 0.9 * oracle
