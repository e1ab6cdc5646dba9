"""Did a campaign work at all? Lift per message, sends against hold-outs.

For each run with hold-outs, per message and outcome: the outcome rate of
sends and of hold-outs, their difference (the lift) with Newcombe's hybrid
score interval (Wilson intervals combined; sound for small groups and rates
near 0, where the Wald interval is not), and revenue per customer with a
Welch interval. A lift whose interval excludes 0 is marked significant.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from statistics import NormalDist

import numpy as np
from sqlalchemy.engine import Engine

from ..errors import NotFound
from .outcomes import DEFAULT_WINDOW, OUTCOMES, OutcomeTable, load_outcomes


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """Difference p1 - p2 with Newcombe's hybrid score interval: (diff, low, high)."""
    p1 = x1 / n1 if n1 else 0.0
    p2 = x2 / n2 if n2 else 0.0
    l1, u1 = wilson(x1, n1, confidence)
    l2, u2 = wilson(x2, n2, confidence)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def lift_interval(y: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """The 95% Newcombe interval of the observed lift of outcomes ``y`` (sends' rate minus hold-outs', ``t`` 1 for a send).

    keep@K and the Qini coefficient are shares of this lift: when its interval
    holds zero, they divide by noise and say nothing about the ranking.
    """
    y, t = np.asarray(y), np.asarray(t)
    _, low, high = newcombe(int(y[t == 1].sum()), int((t == 1).sum()), int(y[t == 0].sum()), int((t == 0).sum()))
    return float(low), float(high)


def lift_caveat(where: str, lift: float, low: float, high: float, advice: str) -> str:
    """A sentence when a lift cannot be told from zero or is negative, else nothing: ``where`` begins it.

    The qini and keep@K figures of every ranking are shares of the size of
    that lift: near zero their size means little (``advice`` says what tells
    more), and below zero mailing everyone loses outcomes, so random
    targeting keeps about -K. A figure must not read as a finding then.
    """
    unclear, negative = low <= 0 <= high, lift < 0
    if not (unclear or negative):
        return ""
    said = f"{where} the e-mail's lift is {lift:+.4f} (95% CI [{low:+.4f}, {high:+.4f}])"
    if unclear:
        said += f", which cannot be told from zero: qini and keep@K are shares of it, so their size means little ({advice})"
    if negative:
        said += ("; as it is negative, mailing everyone loses outcomes: keep@K is a share of the size of that loss,"
                 " random targeting keeps about -K, and a ranking that puts the customers the e-mail helps first"
                 " keeps more")
    return said


def welch(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Difference of means with a normal-approximation Welch interval."""
    if len(a) < 2 or len(b) < 2:
        return float(np.mean(a) - np.mean(b)) if len(a) and len(b) else float("nan"), float("nan"), float("nan")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    d = float(a.mean() - b.mean())
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return d, d - z * se, d + z * se


def lift_table(table: OutcomeTable, outcomes=OUTCOMES, confidence: float = 0.95) -> list[dict]:
    """One entry per (run, message) that has both sends and hold-outs."""
    out = []
    keys = sorted(set(zip(table.run_id, table.message_id)))
    for run_id, message_id in keys:
        mask = (table.run_id == run_id) & (table.message_id == message_id)
        t = table.treated[mask]
        n1, n0 = int((t == 1).sum()), int((t == 0).sum())
        if n1 == 0 or n0 == 0:
            continue
        entry = {"run": run_id, "message": message_id, "sends": n1, "holdouts": n0, "outcomes": {}}
        for name in outcomes:
            y = table.outcomes[name][mask]
            x1, x0 = int(y[t == 1].sum()), int(y[t == 0].sum())
            d, lo, hi = newcombe(x1, n1, x0, n0, confidence)
            rate0 = x0 / n0
            entry["outcomes"][name] = {
                "rate_sent": x1 / n1,
                "rate_holdout": rate0,
                "lift": d,
                "low": lo,
                "high": hi,
                "relative_lift": d / rate0 if rate0 > 0 else None,
                "incremental": d * n1,
                "significant": lo > 0 or hi < 0,
            }
        rev = table.revenue[mask]
        d, lo, hi = welch(rev[t == 1], rev[t == 0], confidence)
        entry["revenue_per_customer"] = {"sent": float(rev[t == 1].mean()), "holdout": float(rev[t == 0].mean()),
                                         "lift": d, "low": lo, "high": hi, "significant": bool(lo > 0 or hi < 0)}
        out.append(entry)
    return out


def incrementality(
    engine: Engine,
    run: str | None = None,
    window: timedelta = DEFAULT_WINDOW,
    now: datetime | None = None,
    confidence: float = 0.95,
) -> list[dict]:
    """Lift per message of one run (or of every closed run with hold-outs)."""
    if run:
        from ..planning.runs import resolve_run

        with engine.connect() as conn:
            run = resolve_run(conn, run)  # an id or CAMPAIGN:last; NotFound names the newest runs
    table = load_outcomes(engine, window, runs=[run] if run else None, now=now)
    if run and len(table) == 0:
        raise NotFound(f"run '{run}' has no delivered or held-out decisions whose {window.days}-day outcome window has closed")
    return lift_table(table, confidence=confidence)
