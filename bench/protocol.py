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


#: The figures target 2's rule (never below the better of the response model and the best peer) judges.
RULE_FIGURES = ("keep_at_30", "keep_at_50")


def _mean(summary: dict) -> float:
    return summary["mean"] if summary["mean"] is not None else -math.inf


def rule_for_each(runs: list[dict], methods: dict, contenders) -> dict:
    """Target 2's rule held to every contender in turn, on the same seeds, per figure.

    ``runs``: one arm's per-seed results (``run["methods"][name][figure]``);
    ``methods``: their means (:func:`mean_se` per method and figure);
    ``contenders``: relmail, the peers and ``"response"``. relmail's rival is
    the better of the response model and the best peer (by mean keep@50); a
    contender's is the better of the response model and the best of the
    *other* contenders (relmail among them; the response model's is the best
    of the others), so each is judged exactly as relmail is. Whether any
    method passes the rule says whether it is a bar or a coin: a method level
    with its best rival falls below it by more than one paired standard
    error on about one comparison in six by chance alone.
    """
    present = [m for m in contenders if m in methods]
    out = {}
    for m in present:
        others = [o for o in present if o not in (m, "response")]
        best = max(others, key=lambda o: _mean(methods[o]["keep_at_50"]))
        out[m] = {}
        for f in RULE_FIGURES:
            rivals = [best] if m == "response" else ["response", best]
            rival = max(rivals, key=lambda o: _mean(methods[o][f]))
            p = paired([r["methods"][m][f] for r in runs], [r["methods"][rival][f] for r in runs])
            out[m][f] = {"rival": rival, "diff": p["diff"], "se": p["se"],
                         "below": p["diff"] is not None and p["se"] is not None and p["diff"] < -p["se"]}
    return out


def held_to_each(res: dict) -> dict:
    """Per contender, over every arm of ``res`` with a ``rule``: the checks, how many it fails, and where."""
    counts: dict[str, dict] = {}
    for data in ("hillstrom", "simulator"):
        for key, entry in res.get(data, {}).items():
            for m, figs in entry.get("rule", {}).items():
                c = counts.setdefault(m, {"checks": 0, "below": 0, "where": []})
                for f, check in figs.items():
                    c["checks"] += 1
                    if check["below"]:
                        c["below"] += 1
                        c["where"].append(f"{data}/{key} {f}")
    return counts
