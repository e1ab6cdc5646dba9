"""Randomized e-mail experiments whose per-customer effects are known.

A real experiment shows each customer under one arm only, so no benchmark
on real data can say how close a ranking comes to the best possible one.
Here the truth is written down. Each simulated customer has

* ``recency`` (months since the last purchase, 1–12), ``spend`` (past
  spend in dollars, log-normal), ``affinity_shoes`` and ``affinity_dresses``
  (interest in two categories, 0–1), ``channel`` and ``newbie``;
* a baseline visit probability ``p0`` that rises with spend and falls with
  recency, and for each message a sent probability ``p1 = sigmoid(logit p0 + delta)``:

  - ``shoes``: ``delta`` grows with shoe affinity and fades with recency,
  - ``dresses``: the same for dresses, and more so for big spenders,
  - ``sale``: one lift on the logit scale for everyone (the effect is
    proportional to the baseline: response-model targeting is right there),
  - *sleeping dogs*: lapsed low spenders (recency ≥ 9 months, spend below
    the median), about a sixth of customers: any e-mail lowers their visit
    probability and raises their unsubscribe risk from 0.4% to 6.4%;

* a rare conversion (about 1% of customers): a visit followed by a
  purchase with a probability that grows with spend, so its effect is the
  visit effect times that probability.

Assignment is random: each message and "no e-mail" a quarter of the
customers; the no-e-mail quarter is every message's hold-out group, as in
the Hillstrom experiment. ``effects[outcome]`` holds, per row, the true
effect of that row's message for that customer (``p1 - p0``), which is what
an oracle ranks by.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression

from relmail.learn.outcomes import OutcomeTable

MESSAGES = ("shoes", "dresses", "sale")
OUTCOMES = ("visit", "conversion")
AS_OF = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CHANNELS = ("Web", "Phone", "Multichannel")
#: Unsubscribe risk of a send: everyone, and on top for the sleeping dogs.
UNSUBSCRIBE = (0.004, 0.06)
#: Log-spend's mean and spread: ``z_spend`` standardizes by them, and the sleeping dogs spend below ``exp(mean)``.
SPEND_LOG = (5.0, 0.8)
#: The method name of the learner that knows the simulator's functional form (see :func:`well_specified`).
WELL_SPECIFIED = "well_specified"
#: A (message, outcome) is learnable when its effect varies across customers by at least this many
#: standard errors of the effect measured on a tenth of the training half (see :func:`learnability`).
LEARNABLE_RATIO = 1.5


@dataclass
class Simulation:
    """The experiment as relmail's ledger would hold it, with the truth beside it."""

    table: OutcomeTable
    #: Per outcome, per row: the true effect of the row's message on that customer.
    effects: dict[str, np.ndarray]
    #: Per row: True for the sleeping dogs (the e-mail hurts them).
    hurt: np.ndarray


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def simulate(customers: int = 20_000, seed: int = 0) -> Simulation:
    """One randomized experiment on ``customers`` new customers."""
    rng = np.random.default_rng(seed)
    n = customers
    recency = rng.integers(1, 13, n)
    spend = np.round(np.exp(rng.normal(*SPEND_LOG, n)), 2)
    z_spend = (np.log(spend) - SPEND_LOG[0]) / SPEND_LOG[1]
    aff = {"shoes": np.round(rng.beta(0.6, 1.4, n), 2), "dresses": np.round(rng.beta(0.6, 1.4, n), 2)}
    channel = rng.choice(CHANNELS, n, p=(0.45, 0.4, 0.15))
    newbie = rng.integers(0, 2, n)
    base = -2.0 + 0.35 * z_spend - 0.10 * (recency - 6) + 0.3 * newbie + 0.2 * (channel == "Web")
    hurt = (recency >= 9) & (z_spend < 0)
    fade = 1.2 - recency / 12
    delta = {
        "shoes": 1.4 * aff["shoes"] * fade,
        "dresses": 1.4 * aff["dresses"] * fade + 0.3 * z_spend * aff["dresses"],
        "sale": np.full(n, 0.4),
    }
    for m in MESSAGES:
        delta[m] = np.where(hurt, -0.8, delta[m])
    buy = np.clip(0.06 * np.exp(0.3 * z_spend), 0.0, 0.5)
    p0 = _sigmoid(base)
    arm = rng.integers(0, len(MESSAGES) + 1, n)  # len(MESSAGES) is "no e-mail"
    sent_p = np.choose(np.minimum(arm, len(MESSAGES) - 1), [_sigmoid(base + delta[m]) for m in MESSAGES])
    p_visit = np.where(arm < len(MESSAGES), sent_p, p0)
    visit = rng.random(n) < p_visit
    conversion = visit & (rng.random(n) < buy)
    unsub = (arm < len(MESSAGES)) & (rng.random(n) < UNSUBSCRIBE[0] + UNSUBSCRIBE[1] * hurt)
    revenue = np.where(conversion, np.round(spend * 0.3, 2), 0.0)

    # Ledger rows: a send for the customers of a message arm, a hold-out of every message for the rest.
    cust, msg = [], []
    for i in range(n):
        if arm[i] < len(MESSAGES):
            cust.append(i)
            msg.append(arm[i])
        else:
            cust.extend([i] * len(MESSAGES))
            msg.extend(range(len(MESSAGES)))
    cust, msg = np.asarray(cust), np.asarray(msg)
    treated = (arm[cust] < len(MESSAGES)).astype(np.int8)
    tau_visit = np.empty(len(cust))
    for j, m in enumerate(MESSAGES):
        rows = msg == j
        tau_visit[rows] = _sigmoid(base[cust[rows]] + delta[m][cust[rows]]) - p0[cust[rows]]
    features = [
        {"recency": int(recency[i]), "spend": float(spend[i]), "affinity_shoes": float(aff["shoes"][i]),
         "affinity_dresses": float(aff["dresses"][i]), "channel": str(channel[i]), "newbie": int(newbie[i])}
        for i in cust
    ]
    zeros = np.zeros(len(cust), np.int8)
    unsub_rows = (unsub[cust] & (treated == 1)).astype(np.int8)
    table = OutcomeTable(
        decision_id=np.arange(len(cust), dtype=np.int64),
        run_id=np.full(len(cust), f"sim-{seed}", dtype=object),
        customer_id=np.array([f"S{i:06d}" for i in cust], dtype=object),
        message_id=np.array([MESSAGES[j] for j in msg], dtype=object),
        treated=treated,
        as_of=[AS_OF] * len(cust),
        features=features,
        outcomes={"open": zeros, "click": zeros, "visit": visit[cust].astype(np.int8), "conversion": conversion[cust].astype(np.int8),
                  "unsubscribe": unsub_rows, "complaint": zeros, "irritation": unsub_rows},
        revenue=revenue[cust] * treated + revenue[cust] * (1 - treated),
    )
    effects = {"visit": tau_visit, "conversion": tau_visit * buy[cust]}
    return Simulation(table=table, effects=effects, hurt=hurt[cust])


def learnability(sim: Simulation, message: str, outcome: str, train_share: float = 0.5) -> float:
    """How many standard errors the effect varies by: sd of the true effect / SE of a tenth's measured effect.

    The standard error is that of a difference of two rates measured on a
    tenth of the training half (the resolution of a decile of a ranking).
    Above :data:`LEARNABLE_RATIO` a model can learn who gains more; below
    it the training half cannot tell customers apart, and the oracle's
    ceiling is out of any estimator's reach.
    """
    rows = sim.table.message_id == message
    t = sim.table.treated[rows]
    y = sim.table.outcomes[outcome][rows]
    p = float(y.mean())
    n_t = max(1.0, train_share * t.sum() / 10)
    n_c = max(1.0, train_share * (1 - t).sum() / 10)
    se = np.sqrt(p * (1 - p) * (1 / n_t + 1 / n_c))
    return float(np.std(sim.effects[outcome][rows]) / se) if se > 0 else float("inf")


def true_terms(features, message: str) -> tuple[np.ndarray, np.ndarray]:
    """The terms :func:`simulate` writes the log-odds with, from the features a row logged.

    ``(baseline, effect)``: the baseline's columns (``z_spend``, recency,
    newbie, the Web channel) and the columns the e-mail's shift ``delta``
    is a linear combination of for ``message``: the sleeping-dog flag and,
    outside the sleeping dogs, the message's own terms (``shoes``:
    affinity × fade; ``dresses``: the same and ``z_spend`` × affinity;
    ``sale``: a constant). With :func:`simulate`'s coefficients these give
    the true effects exactly (the tests check it).
    """
    col = {key: np.array([f[key] for f in features], dtype=float) for key in ("recency", "spend", "newbie")}
    z_spend = (np.log(col["spend"]) - SPEND_LOG[0]) / SPEND_LOG[1]
    web = np.array([f["channel"] == "Web" for f in features], dtype=float)
    hurt = ((col["recency"] >= 9) & (z_spend < 0)).astype(float)
    fade = 1.2 - col["recency"] / 12
    if message == "sale":
        own = [np.ones(len(features))]
    else:
        affinity = np.array([f[f"affinity_{message}"] for f in features], dtype=float)
        own = [affinity * fade] + ([z_spend * affinity] if message == "dresses" else [])
    baseline = np.column_stack([z_spend, col["recency"], col["newbie"], web])
    return baseline, np.column_stack([hurt] + [(1 - hurt) * c for c in own])


def well_specified(train: OutcomeTable, score: OutcomeTable, message: str, outcome: str) -> np.ndarray:
    """Uplift on ``score``'s rows from the best model any learner could fit on ``train``: the true form.

    A logistic regression without penalty on exactly the terms the
    simulator uses (:func:`true_terms`): the baseline's, and the sent flag
    times each of the message's effect terms, fitted on the sends and
    hold-outs of ``train``. Its only error is the estimation error of a
    handful of coefficients, so its ranking is the ceiling of what the
    training half can teach; the oracle's is out of any learner's reach.
    A conversion is a visit followed by a purchase whose chance is
    log-linear in ``z_spend``: its uplift is the visit uplift times that
    chance, fitted on the visitors of ``train``.
    """
    base, effect = true_terms(train.features, message)
    t = np.asarray(train.treated, dtype=float)[:, None]
    visit = np.asarray(train.outcomes["visit"], dtype=int)
    model = LogisticRegression(C=np.inf, max_iter=10_000).fit(np.hstack([base, t * effect]), visit)
    base_s, effect_s = true_terms(score.features, message)
    tau = model.predict_proba(np.hstack([base_s, effect_s]))[:, 1] - model.predict_proba(np.hstack([base_s, 0 * effect_s]))[:, 1]
    if outcome == "visit":
        return tau
    visitors = visit == 1
    z, bought = base[visitors, 0], np.asarray(train.outcomes[outcome], dtype=float)[visitors]

    def loss(b):
        p = np.clip(np.exp(b[0] + b[1] * z), 1e-12, 1 - 1e-12)
        return -float(np.sum(bought * np.log(p) + (1 - bought) * np.log(1 - p)))

    b = minimize(loss, [np.log(max(bought.mean(), 1e-6)), 0.0], method="Nelder-Mead").x
    return tau * np.exp(b[0] + b[1] * base_s[:, 0])
