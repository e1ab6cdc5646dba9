"""The pooled estimator: one message's uplift model also learns from the other messages' sends."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from relmail.learn import store
from relmail.learn.bases import Layout
from relmail.learn.interaction import Interaction, Pooled
from relmail.learn.model import load_model
from relmail.learn.outcomes import OutcomeTable
from relmail.learn.select import choose
from relmail.learn.train import TrainOptions, siblings_of, train
from relmail.project import init_project


def campaign(n_own: int, n_sibling: int, seed: int, width: int = 6):
    """Any e-mail of the campaign helps customers with x0 > 0 (+20 points); message 'a' adds nothing of its own.

    ``width`` features, of which only the first matters. Returns the own
    rows (``X, t, y``: sends of 'a' and hold-outs) and the sibling rows
    (``X, y``: sends of 'b' to other customers).
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_own, width))
    t = rng.integers(0, 2, n_own).astype(np.int8)
    y = (rng.random(n_own) < 0.1 + 0.2 * t * (X[:, 0] > 0)).astype(np.int8)
    Xs = rng.normal(size=(n_sibling, width))
    ys = (rng.random(n_sibling) < 0.1 + 0.2 * (Xs[:, 0] > 0)).astype(np.int8)
    return X, t, y, Xs, ys


def _helped_first(uplift, X) -> float:
    """Share of the top half by predicted uplift that the e-mail really helps (x0 > 0)."""
    top = np.argsort(-uplift, kind="stable")[: len(X) // 2]
    return float((X[top, 0] > 0).mean())


def test_pooled_model_ranks_better_than_the_interaction_model_when_its_own_data_is_thin():
    layout = Layout(6, 0)
    pooled, alone = [], []
    for seed in range(5):
        X, t, y, Xs, ys = campaign(400, 6000, seed)
        fresh = np.random.default_rng(100 + seed).normal(size=(5000, 6))
        pooled.append(_helped_first(Pooled(layout).fit(X, y, t, siblings=(Xs, ys)).predict_uplift(fresh), fresh))
        alone.append(_helped_first(Interaction(layout).fit(X, y, t).predict_uplift(fresh), fresh))
    # 400 rows of its own: alone, the interaction model's effect terms chase
    # noise in the five features that do not matter; pooled with 6,000 sends
    # of another message, the shared effect terms find the one that does.
    assert np.mean(pooled) > 0.85
    assert np.mean(pooled) > np.mean(alone) + 0.05


def test_pooled_uplift_is_the_messages_own_effect_not_the_siblings():
    # Message 'b' helps everyone by +20 points; message 'a' helps nobody.
    rng = np.random.default_rng(3)
    n = 6000
    x = rng.normal(size=n)
    t = rng.integers(0, 2, n).astype(np.int8)
    y = (rng.random(n) < 0.15).astype(np.int8)
    xs = rng.normal(size=n)
    ys = (rng.random(n) < 0.35).astype(np.int8)
    X, Xs = x.reshape(-1, 1), xs.reshape(-1, 1)
    est = Pooled(Layout(1, 0)).fit(X, y, t, siblings=(Xs, ys))
    # The message's own terms (shrunk like the shared ones) absorb the difference.
    assert abs(est.predict_uplift(X).mean()) < 0.03
    # Its probabilities match the message's own groups.
    assert est.predict_sent(X, True)[t == 1].mean() == pytest.approx(y[t == 1].mean(), abs=0.015)
    assert est.predict_sent(X, False)[t == 0].mean() == pytest.approx(y[t == 0].mean(), abs=0.015)


def test_without_siblings_the_pooled_estimator_is_no_candidate_and_with_them_it_replaces_the_interaction_model():
    X, t, y, Xs, ys = campaign(2000, 2000, 1, width=1)
    ids = np.array([f"C{i}" for i in range(len(y))], dtype=object)
    kinds = ("interaction", "pooled")
    alone = choose(X, y, t, ids, Layout(1, 0), kinds=kinds, bases=("logistic",), repeats=1)
    assert [c["kind"] for c in alone.candidates] == ["interaction"]
    sib_ids = np.array([f"S{i}" for i in range(len(ys))], dtype=object)
    both = choose(X, y, t, ids, Layout(1, 0), kinds=kinds, bases=("logistic",), repeats=1, siblings=(Xs, ys, sib_ids))
    assert [c["kind"] for c in both.candidates] == ["pooled"]
    both = choose(X, y, t, ids, Layout(1, 0), kinds=("t_learner", "interaction", "pooled"), bases=("logistic",), repeats=1,
                  siblings=(Xs, ys, sib_ids))
    assert sorted(c["kind"] for c in both.candidates) == ["pooled", "t_learner"]


def table(rows: list[tuple[str, str, str, int, float, int]]) -> OutcomeTable:
    """An outcome table from (run, customer, message, treated, x, outcome) rows."""
    n = len(rows)
    run, cust, msg, t, x, y = (list(col) for col in zip(*rows))
    y = np.array(y, dtype=np.int8)
    zeros = np.zeros(n, np.int8)
    return OutcomeTable(
        decision_id=np.arange(n),
        run_id=np.array(run, dtype=object),
        customer_id=np.array(cust, dtype=object),
        message_id=np.array(msg, dtype=object),
        treated=np.array(t, dtype=np.int8),
        as_of=[datetime(2025, 3, 1, tzinfo=UTC)] * n,
        features=[{"x": float(v)} for v in x],
        outcomes={"open": y, "click": y, "visit": y, "conversion": y, "unsubscribe": zeros, "complaint": zeros, "irritation": zeros},
        revenue=np.where(y == 1, 50.0, 0.0),
    )


def test_siblings_are_other_messages_sends_to_customers_without_a_decision_for_this_one():
    t = table([
        ("r1", "C1", "a", 1, 0.0, 0),   # a's own send
        ("r1", "C2", "a", 0, 0.0, 0),   # a's hold-out ...
        ("r1", "C2", "b", 1, 0.0, 1),   # ... who got b: already in a's rows, not a sibling
        ("r1", "C3", "b", 1, 0.0, 1),   # b to someone a never decided on: a sibling
        ("r1", "C4", "b", 0, 0.0, 0),   # b's hold-out: not a send
        ("r2", "C1", "b", 1, 0.0, 1),   # C1 in another run without a decision for a: a sibling
    ])
    got = siblings_of(t, "a")
    assert list(zip(got.run_id, got.customer_id, got.message_id)) == [("r1", "C3", "b"), ("r2", "C1", "b")]


def test_train_pools_the_other_messages_sends_and_saves_a_model_that_predicts_the_same(tmp_path):
    project = init_project(tmp_path / "shop")
    X, t, y, Xs, ys = campaign(3000, 6000, 7, width=1)
    rows = [("r1", f"A{i}", "a", int(ti), float(xi), int(yi)) for i, (xi, ti, yi) in enumerate(zip(X[:, 0], t, y))]
    rows += [("r1", f"B{i}", "b", 1, float(xi), int(yi)) for i, (xi, yi) in enumerate(zip(Xs[:, 0], ys))]
    opts = TrainOptions(outcomes=("conversion",), kinds=("pooled",), bases=("logistic",), test_share=0.3, cv_repeats=1)
    (result,) = train(None, store.models_dir(project), ["a"], opts, table=table(rows))
    assert result["selection"]["conversion"]["chosen"] == "pooled/logistic"
    model = load_model(project, "a")
    # 70% of b's 6,000 sends are in the training part (the split is by customer, as for a's own rows).
    assert model.meta["training"]["sibling_messages"] == ["b"]
    assert model.meta["training"]["sibling_sends"] == pytest.approx(4200, rel=0.05)
    assert result["sibling_messages"] == ["b"] and result["sibling_sends"] == model.meta["training"]["sibling_sends"]
    pred = model.predict({"x": np.array([-2.0, 2.0])}, "conversion")
    assert pred["uplift"][1] - pred["uplift"][0] > 0.1


@pytest.mark.slow
def test_cli_train_of_one_message_still_pools_the_other_messages_sends(project, tmp_path):
    import csv
    from datetime import timedelta

    from click.testing import CliRunner

    from relmail.cli import cli
    from relmail.learn.history import import_history
    from relmail.store.db import make_engine
    from test_learn_ledger import AS_OF, add_customers, add_events

    engine = make_engine(project.database_url)
    n = 1800
    add_customers(engine, n)
    rng = np.random.default_rng(2)
    x = rng.normal(size=n)
    path = tmp_path / "h.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["run_id", "campaign", "window", "as_of", "customer_id", "message_id", "action", "x"])
        for i in range(n):
            # A third each: promo sent, promo held out, the other message sent.
            message, action = (("promo", "send"), ("promo", "holdout"), ("other", "send"))[i % 3]
            w.writerow(["hist-1", "spring", "2025-W10", AS_OF.isoformat(), f"C{i:07d}", message, action, round(float(x[i]), 3)])
    import_history(engine, path)
    mailed = np.arange(n) % 3 != 1
    buys = rng.random(n) < 0.08 + 0.3 * (mailed & (x > 0))
    add_events(engine, [{"customer_id": f"C{i:07d}", "type": "purchase", "occurred_at": AS_OF + timedelta(days=2), "value": 30.0}
                        for i in np.flatnonzero(buys)])
    config = project.root / "relmail.toml"
    config.write_text(config.read_text() + '\n[model]\nestimators = ["interaction", "pooled"]\noutcomes = ["conversion"]\n')
    res = CliRunner().invoke(cli, ["--project", str(project.root), "model", "train", "--message", "promo", "--json"])
    assert res.exit_code == 0, res.output
    [got] = json.loads(res.output)
    # The other message's 600 sends, 70% of them in the training part (the split is by customer).
    assert got["sibling_messages"] == ["other"] and 360 < got["sibling_sends"] < 480
    # With sibling sends the pooled model stands in for the interaction model it extends.
    assert [c["kind"] for c in got["selection"]["conversion"]["candidates"]] == ["pooled"]
    res = CliRunner().invoke(cli, ["--project", str(project.root), "model", "train", "--message", "promo"])
    assert res.exit_code == 0, res.output
    # Training and test parts both named: the rows are the training part's, not the message's.
    assert (f"promo: version 2 from {int(got['rows']):,} training decisions, {int(got['test_rows']):,} test decisions "
            f"held back for 'model evaluate' and ") in res.output
    assert "sends of other (for the pooled estimator)" in res.output
    engine.dispose()
