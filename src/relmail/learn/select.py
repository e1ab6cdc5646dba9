"""Per message and outcome: which uplift estimator to trust, and why.

Every candidate (estimator × base learner) is judged on customers it did not
train on, by 2-fold cross-fitting inside the training data: fit on one half
of the customers, score the other, swap, and pool the scores. Pooling keeps
the whole training set as validation data, which matters because uplift
metrics are differences of noisy rates. One split is still noisy (on the
Hillstrom data a candidate's Qini moves by ±0.03 from one split to the
next, as much as the gaps between candidates), so the cross-fitting is
repeated on ``repeats`` independent splits and each candidate is judged by
its mean. The winner has the highest mean Qini coefficient (or the
criterion asked for), provided it beats the safe model by more than one
bootstrap standard error; otherwise the safe model is kept. The safe model
is the proportional one (which ranks like the response model), or, for an
outcome reached through another whose model is known (a purchase after a
visit), the funnel model built on that outcome's chosen estimator: the
upstream choice already had to clear the same rule on many more cases. The winner's out-of-fold
predictions also calibrate its uplift scale (:func:`uplift_calibration`).
The reason names the figures, their spread, the runners-up and the lead
over the proportional model so a person can check the choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from . import metrics
from .bases import BASES, Layout, Propensity
from .dataset import split_mask
from .estimators import (
    KIND_BASES,
    POOLING_KINDS,
    POOLING_REPLACES,
    UNIFORM_SIGN,
    UPLIFT_KINDS,
    UPSTREAM_KINDS,
    USES_GROUPS,
    Funnel,
    make_uplift,
)
from .incrementality import lift_caveat, lift_interval
from .metalearners import TLearner

CRITERIA = ("qini", "keep_at_30", "keep_at_50")
#: Independent 2-fold splits each candidate is cross-fitted on.
DEFAULT_REPEATS = 3
#: The estimator that ranks like the response model: kept unless another clearly beats it.
SAFE_KIND = "proportional"
#: The safe estimator of an outcome reached through another (see :class:`~relmail.learn.estimators.Funnel`).
FUNNEL_KIND = Funnel.kind
#: Bootstrap resamples of the validation customers for the winner's lead over the safe model.
BOOTSTRAP = 100
#: Bounds of the uplift calibration slope: calibration rescales, it never flattens or flips a ranking.
SLOPE_BOUNDS = (0.1, 1.5)


@dataclass(frozen=True)
class Upstream:
    """The outcome another is reached through, and the estimator chosen for it (the funnel's first factor)."""

    outcome: str
    kind: str
    base: str
    #: The upstream outcome per training row.
    y: np.ndarray
    #: The upstream outcome per sibling row (when the upstream estimator pools).
    siblings: np.ndarray | None = None


@dataclass
class Choice:
    kind: str
    base: str
    propensity_base: str
    criterion: str
    reason: str
    candidates: list[dict] = field(default_factory=list)
    #: ``(slope, intercept)`` mapping the winner's raw uplift to calibrated uplift.
    calibration: tuple[float, float] = (1.0, 0.0)


def candidate_names(kinds: Sequence[str] = UPLIFT_KINDS, bases: Sequence[str] = BASES) -> list[tuple[str, str]]:
    """(estimator, base learner) pairs; estimators bound to some learners skip the others.

    The funnel is left out: its base learner is the one chosen for its upstream outcome (see :func:`choose`).
    """
    return [(k, b) for k in kinds if k not in UPSTREAM_KINDS for b in bases if b in KIND_BASES.get(k, (b,))]


def choose(
    X: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    groups: np.ndarray,
    layout: Layout,
    seed: int = 0,
    kinds: Sequence[str] = UPLIFT_KINDS,
    bases: Sequence[str] = BASES,
    criterion: str = "qini",
    repeats: int = DEFAULT_REPEATS,
    siblings: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    upstream: Upstream | None = None,
) -> Choice:
    """Cross-fit every candidate on ``repeats`` splits of the training rows; pick the best mean ``criterion``.

    ``siblings`` is ``(X, y, customer ids)`` of other messages' sends (see
    :class:`~relmail.learn.interaction.Pooled`); without any, the pooling
    estimators are not candidates, and with them the pooled model stands in
    for the interaction model it extends. Sibling rows follow their customer into
    the same fold, and are never scored: every candidate is judged on this
    message's own sends and hold-outs only.

    ``upstream`` (see :class:`Upstream`) adds the funnel model of an outcome
    reached through another, and makes it the safe model.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown selection criterion {criterion!r}; choose from {', '.join(CRITERIA)}")
    if siblings is not None and len(siblings[0]) == 0:
        siblings = None
    names = [n for n in candidate_names(kinds, bases) if siblings is not None or n[0] not in POOLING_KINDS]
    if siblings is not None:
        # The pooled model is the interaction model fitted on more rows. As two
        # candidates they differ by little more than noise, and selection among
        # near-equals picks whichever the noise favours: on the design seeds of
        # bench/uplift.py it kept the interaction model where the pooled one
        # ranked the test half better. With siblings, only the pooled one runs.
        replaced = {POOLING_REPLACES[k] for k, _ in names if k in POOLING_REPLACES}
        names = [n for n in names if n[0] not in replaced]
    if upstream is not None:
        names.append((FUNNEL_KIND, upstream.base))
    if not names:
        raise ValueError(f"no uplift estimator runs on the base learners {', '.join(bases)} among {', '.join(kinds)}")
    repeats = max(1, int(repeats))
    figures: dict[tuple[str, str], list[dict]] = {name: [] for name in names}
    oof: dict[tuple[str, str], list[np.ndarray]] = {name: [] for name in names}
    briers: dict[str, list[float]] = {b: [] for b in bases}
    sends = t == 1
    for rep in range(repeats):
        # Repeat 0 is the split relmail has always used; the others are new, independent ones.
        salt = "validation" if rep == 0 else f"validation-{rep}"
        fold = split_mask(groups, seed, 0.5, salt=salt)
        pool = None if siblings is None else (siblings[0], siblings[1], split_mask(siblings[2], seed, 0.5, salt=salt))
        scores, response = _cross_fit(X, y, t, fold, layout, seed, names, kinds, bases, pool, upstream)
        for name, s in scores.items():
            oof[name].append(s)
            figures[name].append(
                {
                    "qini": metrics.qini_coefficient(s, y, t, seed),
                    "keep_at_30": metrics.keep_at(s, y, t, 0.3, seed),
                    "keep_at_50": metrics.keep_at(s, y, t, 0.5, seed),
                }
            )
        for base in bases:
            briers[base].append(metrics.brier(response[base][sends], y[sends]))
    rows = []
    for (kind, base), runs in figures.items():
        row: dict = {"kind": kind, "base": base}
        for key in CRITERIA:
            values = np.array([r[key] for r in runs], dtype=float)
            finite = values[np.isfinite(values)]
            row[key] = float(finite.mean()) if len(finite) else float("nan")
            row[f"{key}_spread"] = float(finite.std(ddof=1)) if len(finite) > 1 else 0.0
        rows.append(row)
    mean_brier = {b: float(np.mean(v)) for b, v in briers.items()}
    propensity_base = min(mean_brier, key=mean_brier.get)
    ranked = sorted(rows, key=lambda r: -_finite(r[criterion]))
    best = ranked[0]
    others = ", ".join(f"{r['kind']}/{r['base']} {_fmt(r[criterion])}" for r in ranked[1:4])
    splits = f"mean of {repeats} repeated 2-fold splits, spread {_fmt(best[criterion + '_spread'])}" if repeats > 1 else "one 2-fold split"
    reason = (
        f"{best['kind']}/{best['base']} has the highest cross-validated {criterion.replace('_', ' ')} "
        f"{_fmt(best[criterion])} ({splits}; next: {others}); it keeps {_fmt(best['keep_at_30'])} of incremental outcomes "
        f"at 30% volume and {_fmt(best['keep_at_50'])} at 50%."
    )
    safe_kind = SAFE_KIND if upstream is None else FUNNEL_KIND
    safe = [r for r in ranked if r["kind"] == safe_kind]
    if safe and best["kind"] != safe_kind:
        # One-standard-error rule: a heterogeneous model has to beat the
        # response-like one by more than the noise of the validation outcomes,
        # or its lead is as likely luck as skill and the safe model is kept.
        fallback = safe[0]
        lead, se = _lead(oof[(best["kind"], best["base"])], oof[(fallback["kind"], fallback["base"])], y, t, criterion, seed)
        if not lead > se:
            sent = np.asarray(t) == 1
            lowered = sent.any() and (~sent).any() and float(np.mean(y[sent])) < float(np.mean(y[~sent]))
            if upstream is not None:
                what = f"the {upstream.outcome} model ({upstream.kind}/{upstream.base}) times the outcome's chance after a {upstream.outcome}"
            elif lowered:
                # Its uplift is the response times the observed relative lift, negative here: the order reverses.
                what = ("which, as the held-out customers' rate was the higher in these data, predicts the e-mail lowers"
                        " everyone's chance and ranks the likeliest customers last")
            else:
                what = "which ranks like the response model"
            reason += (
                f" Its lead over {fallback['kind']}/{fallback['base']} ({_fmt(lead)}) is within one standard error"
                f" ({_fmt(se)}, bootstrap over validation customers), so {fallback['kind']}/{fallback['base']},"
                f" {what}, is chosen instead; it keeps {_fmt(fallback['keep_at_30'])} at 30% volume and"
                f" {_fmt(fallback['keep_at_50'])} at 50% (cross-validated {criterion.replace('_', ' ')} {_fmt(fallback[criterion])})."
            )
            best = fallback
        else:
            reason += f" Its lead over {fallback['kind']}/{fallback['base']} ({_fmt(lead)}) exceeds one standard error ({_fmt(se)})."
    reason += _signal(y, t) + _sign_caveat(best["kind"], best["base"], y, t, upstream)
    calibration = uplift_calibration(oof[(best["kind"], best["base"])], y, t)
    reason += (
        f" Uplift is calibrated on the validation predictions (slope {calibration[0]:.2f}, intercept {calibration[1]:+.4f})."
        f" Propensity uses {propensity_base} (Brier {mean_brier[propensity_base]:.4f})."
    )
    for r in rows:
        r.update({k: (None if not np.isfinite(v) else float(v)) for k, v in r.items() if k not in ("kind", "base")})
    return Choice(best["kind"], best["base"], propensity_base, criterion, reason, rows, calibration)


def _cross_fit(X, y, t, fold, layout, seed, names, kinds, bases, pool=None, upstream=None):
    """Out-of-fold uplift scores of every candidate, and response scores per base learner.

    ``pool``: sibling ``(X, y, fold)``; a pooling estimator fits on the
    siblings of the customers in its fitting half, and so does a funnel
    whose upstream estimator pools.
    """
    scores = {name: np.zeros(len(y)) for name in names}
    response = {b: np.zeros(len(y)) for b in bases}
    sib_fold = None if pool is None else pool[2]
    for held, sib_held in ((fold, sib_fold), (~fold, None if sib_fold is None else ~sib_fold)):
        fit = ~held
        # T-, X-learner and proportional model start from the same two group
        # models: fit those once per base learner and share them (exact, and
        # half the fits of the slow base learners).
        shared = {
            base: TLearner(layout, base, seed).fit(X[fit], y[fit], t[fit])
            for base in bases
            if any((k, base) in scores for k in ("t_learner", "x_learner"))
        }
        for kind, base in names:
            est = make_uplift(kind, layout, base, seed)
            if kind == FUNNEL_KIND:
                est = Funnel(layout, base, seed, upstream.kind)
                sib = None if pool is None else (pool[0][~sib_held], upstream.siblings[~sib_held])
                est.fit(X[fit], y[fit], t[fit], upstream=upstream.y[fit], siblings=sib)
            elif kind in USES_GROUPS and base in shared:
                est.fit(X[fit], y[fit], t[fit], groups=shared[base])
            elif kind in POOLING_KINDS:
                est.fit(X[fit], y[fit], t[fit], siblings=(pool[0][~sib_held], pool[1][~sib_held]))
            else:
                est.fit(X[fit], y[fit], t[fit])
            scores[(kind, base)][held] = est.predict_uplift(X[held])
        for base in bases:
            if base in shared:
                # The T-learner's send model is the response model: reuse it.
                response[base][held] = shared[base].predict_treated(X[held])
            else:
                response[base][held] = Propensity(layout, base, seed).fit(X[fit], y[fit], t[fit]).predict(X[held])
    return scores, response


def uplift_calibration(scores: list[np.ndarray], y, t) -> tuple[float, float]:
    """``(slope, intercept)`` so that ``intercept + slope * uplift`` is calibrated uplift.

    On randomized data the transformed outcome ``Z = y (t - g) / (g (1 - g))``
    has the true uplift as its mean, so regressing ``Z`` on out-of-fold
    predictions measures how far the predicted differences hold up: a
    slope below 1 means the model spreads customers further apart than
    they are. The plan compares uplifts of different messages' models, so
    they must be on the same, calibrated scale; ranking within a message is
    unchanged (the slope is kept positive).
    """
    t = np.asarray(t, dtype=float)
    g = float(t.mean())
    if g in (0.0, 1.0):
        return 1.0, 0.0
    z = np.asarray(y, dtype=float) * (t - g) / (g * (1 - g))
    u = np.concatenate(scores)
    z = np.tile(z, len(scores))
    if not np.isfinite(u).all() or u.var() <= 0:
        return 1.0, 0.0
    slope = float(np.clip(np.cov(z, u)[0, 1] / u.var(ddof=1), *SLOPE_BOUNDS))
    return slope, float(z.mean() - slope * u.mean())


def _lead(best: list[np.ndarray], other: list[np.ndarray], y, t, criterion: str, seed: int) -> tuple[float, float]:
    """Mean lead of ``best`` over ``other`` across the splits, and its bootstrap standard error.

    Each resample draws validation rows with replacement and scores both
    candidates' out-of-fold predictions on the same draw, so the noise the
    two share (which customers happened to respond) cancels in the lead.
    Every resample is normalized by the validation customers' own total
    incremental outcomes (:func:`~relmail.learn.metrics.incremental_total`),
    not the resample's, which on small data can be near zero by chance.
    """
    total = metrics.incremental_total(y, t, criterion)

    def figure(score, idx):
        if criterion == "qini":
            return metrics.qini_coefficient(score[idx], y[idx], t[idx], seed, total=total)
        return metrics.keep_at(score[idx], y[idx], t[idx], float(criterion.rsplit("_", 1)[1]) / 100, seed, total=total)

    everyone = np.arange(len(y))
    lead = float(np.nanmean([figure(b, everyone) - figure(o, everyone) for b, o in zip(best, other)]))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, len(y), len(y))
        draws.append(np.mean([figure(b, idx) - figure(o, idx) for b, o in zip(best, other)]))
    draws = np.asarray(draws, dtype=float)
    draws = draws[np.isfinite(draws)]
    return lead, float(draws.std(ddof=1)) if len(draws) > 1 else float("inf")


def _signal(y, t) -> str:
    """A sentence when the training customers' lift cannot be told from zero or is negative, else nothing.

    Every candidate's figures in the reason are shares of that lift (see :func:`lift_caveat`).
    """
    y, sent = np.asarray(y), np.asarray(t) == 1
    if not sent.any() or sent.all():
        return ""
    lift = float(np.mean(y[sent]) - np.mean(y[~sent]))
    said = lift_caveat(f" On these {len(y):,} training rows", lift, *lift_interval(y, t),
                       "the lead over the safe model and its standard error tell a ranking from chance")
    return said + "." if said else ""


def _sign_caveat(kind: str, base: str, y, t, upstream: Upstream | None) -> str:
    """A sentence when the chosen model gives every customer the sign of a lift that cannot be told from zero.

    The plan then holds no one back on its uplift (see
    :meth:`~relmail.learn.TrainedModel.uplift_unfounded`, which decides it there).
    """
    lift = "lift"
    if kind == FUNNEL_KIND and upstream is not None:
        kind, base, y, lift = upstream.kind, upstream.base, upstream.y, f"{upstream.outcome} lift (the funnel's sign)"
    if kind not in UNIFORM_SIGN:
        return ""
    low, high = lift_interval(y, t)
    if not low <= 0.0 <= high:
        return ""
    return (f" As {kind}/{base} gives every customer the sign of the training customers' {lift}, which cannot be told"
            f" from zero, the plan holds no one back on this model's uplift (NEGATIVE_UPLIFT).")


def _finite(value: float) -> float:
    return value if value is not None and np.isfinite(value) else -np.inf


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"
