"""``relmail model evaluate`` as a library call: the saved models on their test part.

The test part is the customers the model's split (seed and share in its
sidecar) kept out of training. Propensity is judged by AUC, Brier score and
calibration; uplift by the Qini coefficient and the share of incremental
outcomes kept at 10/30/50% of volume, next to two baselines computed on the
same rows: random targeting (averaged over seeded shuffles) and
response-model targeting (ranking by ``P(outcome | sent)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy.engine import Engine

from ..errors import ModelError
from . import metrics, store
from .dataset import split_mask
from .incrementality import lift_caveat, lift_interval
from .model import TrainedModel, from_payload
from .outcomes import OutcomeTable, load_outcomes
from .train import limited_threads

RANDOM_SHUFFLES = 20


def uplift_report(uplift: np.ndarray, response: np.ndarray, y: np.ndarray, t: np.ndarray, volumes=metrics.VOLUMES, seed: int = 0) -> dict:
    """Model vs random vs response-model targeting on one randomized sample."""

    def figures(score, s=seed):
        out = {"qini": metrics.qini_coefficient(score, y, t, s)}
        for v in volumes:
            out[f"keep_at_{round(v * 100)}"] = metrics.keep_at(score, y, t, v, s)
        return out

    rng = np.random.default_rng(seed)
    shuffles = [figures(rng.random(len(y)), s) for s in range(RANDOM_SHUFFLES)]
    rand = {k: float(np.nanmean([f[k] for f in shuffles])) for k in shuffles[0]}
    return {"model": figures(uplift), "random": rand, "response": figures(response)}


def unreliable_lifts(results: Sequence[dict]) -> list[str]:
    """One sentence per message and outcome whose test part's lift makes qini and keep@K hard to read (see :func:`lift_caveat`)."""
    out = []
    for res in results:
        for outcome, entry in res["outcomes"].items():
            if "lift_interval" not in entry:
                continue
            said = lift_caveat(f"{res['message']}/{outcome}: on these {res['rows']:,} test rows", entry["observed_lift"],
                               *entry["lift_interval"], "evaluate on more customers: a larger --test-share, more runs")
            if said:
                out.append(said)
    return out


def propensity_report(p: np.ndarray, y: np.ndarray) -> dict:
    return {
        "auc": metrics.auc(p, y),
        "brier": metrics.brier(p, y) if len(y) else float("nan"),
        "calibration_error": metrics.calibration_error(p, y),
        "mean_predicted": float(np.mean(p)) if len(p) else float("nan"),
        "observed_rate": float(np.mean(y)) if len(y) else float("nan"),
        "reliability": metrics.reliability(p, y),
    }


def evaluate_model(model: TrainedModel, table: OutcomeTable, threads: int = 1) -> dict:
    """Figures of one model on the test part of ``table`` (that message's decisions)."""
    with limited_threads(threads):
        return _evaluate_model(model, table)


def _evaluate_model(model: TrainedModel, table: OutcomeTable) -> dict:
    training = model.meta["training"]
    share, seed = float(training["test_share"]), int(training["split_seed"])
    if share <= 0:
        raise ModelError(f"model '{model.key}' v{model.version} was trained on all data (test share 0); retrain with --test-share to evaluate it")
    test = table.subset(split_mask(table.mailbox, seed, share))
    X = model.encode(test.features)
    t = test.treated
    out = {"message": model.key, "version": model.version, "rows": len(test), "sends": int(t.sum()), "holdouts": int((t == 0).sum()),
           # The test customers are split_mask(mailboxes, seed, test_share): 'model predict --split test' lists them.
           "split": {"seed": seed, "test_share": share, "customers": len(set(test.mailbox))}, "outcomes": {}}
    for name in model.outcomes:
        y = test.outcomes[name]
        pred = model.predict(X, name)
        entry = {
            "chosen": model.meta["selection"][name].get("chosen"),
            "propensity": propensity_report(pred["p_positive_sent"][t == 1], y[t == 1]),
        }
        if name in model.uplift and (t == 0).any():
            entry["uplift"] = uplift_report(pred["uplift"], pred["p_positive_sent"], y, t, seed=seed)
            entry["observed_lift"] = float(y[t == 1].mean() - y[t == 0].mean()) if (t == 1).any() else float("nan")
            entry["lift_interval"] = list(lift_interval(y, t))
        out["outcomes"][name] = entry
    return out


def evaluate(
    engine: Engine,
    root,
    messages: Sequence[str] | None = None,
    window: timedelta | None = None,
    now: datetime | None = None,
    table: OutcomeTable | None = None,
) -> list[dict]:
    """Evaluate the newest model of each message (all trained messages by default)."""
    metas = store.newest_models(root, messages)
    results = []
    for meta in metas:
        model = from_payload(meta, store.load_payload(root, meta))
        win = window or timedelta(days=float(meta["training"]["window_days"]))
        part = table if table is not None else load_outcomes(engine, win, messages=[model.key], now=now)
        part = part.subset(part.message_id == model.key)
        results.append(evaluate_model(model, part))
    return results
