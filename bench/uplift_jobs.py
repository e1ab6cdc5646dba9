"""One seed of the uplift benchmark: relmail and its peers on the same split, as plain figures.

A job trains relmail with the library call behind ``relmail model train``
(its defaults, split seed = the seed, half the customers held back), reads
its figures with the code behind ``relmail model evaluate``, fits every
peer (:mod:`peers`) on the same training half, and scores all of them on
the same test customers. What comes back is small: per arm and outcome,
each method's figures and its Qini curve on a 101-point grid.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

import protocol
from peers import peer_scores
from relmail.learn import metrics, store
from relmail.learn.dataset import split_mask
from relmail.learn.evaluate import evaluate_model
from relmail.learn.model import TrainedModel, from_payload
from relmail.learn.outcomes import OutcomeTable
from relmail.learn.train import TrainOptions, limited_threads, train

TEST_SHARE = 0.5
VOLUMES = (0.3, 0.5)


def fit_relmail(table: OutcomeTable, messages, outcomes, seed: int, folder: Path) -> tuple[dict[str, TrainedModel], dict]:
    """relmail's models of ``messages`` on split ``seed``, and the estimator each outcome chose."""
    options = TrainOptions(split_seed=seed, test_share=TEST_SHARE, outcomes=tuple(outcomes))
    results = train(None, folder, list(messages), options, table=table)
    chosen = {f"{r['message']}/{o}": s["chosen"] for r in results for o, s in r["selection"].items()}
    models = {m: from_payload(meta, store.load_payload(folder, meta)) for m in messages if (meta := store.read_meta(folder, m))}
    return models, chosen


def score_arm(model: TrainedModel, part: OutcomeTable, outcome: str, seed: int, effect: np.ndarray | None = None,
              learners: dict[str, Callable[[OutcomeTable, OutcomeTable], np.ndarray]] | None = None) -> dict | None:
    """Every method's figures on the test customers of one message (``part``) and outcome.

    ``learners``: more methods by name, each fitted on the training rows and
    scoring the test rows (``learner(train_rows, test_rows)``). relmail's
    own figures are checked against ``model evaluate``'s on the same rows:
    the benchmark measures what the command reports.
    """
    test = split_mask(part.customer_id, seed, TEST_SHARE)
    train_rows, test_rows = part.subset(~test), part.subset(test)
    X_fit, X_test = model.encode(train_rows.features), model.encode(test_rows.features)
    y, t = test_rows.outcomes[outcome], test_rows.treated
    if outcome not in model.uplift or int(y[t == 0].sum()) == 0:
        return None
    scores = {"relmail": model.predict(X_test, outcome)["uplift"]}
    y_fit = train_rows.outcomes[outcome]
    scores.update(peer_scores(model.spec.layout_of(X_fit, y_fit), X_fit, y_fit, train_rows.treated, X_test, seed))
    for name, learner in (learners or {}).items():
        scores[name] = learner(train_rows, test_rows)
    if effect is not None:
        scores["oracle"] = effect[test]
    evaluated = evaluate_model(model, part)["outcomes"][outcome]["uplift"]
    out = {"methods": {}, "curves": {}, "chosen": None}
    for name, s in scores.items():
        f = protocol.figures(s, y, t, seed)
        if effect is not None:
            for v in VOLUMES:
                f[f"true_keep_at_{round(v * 100)}"] = protocol.expected_keep(s, effect[test], v, seed)
        out["methods"][name] = f
        out["curves"][name] = protocol.qini_on_grid(s, y, t, seed)
    mine = out["methods"]["relmail"]
    for key in protocol.FIGURES:
        if not np.isclose(mine[key], evaluated["model"][key], equal_nan=True, rtol=0, atol=1e-12):
            raise AssertionError(f"relmail's {key} {mine[key]} differs from model evaluate's {evaluated['model'][key]}")
    out["methods"]["random"] = {k: evaluated["random"][k] for k in protocol.FIGURES}
    if effect is not None:
        out["methods"]["random"].update({f"true_keep_at_{round(v * 100)}": v for v in VOLUMES})
    return out


def hillstrom_job(table: OutcomeTable, seed: int) -> dict:
    """Both Hillstrom messages and outcomes, and the whole plan, on split ``seed``."""
    from hillstrom import MESSAGES, OUTCOMES

    with tempfile.TemporaryDirectory(prefix="relmail-uplift-") as tmp, limited_threads(1):
        models, chosen = fit_relmail(table, MESSAGES, OUTCOMES, seed, Path(tmp))
        arms = {}
        for message in MESSAGES:
            part = table.subset(table.message_id == message)
            for outcome in OUTCOMES:
                res = score_arm(models[message], part, outcome, seed)
                if res is not None:
                    res["chosen"] = chosen.get(f"{message}/{outcome}")
                    arms[f"{message}/{outcome}"] = res
        for outcome in OUTCOMES:
            if all(f"{m}/{outcome}" in arms for m in MESSAGES):
                arms[f"plan/{outcome}"] = plan_figures(models, table, seed, outcome)
    return {"seed": seed, "arms": arms}


def simulator_job(customers: int, seed: int) -> dict:
    """Every simulated message and outcome on a new experiment drawn with ``seed``, with the oracle and the well-specified learner."""
    from simulator import MESSAGES, OUTCOMES, WELL_SPECIFIED, learnability, simulate, well_specified

    sim = simulate(customers, seed)
    with tempfile.TemporaryDirectory(prefix="relmail-uplift-") as tmp, limited_threads(1):
        models, chosen = fit_relmail(sim.table, MESSAGES, OUTCOMES, seed, Path(tmp))
        arms = {}
        for message in MESSAGES:
            rows = sim.table.message_id == message
            part = sim.table.subset(rows)
            for outcome in OUTCOMES:
                known = {WELL_SPECIFIED: partial(well_specified, message=message, outcome=outcome)}
                res = score_arm(models[message], part, outcome, seed, sim.effects[outcome][rows], known)
                if res is not None:
                    res["chosen"] = chosen.get(f"{message}/{outcome}")
                    res["learnability"] = learnability(sim, message, outcome, 1 - TEST_SHARE)
                    arms[f"{message}/{outcome}"] = res
    return {"seed": seed, "arms": arms}


def plan_figures(models: dict[str, TrainedModel], table: OutcomeTable, seed: int, outcome: str) -> dict:
    """The whole decision on the test half: Mens, Womens or nothing per customer, at 30% and 50% volume.

    relmail's plan mails the top customers by their larger predicted uplift
    (only where it is positive), with that message; the response plan ranks
    by the larger ``P(outcome | sent)``; random targeting mails the better
    single message (by its lift on the training half) to a random share.
    Each policy's outcome rate is estimated on the randomized test half by
    inverse-propensity weighting (each arm had probability 1/3).
    """
    from hillstrom import ARM_PROBABILITY, MESSAGES

    first: dict = {}
    for i, cid in enumerate(table.customer_id):
        first.setdefault(cid, i)
    rows = np.fromiter(first.values(), dtype=np.int64)
    cids = table.customer_id[rows]
    test = split_mask(cids, seed, TEST_SHARE)
    arm_of = dict.fromkeys(cids, "none")
    for c, m, t in zip(table.customer_id, table.message_id, table.treated):
        if t:
            arm_of[c] = m
    assigned = np.array([arm_of[c] for c in cids[test]], dtype=object)
    y = table.outcomes[outcome][rows][test]
    feats = [table.features[i] for i in rows[test]]
    preds = {m: models[m].predict(feats, outcome) for m in MESSAGES}
    up = np.vstack([preds[m]["uplift"] for m in MESSAGES])
    resp = np.vstack([preds[m]["p_positive_sent"] for m in MESSAGES])
    names = np.array(MESSAGES, dtype=object)
    train_rows = ~split_mask(table.customer_id, seed, TEST_SHARE)
    lift = {}
    for m in MESSAGES:
        sel = train_rows & (table.message_id == m)
        yy, tt = table.outcomes[outcome][sel], table.treated[sel]
        lift[m] = yy[tt == 1].mean() - yy[tt == 0].mean()
    better = max(lift, key=lift.get)
    n = len(y)
    none = np.array(["none"] * n, dtype=object)

    def policy(scores, positive_only, v):
        best, score = scores.argmax(axis=0), scores.max(axis=0)
        top = metrics.ranking(score, seed)[: int(round(v * n))]
        if positive_only:
            top = top[score[top] > 0]
        pol = none.copy()
        pol[top] = names[best[top]]
        return metrics.ipw_value(y, assigned, pol, ARM_PROBABILITY)

    out = {"better_message": better, "nothing": metrics.ipw_value(y, assigned, none, ARM_PROBABILITY),
           "all_better": metrics.ipw_value(y, assigned, np.array([better] * n, dtype=object), ARM_PROBABILITY)}
    for v in VOLUMES:
        k = round(v * 100)
        out[f"relmail_at_{k}"] = policy(up, True, v)
        out[f"response_at_{k}"] = policy(resp, False, v)
        out[f"random_at_{k}"] = metrics.ipw_value_stochastic(y, assigned, {better: v, "none": 1 - v}, ARM_PROBABILITY)
    return out
