"""Evaluation metrics for propensity and uplift models, NumPy only.

Uplift cannot be observed per customer, so it is judged on a randomized
sample: rank customers by a score, then count the *incremental* outcomes
among the top ``k`` (treated outcomes minus control outcomes scaled to the
treated group's size, Radcliffe's Qini). A model that ranks well keeps most
of the incremental outcomes while mailing only part of the volume.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score

#: The volumes the reports show, as shares of everyone scored.
VOLUMES = (0.1, 0.3, 0.5)


def ranking(score, seed: int = 0) -> np.ndarray:
    """Row indices from the highest score to the lowest, ties broken by a seeded draw.

    Every figure here ranks this way: a constant score must rank like random
    targeting, not like the input order.
    """
    score = np.asarray(score, dtype=float)
    tie = np.random.default_rng(seed).random(len(score))
    return np.lexsort((tie, -score))


def _ranked(score: np.ndarray, y: np.ndarray, t: np.ndarray, seed: int = 0):
    score, y, t = (np.asarray(a, dtype=float) for a in (score, y, t))
    if not (len(score) == len(y) == len(t)):
        raise ValueError("score, y and t must have the same length")
    order = ranking(score, seed)
    return y[order], t[order]


def qini_curve(score, y, t, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Qini curve: (share of volume targeted, incremental outcomes among them).

    ``y`` is the outcome (0/1 or a value), ``t`` 1 for sent, 0 for hold-out.
    Incremental outcomes at the top ``n`` are ``Y_t(n) - Y_c(n) * N_t(n) / N_c(n)``:
    the treated outcomes minus what the treated would have done unmailed,
    estimated from the hold-outs ranked alongside them. Point 0 is (0, 0).
    """
    ys, ts = _ranked(score, y, t, seed)
    nt = np.cumsum(ts)
    nc = np.cumsum(1 - ts)
    yt = np.cumsum(ys * ts)
    yc = np.cumsum(ys * (1 - ts))
    with np.errstate(divide="ignore", invalid="ignore"):
        inc = np.where(nc > 0, yt - yc * nt / np.maximum(nc, 1), yt)
    frac = np.arange(1, len(ys) + 1) / len(ys)
    return np.concatenate([[0.0], frac]), np.concatenate([[0.0], inc])


def keep_at(score, y, t, volume: float, seed: int = 0, total: float | None = None) -> float:
    """Share of all incremental outcomes kept when mailing the top ``volume`` share.

    Measured on the whole-population scale: the incremental outcomes of the
    top group (treated minus control rate, times the group size) over the
    size of those of mailing everyone. Random targeting keeps ``volume`` on
    average; a value above 1 means the rest of the population is harmed by
    the mail. Higher is always better: where mailing everyone loses
    outcomes (a negative total), random targeting keeps ``-volume`` on
    average and a ranking that puts the customers the mail helps first
    keeps more, as the Qini coefficient (also divided by the total's size)
    says too.
    ``total`` replaces the sample's own incremental outcomes as the
    denominator (:func:`incremental_total`), to keep a bootstrap resample
    on the scale of the sample it was drawn from.
    """
    ys, ts = _ranked(score, y, t, seed)
    if total is None:
        total = _incremental(ys, ts)
    if total == 0 or not np.isfinite(total):
        return float("nan")
    n = int(round(volume * len(ys)))
    return float(_incremental(ys[:n], ts[:n]) / abs(total))


def _incremental(ys: np.ndarray, ts: np.ndarray) -> float:
    """Incremental outcomes of mailing a whole group: (rate_t - rate_c) x size."""
    nt, nc = ts.sum(), (1 - ts).sum()
    if nt == 0 or nc == 0:
        return 0.0
    return float((ys[ts == 1].mean() - ys[ts == 0].mean()) * len(ys))


def qini_coefficient(score, y, t, seed: int = 0, total: float | None = None) -> float:
    """Area between the model's Qini curve and the random line, normalized.

    Normalized by the total incremental outcomes, so 0 is random targeting
    and values are comparable across data sets of different size; higher is
    better (the largest possible value depends on the data). ``total``
    replaces the sample's own as the normalizer (:func:`incremental_total`).
    """
    frac, inc = qini_curve(score, y, t, seed)
    scale = inc[-1] if total is None else total
    if scale == 0 or not np.isfinite(scale):
        return float("nan")
    area = np.trapezoid(inc, frac) if hasattr(np, "trapezoid") else np.trapz(inc, frac)
    return float((area - 0.5 * inc[-1]) / abs(scale))


def incremental_total(y, t, criterion: str) -> float:
    """The normalizer of ``criterion`` (``qini`` or ``keep_at_*``) on this sample: its total incremental outcomes.

    Passed as ``total`` when scoring bootstrap resamples, so that every
    resample is divided by the same amount. A resample's own total can come
    close to zero on small data (treated and held-out rates nearly equal by
    chance), and dividing by it turns a modest difference into an enormous one.
    """
    y, t = np.asarray(y, dtype=float), np.asarray(t, dtype=float)
    if criterion == "qini":
        nt, nc = t.sum(), (1 - t).sum()
        yt, yc = (y * t).sum(), (y * (1 - t)).sum()
        return float(yt - yc * nt / nc) if nc > 0 else float(yt)
    return _incremental(y, t)


def auc(p, y) -> float:
    """ROC AUC, or NaN when only one class is present."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


def brier(p, y) -> float:
    """Brier score (mean squared error of the probabilities); lower is better."""
    return float(brier_score_loss(np.asarray(y), np.clip(np.asarray(p, dtype=float), 0, 1)))


def reliability(p, y, bins: int = 10) -> list[dict]:
    """Calibration table: per equal-count bin, mean prediction vs observed rate."""
    p = np.asarray(p, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(p) == 0:
        return []
    order = np.argsort(p, kind="stable")
    out = []
    for chunk in np.array_split(order, min(bins, len(p))):
        if len(chunk):
            out.append({"n": int(len(chunk)), "predicted": float(p[chunk].mean()), "observed": float(y[chunk].mean())})
    return out


def calibration_error(p, y, bins: int = 10) -> float:
    """Expected calibration error: count-weighted |predicted - observed| over the bins."""
    table = reliability(p, y, bins)
    n = sum(b["n"] for b in table)
    return float(sum(b["n"] * abs(b["predicted"] - b["observed"]) for b in table) / n) if n else float("nan")


def ipw_value(y, assigned, policy, propensity) -> float:
    """Inverse-propensity-weighted mean outcome of ``policy`` on randomized data.

    ``assigned`` is the arm each customer got in the experiment, ``policy``
    the arm the policy would give, ``propensity`` the probability of the
    assigned arm (an array or a constant). Unbiased when assignment was
    random with those probabilities.
    """
    y = np.asarray(y, dtype=float)
    match = np.asarray(assigned) == np.asarray(policy)
    w = match / np.broadcast_to(np.asarray(propensity, dtype=float), y.shape)
    return float(np.sum(y * w) / len(y))


def ipw_value_stochastic(y, assigned, arm_probs: dict, propensity) -> float:
    """IPW value of a random policy giving each arm with the probability in ``arm_probs``."""
    y = np.asarray(y, dtype=float)
    assigned = np.asarray(assigned)
    pi = np.zeros(len(y))
    for arm, prob in arm_probs.items():
        pi += prob * (assigned == arm)
    return float(np.sum(y * pi / np.broadcast_to(np.asarray(propensity, dtype=float), y.shape)) / len(y))
