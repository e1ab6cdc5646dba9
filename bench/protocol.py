"""The evaluation protocol: which seeds, which figures, and how two methods are compared.

* **Design seeds** (0–4) are for development: try an idea, look, change it.
* **Evaluation seeds** are drawn from one printed master seed, at least 20
  of them, disjoint from the design seeds; they are run once, for the
  figures that are reported.
* A figure is a **mean over seeds with its standard error** (sd / √n).
* Every comparison is **paired**: both methods were fitted on the same
  training half and scored on the same test customers of each seed, so the
  per-seed difference cancels what the two share (which customers happened
  to respond); reported as the mean difference, its standard error and the
  seeds won out of N.
"""

from __future__ import annotations

import math

import numpy as np

from relmail.learn import metrics

DESIGN_SEEDS = (0, 1, 2, 3, 4)
DEFAULT_MASTER_SEED = 20261204
EVALUATION_SEEDS = 20
FIGURES = ("keep_at_30", "keep_at_50", "qini")
#: Points of the Qini curves kept per seed (share of volume 0, 0.01, ..., 1).
GRID = np.linspace(0.0, 1.0, 101)


def evaluation_seeds(master: int, count: int = EVALUATION_SEEDS) -> list[int]:
    """``count`` distinct split seeds drawn from ``master``, none of them a design seed."""
    rng = np.random.default_rng(master)
    seeds: list[int] = []
    while len(seeds) < count:
        s = int(rng.integers(1_000, 2**31 - 1))
        if s not in seeds and s not in DESIGN_SEEDS:
            seeds.append(s)
    return seeds


def figures(score, y, t, seed: int) -> dict:
    """Qini and keep@30/50 as ``relmail model evaluate`` computes them (same tie-break seed)."""
    return {
        "qini": metrics.qini_coefficient(score, y, t, seed),
        "keep_at_30": metrics.keep_at(score, y, t, 0.3, seed),
        "keep_at_50": metrics.keep_at(score, y, t, 0.5, seed),
    }


def expected_keep(score, effect, volume: float, seed: int) -> float:
    """Share of the *true* incremental outcomes kept by mailing the top ``volume``: no outcome noise."""
    effect = np.asarray(effect, dtype=float)
    total = effect.sum()
    if total == 0:
        return float("nan")
    top = metrics.ranking(score, seed)[: int(round(volume * len(effect)))]
    return float(effect[top].sum() / total)


def qini_on_grid(score, y, t, seed: int) -> np.ndarray:
    """The Qini curve as a share of all incremental outcomes, at the :data:`GRID` volumes."""
    frac, inc = metrics.qini_curve(score, y, t, seed)
    total = inc[-1]
    return np.interp(GRID, frac, inc / total if total else inc)


def mean_se(values) -> dict:
    a = np.asarray([v for v in values if v is not None], dtype=float)
    a = a[np.isfinite(a)]
    n = len(a)
    if n == 0:
        return {"mean": None, "se": None, "n": 0}
    return {"mean": float(a.mean()), "se": float(a.std(ddof=1) / math.sqrt(n)) if n > 1 else None, "n": n}


def paired(a, b) -> dict:
    """``a - b`` seed by seed: mean difference, its standard error, and the seeds where ``a`` is ahead."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    n = len(d)
    return {
        "diff": float(d.mean()) if n else None,
        "se": float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
        "wins": int((d > 0).sum()),
        "ties": int((d == 0).sum()),
        "n": n,
    }
