"""Hillstrom e-mail experiment: does relmail's learning loop find who an e-mail helps?

MineThatData's 64,000 customers were randomly sent a Mens e-mail, a Womens
e-mail or nothing (a third each), and their visits, conversions and spend
were recorded for two weeks. This benchmark feeds that experiment to
relmail the way a user would — customers through ``relmail import
customers``, the experiment as one historical run through ``relmail runs
import`` (the no-e-mail third as hold-outs of both messages), outcomes
through ``relmail import events`` — then, for each seed, trains with the
library call behind ``relmail model train`` on a 50% customer split and
evaluates on the other half with the one behind ``relmail model evaluate``.

Figures per arm (``mens``, ``womens``) and outcome (``visit``,
``conversion``): the share of incremental outcomes kept at 30% and 50% of
volume, next to random and response-model targeting in the same run. The
``plan`` arm is the whole decision: each test customer gets the message with
the larger predicted uplift (or nothing), the top 30%/50% of customers by
that uplift are mailed, and the outcome rate of that policy is estimated on
the randomized test half by inverse-propensity weighting (assignment
probability 1/3), against random targeting of the better single message
(chosen on the training half) at the same volume; their per-seed
difference, scored on the same customers, is reported with its spread.

    python bench/hillstrom.py                 # full data, 5 seeds, table
    python bench/hillstrom.py --json          # one JSON object
    python bench/hillstrom.py --rows 8000 --seeds 2   # quick
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from relmail.importers import import_file
from relmail.learn import metrics, store
from relmail.learn.dataset import split_mask
from relmail.learn.evaluate import evaluate
from relmail.learn.history import import_history
from relmail.learn.model import load_model
from relmail.learn.outcomes import load_outcomes
from relmail.learn.train import TrainOptions, limited_threads, train
from relmail.project import init_project
from relmail.store.db import make_engine, upgrade

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hillstrom.csv"
FEATURES = ("recency", "history_segment", "history", "mens", "womens", "zip_code", "newbie", "channel")
ARMS = {"Mens E-Mail": "mens", "Womens E-Mail": "womens", "No E-Mail": "none"}
OUTCOMES = ("visit", "conversion")
AS_OF = datetime(2008, 3, 3, 9, 0, tzinfo=UTC)
VOLUMES = (0.3, 0.5)


def load_csv(path: Path, rows: int | None) -> list[dict]:
    with open(path, newline="") as fh:
        data = list(csv.DictReader(fh))
    if rows and rows < len(data):
        # A seeded sample, not the head: the file may be ordered.
        idx = np.sort(np.random.default_rng(12345).choice(len(data), rows, replace=False))
        data = [data[i] for i in idx]
    return data


def build_store(data: list[dict], folder: Path):
    """A relmail project whose ledger holds the experiment, loaded by relmail's importers."""
    project = init_project(folder / "shop", name="Hillstrom")
    engine = make_engine(f"sqlite:///{folder / 'hillstrom.db'}")
    upgrade(engine)
    ids = [f"H{i + 1:05d}" for i in range(len(data))]
    customers, history, events = folder / "customers.csv", folder / "history.csv", folder / "events.csv"
    with open(customers, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "email", "locale", "timezone", "created_at", *FEATURES])
        for cid, row in zip(ids, data):
            # Hillstrom has no sign-up date; one year before the mailing is as good as any.
            w.writerow([cid, f"{cid.lower()}@hillstrom.example", "en_US", "America/New_York",
                        (AS_OF - timedelta(days=365)).isoformat(), *(row[f] for f in FEATURES)])
    with open(history, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["run_id", "campaign", "window", "as_of", "customer_id", "message_id", "action", *FEATURES])
        for cid, row in zip(ids, data):
            arm = ARMS[row["segment"]]
            feats = [row[f] for f in FEATURES]
            if arm == "none":
                # The no-e-mail third is the control group of both messages.
                for message in ("mens", "womens"):
                    w.writerow(["hillstrom-2008", "hillstrom", "2008-W10", AS_OF.isoformat(), cid, message, "holdout", *feats])
            else:
                w.writerow(["hillstrom-2008", "hillstrom", "2008-W10", AS_OF.isoformat(), cid, arm, "send", *feats])
    with open(events, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["event_id", "customer_id", "type", "occurred_at", "value"])
        for i, (cid, row) in enumerate(zip(ids, data)):
            # Spread over the two weeks after the send; Hillstrom only says "within two weeks".
            when = (AS_OF + timedelta(days=1 + i % 13, hours=i % 11)).isoformat()
            if row["visit"] == "1":
                w.writerow([f"{cid}-visit", cid, "view", when, ""])
            if row["conversion"] == "1":
                w.writerow([f"{cid}-purchase", cid, "purchase", when, row["spend"]])
    import_file(engine, "customers", customers)
    import_history(engine, history)
    import_file(engine, "events", events)
    return project, engine


def plan_figures(project, table, seed: int, outcome: str) -> dict:
    """IPW outcome rate of relmail's plan vs random targeting of the better message, on the test half."""
    models = {arm: load_model(project, arm) for arm in ("mens", "womens")}
    first = {}
    for i, cid in enumerate(table.customer_id):
        first.setdefault(cid, i)
    rows = np.fromiter(first.values(), dtype=np.int64)
    cids = table.customer_id[rows]
    test = split_mask(cids, seed, 0.5)
    # A customer's arm in the experiment: the message of a send, or none.
    arm_of = {c: "none" for c in cids}
    for c, m, t in zip(table.customer_id, table.message_id, table.treated):
        if t:
            arm_of[c] = m
    assigned = np.array([arm_of[c] for c in cids[test]], dtype=object)
    y = table.outcomes[outcome][rows][test]
    feats = [table.features[i] for i in rows[test]]
    with limited_threads(1):
        preds = {arm: m.predict(feats, outcome) for arm, m in models.items()}
    up = np.vstack([preds["mens"]["uplift"], preds["womens"]["uplift"]])
    resp = np.vstack([preds["mens"]["p_positive_sent"], preds["womens"]["p_positive_sent"]])
    names = np.array(["mens", "womens"], dtype=object)
    # The better single message, judged on the training half only.
    train_rows = ~split_mask(table.customer_id, seed, 0.5)
    lift = {}
    for arm in ("mens", "womens"):
        m = train_rows & (table.message_id == arm)
        yy, tt = table.outcomes[outcome][m], table.treated[m]
        lift[arm] = yy[tt == 1].mean() - yy[tt == 0].mean()
    better = max(lift, key=lift.get)
    n = len(y)
    none = np.array(["none"] * n, dtype=object)
    v_none = metrics.ipw_value(y, assigned, none, 1 / 3)
    v_all = metrics.ipw_value(y, assigned, np.array([better] * n, dtype=object), 1 / 3)

    def policy(scores, positive_only):
        best = scores.argmax(axis=0)
        score = scores.max(axis=0)
        out = {}
        for v in VOLUMES:
            order = np.argsort(-score, kind="stable")[: int(round(v * n))]
            if positive_only:
                order = order[score[order] > 0]
            pol = none.copy()
            pol[order] = names[best[order]]
            out[v] = metrics.ipw_value(y, assigned, pol, 1 / 3)
        return out

    plan, response = policy(up, True), policy(resp, False)
    res = {"better_message": better, "rate_nothing": v_none, "rate_all_better": v_all}
    for v in VOLUMES:
        k = round(v * 100)
        rnd = metrics.ipw_value_stochastic(y, assigned, {better: v, "none": 1 - v}, 1 / 3)
        res[f"rate_at_{k}"] = plan[v]
        res[f"random_rate_at_{k}"] = rnd
        res[f"response_rate_at_{k}"] = response[v]
        gain = v_all - v_none
        res[f"keep_at_{k}"] = (plan[v] - v_none) / gain if gain else float("nan")
        res[f"random_keep_at_{k}"] = (rnd - v_none) / gain if gain else float("nan")
        res[f"response_keep_at_{k}"] = (response[v] - v_none) / gain if gain else float("nan")
    return res


def run(args) -> dict:
    data = load_csv(Path(args.data), args.rows)
    per_seed: dict[str, list[dict]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="relmail-hillstrom-") as tmp:
        folder = Path(tmp)
        project, engine = build_store(data, folder)
        loaded = time.perf_counter() - started
        table = load_outcomes(engine, now=AS_OF + timedelta(days=30))
        root = store.models_dir(project)
        for seed in range(args.seeds):
            options = TrainOptions.from_project(project, split_seed=seed, test_share=0.5, outcomes=OUTCOMES)
            results = train(engine, root, ["mens", "womens"], options, table=table)
            chosen = {(r["message"], o): s["chosen"] for r in results for o, s in r["selection"].items()}
            for ev in evaluate(engine, root, ["mens", "womens"], table=table):
                for outcome, entry in ev["outcomes"].items():
                    if "uplift" not in entry:
                        continue  # too few outcomes among hold-outs (small --rows)
                    up = entry["uplift"]
                    per_seed.setdefault(f"{ev['message']}/{outcome}", []).append(
                        {"chosen": chosen[(ev["message"], outcome)], "model": up["model"], "random": up["random"], "response": up["response"]}
                    )
            for outcome in OUTCOMES:
                if not all(f"{arm}/{outcome}" in per_seed for arm in ("mens", "womens")):
                    continue
                per_seed.setdefault(f"plan/{outcome}", []).append(plan_figures(project, table, seed, outcome))
            if not args.quiet:
                print(f"seed {seed} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        engine.dispose()
    return summarize(per_seed, len(data), args.seeds, loaded, time.perf_counter() - started)


def _mean_sd(values):
    a = np.asarray(values, dtype=float)
    return float(np.nanmean(a)), float(np.nanstd(a, ddof=1)) if len(a) > 1 else 0.0


def summarize(per_seed, rows, seeds, load_seconds, seconds) -> dict:
    out = {"_meta": {"rows": rows, "seeds": seeds, "test_share": 0.5, "load_seconds": round(load_seconds, 1), "seconds": round(seconds, 1)}}
    for key, runs in per_seed.items():
        entry = {}
        if key.startswith("plan/"):
            for k in (30, 50):
                for prefix in ("", "random_", "response_"):
                    for what in ("keep", "rate"):
                        mean, sd = _mean_sd([r[f"{prefix}{what}_at_{k}"] for r in runs])
                        entry[f"{prefix}{what}_at_{k}"] = mean
                        entry[f"{prefix}{what}_at_{k}_spread"] = sd
                # Plan and random targeting are scored on the same test half, so
                # their per-seed difference is far less noisy than either rate.
                mean, sd = _mean_sd([r[f"rate_at_{k}"] - r[f"random_rate_at_{k}"] for r in runs])
                entry[f"lift_over_random_at_{k}"] = mean
                entry[f"lift_over_random_at_{k}_spread"] = sd
                entry[f"seeds_beating_random_at_{k}"] = sum(r[f"rate_at_{k}"] > r[f"random_rate_at_{k}"] for r in runs)
            entry["better_message"] = [r["better_message"] for r in runs]
            entry["rate_nothing"] = _mean_sd([r["rate_nothing"] for r in runs])[0]
            entry["rate_all_better"] = _mean_sd([r["rate_all_better"] for r in runs])[0]
        else:
            for who, prefix in (("model", ""), ("random", "random_"), ("response", "response_")):
                for k in (30, 50):
                    mean, sd = _mean_sd([r[who][f"keep_at_{k}"] for r in runs])
                    entry[f"{prefix}keep_at_{k}"] = mean
                    entry[f"{prefix}keep_at_{k}_spread"] = sd
                entry[f"{prefix}qini"] = _mean_sd([r[who]["qini"] for r in runs])[0]
            entry["chosen"] = [r["chosen"] for r in runs]
            entry["keep_at_50_per_seed"] = [r["model"]["keep_at_50"] for r in runs]
        out[key] = entry
    return out


def print_table(res: dict) -> None:
    meta = res["_meta"]
    print(f"Hillstrom: {meta['rows']:,} customers, {meta['seeds']} seeds, 50% train / 50% test "
          f"(load {meta['load_seconds']} s, total {meta['seconds']} s); mean ± spread (sd) over seeds\n")
    head = f"{'arm/outcome':<18} {'keep@30':>14} {'keep@50':>14} {'random@30':>10} {'random@50':>10} {'response@30':>12} {'response@50':>12}"
    print(head)
    print("-" * len(head))
    for key, e in res.items():
        if key == "_meta":
            continue
        print(f"{key:<18} {e['keep_at_30']:>7.3f} ± {e['keep_at_30_spread']:.3f} {e['keep_at_50']:>7.3f} ± {e['keep_at_50_spread']:.3f} "
              f"{e['random_keep_at_30']:>10.3f} {e['random_keep_at_50']:>10.3f} {e['response_keep_at_30']:>12.3f} {e['response_keep_at_50']:>12.3f}")
    print("\nWhole plan, outcome rate per test customer (IPW on the randomized half):")
    head = (f"{'outcome':<12} {'volume':>6} {'relmail plan':>16} {'random better msg':>18} {'plan - random':>17} {'seeds won':>9} "
            f"{'response plan':>14} {'nothing':>8} {'all better':>10}")
    print(head)
    print("-" * len(head))
    for outcome in OUTCOMES:
        e = res.get(f"plan/{outcome}")
        if not e:
            continue
        for k in (30, 50):
            print(f"{outcome:<12} {k:>5}% {e[f'rate_at_{k}']:>8.4f} ± {e[f'rate_at_{k}_spread']:.4f} {e[f'random_rate_at_{k}']:>18.4f} "
                  f"{e[f'lift_over_random_at_{k}']:>+8.4f} ± {e[f'lift_over_random_at_{k}_spread']:.4f} "
                  f"{e[f'seeds_beating_random_at_{k}']:>5}/{meta['seeds']:<3} "
                  f"{e[f'response_rate_at_{k}']:>14.4f} {e['rate_nothing']:>8.4f} {e['rate_all_better']:>10.4f}")
    print("\nChosen estimators per seed (keep@50 on the test half):")
    for key, e in res.items():
        if "chosen" in e:
            print(f"  {key:<18} {', '.join(f'{c} ({k:.3f})' for c, k in zip(e['chosen'], e['keep_at_50_per_seed']))}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="hillstrom.csv (default: ../shared/data/hillstrom.csv)")
    parser.add_argument("--rows", type=int, default=None, help="Use a seeded sample of this many customers (default: all 64,000).")
    parser.add_argument("--seeds", type=int, default=5, help="Number of split seeds (default 5).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    parser.add_argument("--quiet", action="store_true", help="No progress lines on stderr.")
    args = parser.parse_args(argv)
    res = run(args)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print_table(res)


if __name__ == "__main__":
    main()
