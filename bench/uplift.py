"""Uplift benchmark: relmail against its peers under a protocol that cannot flatter.

Two data sets. **Hillstrom** (MineThatData's randomized e-mail experiment,
64,000 customers: Mens e-mail, Womens e-mail or nothing), loaded through
relmail's importers (``bench/hillstrom.py``). The **simulator**
(``bench/simulator.py``): randomized experiments with three messages whose
per-customer effects are known, including a group the e-mail hurts, so
each method's ranking is also measured against the oracle's, and against
a learner that knows the simulator's functional form (``well_specified``:
the best any learner could do with the training half).

For every split seed, relmail is trained by the code behind ``relmail
model train`` on half the customers and scored on the other half by the
code behind ``relmail model evaluate``; scikit-uplift's TwoModels,
ClassTransformation and SoloModel (logistic and gradient boosting) and a
logistic response model are fitted on the same training half and scored on
the same test customers (``bench/peers.py``). Seeds: the design seeds
(0–4, ``--design``) for development; by default at least 20 evaluation
seeds drawn from one printed master seed (``bench/protocol.py``). Every
figure is a mean over seeds with its standard error, every comparison
paired. The issue's targets are printed met or not; target 2's rule is also
held to every method in turn (``protocol.rule_for_each``), so the output
says whether any method could pass it.

    python bench/uplift.py --quick            # development: 2 design seeds, smaller data (minutes)
    python bench/uplift.py --design           # the 5 design seeds, full data
    python bench/uplift.py --json             # the evaluation seeds: the reported figures
    python bench/uplift.py --figure qini.png  # where the Qini figure goes (default: the temp folder)

Needs the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

import hillstrom
import protocol
import uplift_jobs
from peers import PEERS
from simulator import WELL_SPECIFIED

#: The peer the well-specified learner's lead is measured against (scikit-uplift's T-learner).
T_LEARNER = "two_models/logistic"
#: The Hillstrom arm the issue's headline target is about.
HEADLINE = "hillstrom/womens/visit"
TARGET_LEAD = 0.02
ORACLE_SHARE = 0.9
SIM_CUSTOMERS = 20_000

_TABLE = None  # the Hillstrom decisions, inherited by forked workers


def _hillstrom(seed: int) -> dict:
    return uplift_jobs.hillstrom_job(_TABLE, seed)


def run(args) -> dict:
    global _TABLE
    if args.quick:
        seeds, kind = list(protocol.DESIGN_SEEDS[:2]), "design (quick)"
    elif args.design:
        seeds, kind = list(protocol.DESIGN_SEEDS), "design"
    else:
        seeds, kind = protocol.evaluation_seeds(args.master_seed, args.seeds), "evaluation"
    rows = args.rows or (16_000 if args.quick else None)
    customers = args.customers or (16_000 if args.quick else SIM_CUSTOMERS)
    started = time.perf_counter()
    print(f"protocol: {kind} seeds {seeds}" + ("" if kind != "evaluation" else f" (master seed {args.master_seed})"), file=sys.stderr)
    if args.only in (None, "hillstrom"):
        with tempfile.TemporaryDirectory(prefix="relmail-hillstrom-") as tmp:
            _TABLE = hillstrom.load(Path(args.data), Path(tmp), rows)
    # Interleaved, so an interrupted run (see --progress) has figures of both data sets.
    jobs = [(what, s) for s in seeds for what in ("hillstrom", "simulator") if args.only in (None, what)]
    loaded = time.perf_counter() - started
    proto = {"seeds": kind, "master_seed": args.master_seed if kind == "evaluation" else None, "split_seeds": seeds,
             "test_share": uplift_jobs.TEST_SHARE, "hillstrom_rows": len(set(_TABLE.customer_id)) if _TABLE is not None else None,
             "simulated_customers": customers if args.only in (None, "simulator") else None}
    log = open(args.progress, "a", encoding="utf-8") if args.progress else None  # noqa: SIM115 - one line per finished seed
    if log:
        log.write(json.dumps({"protocol": proto}) + "\n")
    calls = [partial(_hillstrom, s) if what == "hillstrom" else partial(uplift_jobs.simulator_job, customers, s) for what, s in jobs]
    results: dict[str, list[dict]] = {"hillstrom": [], "simulator": []}
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(max(1, min(args.processes, 2))) as pool:
        for (what, seed), res in zip(jobs, pool.imap(_call, calls)):
            results[what].append(res)
            print(f"{what} seed {seed} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
            if log:
                log.write(json.dumps({"data": what, "result": res}, default=_plain) + "\n")
                log.flush()
    if log:
        log.close()
    out = {
        "protocol": proto,
        "hillstrom": summarize(results["hillstrom"]),
        "simulator": summarize(results["simulator"]),
        "seconds": {"load": round(loaded, 1), "total": round(time.perf_counter() - started, 1)},
    }
    out["targets"] = targets(out)
    if results["hillstrom"]:
        out["figure"] = draw(results["hillstrom"], out["hillstrom"], args.figure)
    return out


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def from_progress(path: str) -> dict:
    """A ``--progress`` file's finished seeds as a ``--json`` result (an interrupted run says how far it got)."""
    lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    proto = dict(lines[0]["protocol"])
    results: dict[str, list[dict]] = {"hillstrom": [], "simulator": []}
    for line in lines[1:]:
        results[line["data"]].append(line["result"])
    done = sorted({r["seed"] for rs in results.values() for r in rs})
    if done != sorted(proto["split_seeds"]):
        proto["seeds"] += f" (finished {len(done)} of {len(proto['split_seeds'])})"
        proto["split_seeds"] = [s for s in proto["split_seeds"] if s in done]
    out = {"protocol": proto, "hillstrom": summarize(results["hillstrom"]), "simulator": summarize(results["simulator"]),
           "seconds": {"load": 0.0, "total": 0.0}, "per_seed": results}
    out["targets"] = targets(out)
    return out


def merge(paths: list[str], figure: str | None = None) -> dict:
    """Earlier ``--json`` outputs or ``--progress`` files as one result (e.g. a Hillstrom run and a simulator run)."""
    parts = [from_progress(p) if p.endswith(".jsonl") else json.loads(Path(p).read_text()) for p in paths]
    res = {"protocol": {**parts[0]["protocol"], "runs": [p["protocol"] for p in parts]}, "hillstrom": {}, "simulator": {},
           "seconds": {"load": sum(p["seconds"]["load"] for p in parts), "total": sum(p["seconds"]["total"] for p in parts)}}
    per_seed = []
    for p in parts:
        res["hillstrom"].update(p["hillstrom"])
        res["simulator"].update(p["simulator"])
        per_seed += p.get("per_seed", {}).get("hillstrom", [])
        if "figure" in p:
            res["figure"] = p["figure"]
    res["targets"] = targets(res)
    if figure and per_seed:
        res["figure"] = draw(per_seed, res["hillstrom"], figure)
    return res


def _call(job):
    return job()


def summarize(per_seed: list[dict]) -> dict:
    """Per arm and outcome: each method's mean ± SE, relmail's paired differences, the chosen estimators."""
    keys = sorted({k for r in per_seed for k in r["arms"]}, key=lambda k: (k.startswith("plan/"), k))
    out = {}
    for key in keys:
        runs = [r["arms"][key] for r in per_seed if key in r["arms"]]
        if key.startswith("plan/"):
            out[key] = _summarize_plan(runs)
            continue
        methods = list(runs[0]["methods"])
        figs = [f for f in runs[0]["methods"]["relmail"] if f in protocol.FIGURES or f.startswith("true_")]
        entry = {"seeds": len(runs), "methods": {}, "paired": {}, "chosen": [r["chosen"] for r in runs]}
        for m in methods:
            entry["methods"][m] = {f: protocol.mean_se([r["methods"][m][f] for r in runs]) for f in figs}
        for m in methods:
            if m != "relmail":
                entry["paired"][m] = {f: protocol.paired([r["methods"]["relmail"][f] for r in runs], [r["methods"][m][f] for r in runs])
                                      for f in figs}
        entry["best_peer"] = max(PEERS, key=lambda p: _mean(entry["methods"][p]["keep_at_50"]))
        entry["rule"] = protocol.rule_for_each(runs, entry["methods"], ("relmail", *PEERS, "response"))
        if WELL_SPECIFIED in entry["methods"]:
            # How far a learner that knows the true form gets ahead of a T-learner on the same splits.
            entry["well_specified_lead"] = {
                f: protocol.paired([r["methods"][WELL_SPECIFIED][f] for r in runs], [r["methods"][T_LEARNER][f] for r in runs])
                for f in ("keep_at_50", "true_keep_at_50")}
        if "learnability" in runs[0]:
            entry["learnability"] = float(np.mean([r["learnability"] for r in runs]))
        out[key] = entry
    return out


def _summarize_plan(runs: list[dict]) -> dict:
    entry: dict = {"seeds": len(runs), "better_message": [r["better_message"] for r in runs],
                   "nothing": protocol.mean_se([r["nothing"] for r in runs]), "all_better": protocol.mean_se([r["all_better"] for r in runs])}
    for v in uplift_jobs.VOLUMES:
        k = round(v * 100)
        for who in ("relmail", "response", "random"):
            entry[f"{who}_at_{k}"] = protocol.mean_se([r[f"{who}_at_{k}"] for r in runs])
        for other in ("random", "response"):
            entry[f"relmail_vs_{other}_at_{k}"] = protocol.paired([r[f"relmail_at_{k}"] for r in runs], [r[f"{other}_at_{k}"] for r in runs])
    return entry


def _mean(s: dict) -> float:
    return s["mean"] if s["mean"] is not None else -np.inf


def targets(res: dict) -> dict:
    """The issue's three targets, each with the figures it is judged on and whether it is met."""
    out = {}
    head = res["hillstrom"].get(HEADLINE.split("/", 1)[1])
    if head:
        p = head["paired"][head["best_peer"]]["keep_at_50"]
        out["womens_visit_lead"] = {"best_peer": head["best_peer"], "lead": p["diff"], "se": p["se"], "wins": p["wins"], "n": p["n"],
                                    "needed": TARGET_LEAD, "met": p["diff"] is not None and p["diff"] >= TARGET_LEAD}
    worst = []
    for data in ("hillstrom", "simulator"):
        for key, e in res[data].items():
            if key.startswith("plan/"):
                continue
            for f in ("keep_at_30", "keep_at_50"):
                rival = max(("response", e["best_peer"]), key=lambda m: _mean(e["methods"][m][f]))
                p = e["paired"][rival][f]
                below = p["diff"] is not None and p["se"] is not None and p["diff"] < -p["se"]
                worst.append({"arm": f"{data}/{key}", "figure": f, "rival": rival, "diff": p["diff"], "se": p["se"], "below": below})
    out["never_below"] = {"checks": worst, "met": not any(w["below"] for w in worst), "held_to_each": protocol.held_to_each(res)}
    if res["simulator"]:
        sim = []
        for key, e in res["simulator"].items():
            oracle = _mean(e["methods"]["oracle"]["true_keep_at_50"])
            share = _mean(e["methods"]["relmail"]["true_keep_at_50"]) / oracle if oracle > 0 else None
            sim.append({"arm": key, "learnable": e["learnability"] >= simulator_ratio(), "learnability": e["learnability"],
                        "share_of_oracle": share})
            if WELL_SPECIFIED in e["methods"] and oracle > 0:
                sim[-1]["well_specified_share"] = _mean(e["methods"][WELL_SPECIFIED]["true_keep_at_50"]) / oracle
        learnable = [a for a in sim if a["learnable"]]
        met = bool(learnable) and all(a["share_of_oracle"] is not None and a["share_of_oracle"] >= ORACLE_SHARE for a in learnable)
        out["simulator_oracle"] = {"arms": sim, "needed": ORACLE_SHARE, "met": met}
    return out


def simulator_ratio() -> float:
    from simulator import LEARNABLE_RATIO

    return LEARNABLE_RATIO


def draw(per_seed: list[dict], summary: dict, path: str | None) -> str:
    """Mean Qini curves (share of incremental outcomes against share of volume) of relmail, the best peer and response."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in summary if not k.startswith("plan/")]
    cols = 2 if len(keys) == 4 else len(keys)
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 4.2 * rows), squeeze=False)
    for ax, key in zip(axes.ravel(), keys):
        best = summary[key]["best_peer"]
        for name, style in (("relmail", "-"), (best, "--"), ("response", ":")):
            curves = np.array([r["arms"][key]["curves"][name] for r in per_seed if key in r["arms"]])
            ax.plot(protocol.GRID, curves.mean(axis=0), style, label=f"{name} (keep@50 {summary[key]['methods'][name]['keep_at_50']['mean']:.3f})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, label="random")
        ax.set_title(f"Hillstrom {key}")
        ax.set_xlabel("share of customers mailed")
        ax.set_ylabel("share of incremental outcomes")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Qini curves, mean over {len(per_seed)} split seeds (test halves)")
    fig.tight_layout()
    out = path or str(Path(tempfile.gettempdir()) / "relmail-uplift-qini.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _fmt(s: dict, digits: int = 3) -> str:
    if s.get("mean") is None:
        return "n/a"
    se = f" ± {s['se']:.{digits}f}" if s.get("se") is not None else ""
    return f"{s['mean']:.{digits}f}{se}"


def _fmt_paired(p: dict, digits: int = 3) -> str:
    if p["diff"] is None:
        return "n/a"
    return f"{p['diff']:+.{digits}f} ± {p['se'] or 0:.{digits}f} ({p['wins']}/{p['n']})"


def print_tables(res: dict) -> None:
    for proto in res["protocol"].get("runs", [res["protocol"]]):
        master = f", master seed {proto['master_seed']}" if proto["master_seed"] is not None else ""
        data = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in proto.items() if k in ("hillstrom_rows", "simulated_customers") and v)
        print(f"Protocol: {proto['seeds']} seeds ({len(proto['split_seeds'])}{master}; {data}): {proto['split_seeds']}")
    print("Each figure: mean ± standard error over the seeds; 'vs relmail': relmail minus the method, paired, "
          "± its standard error (seeds relmail won / seeds).\n")
    for data in ("hillstrom", "simulator"):
        for key, e in res[data].items():
            if key.startswith("plan/"):
                continue
            true = "true_keep_at_50" in e["methods"]["relmail"]
            extra = f", learnability {e['learnability']:.1f}" if "learnability" in e else ""
            print(f"{data} {key} (best peer {e['best_peer']}{extra})")
            head = f"  {'method':<30} {'keep@30':>15} {'keep@50':>15} {'qini':>15} {'keep@50 vs relmail':>24}"
            head += f" {'true keep@50':>15}" if true else ""
            print(head)
            for m, figs in e["methods"].items():
                vs = _fmt_paired(e["paired"][m]["keep_at_50"]) if m in e["paired"] else ""
                line = f"  {m:<30} {_fmt(figs['keep_at_30']):>15} {_fmt(figs['keep_at_50']):>15} {_fmt(figs['qini']):>15} {vs:>24}"
                line += f" {_fmt(figs['true_keep_at_50']):>15}" if true else ""
                print(line)
            if "well_specified_lead" in e:
                lead = e["well_specified_lead"]
                print(f"  {WELL_SPECIFIED} - {T_LEARNER}: true keep@50 {_fmt_paired(lead['true_keep_at_50'])}, "
                      f"keep@50 {_fmt_paired(lead['keep_at_50'])}")
            chosen: dict[str, int] = {}
            for c in e["chosen"]:
                chosen[c] = chosen.get(c, 0) + 1
            print(f"  relmail chose: {', '.join(f'{c} ×{n}' for c, n in sorted(chosen.items(), key=lambda x: -x[1]))}\n")
    for key, e in res["hillstrom"].items():
        if not key.startswith("plan/"):
            continue
        outcome = key.split("/", 1)[1]
        print(f"hillstrom whole plan, {outcome} per test customer (IPW; nothing {_fmt(e['nothing'], 4)}, "
              f"everyone the better message {_fmt(e['all_better'], 4)})")
        print(f"  {'volume':>6} {'relmail plan':>17} {'response plan':>17} {'random better msg':>18} "
              f"{'relmail - response':>26} {'relmail - random':>26}")
        for v in uplift_jobs.VOLUMES:
            k = round(v * 100)
            print(f"  {k:>5}% {_fmt(e[f'relmail_at_{k}'], 4):>17} {_fmt(e[f'response_at_{k}'], 4):>17} {_fmt(e[f'random_at_{k}'], 4):>18} "
                  f"{_fmt_paired(e[f'relmail_vs_response_at_{k}'], 4):>26} {_fmt_paired(e[f'relmail_vs_random_at_{k}'], 4):>26}")
        print()
    t = res["targets"]
    if "womens_visit_lead" in t:
        w = t["womens_visit_lead"]
        print(f"Target 1, Hillstrom womens/visit keep@50 >= best peer ({w['best_peer']}) + {w['needed']}: "
              f"lead {w['lead']:+.3f} ± {w['se']:.3f} ({w['wins']}/{w['n']}) — {'met' if w['met'] else 'NOT met'}")
    below = [c for c in t["never_below"]["checks"] if c["below"]]
    detail = "; ".join(f"{c['arm']} {c['figure']} vs {c['rival']} {c['diff']:+.3f} ± {c['se']:.3f}" for c in below)
    print("Target 2, never below the better of response and best peer by more than the paired SE (keep@30, keep@50): "
          + ("met" if t["never_below"]["met"] else f"NOT met: {detail}"))
    held = t["never_below"].get("held_to_each")
    if held:
        print("  The same rule held to each method (against the better of the response model and the best other method): "
              + ", ".join(f"{m} {c['below']} of {c['checks']} below" for m, c in held.items())
              + ("; no method passes it" if all(c["below"] for c in held.values()) else ""))
    if "simulator_oracle" in t:
        s = t["simulator_oracle"]
        arms = ", ".join(f"{a['arm']} {a['share_of_oracle']:.3f}{'' if a['learnable'] else ' (not learnable)'}" for a in s["arms"])
        print(f"Target 3, simulator: relmail's true keep@50 >= {s['needed']} of the oracle's where learnable: {arms} — "
              + ("met" if s["met"] else "NOT met"))
    if "figure" in res:
        print(f"\nQini figure: {res['figure']}")
    print(f"Time: load {res['seconds']['load']} s, total {res['seconds']['total']} s")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(hillstrom.DEFAULT_DATA), help="hillstrom.csv (default: ../shared/data/hillstrom.csv)")
    parser.add_argument("--master-seed", type=int, default=protocol.DEFAULT_MASTER_SEED, help="Master seed of the evaluation seeds.")
    parser.add_argument("--seeds", type=int, default=protocol.EVALUATION_SEEDS, help="Number of evaluation seeds (default 20).")
    parser.add_argument("--design", action="store_true", help="Run the design seeds (0-4) instead of the evaluation seeds.")
    parser.add_argument("--quick", action="store_true",
                        help="Development: design seeds 0-1, 16,000 Hillstrom and simulated customers.")
    parser.add_argument("--only", choices=("hillstrom", "simulator"), default=None, help="Run one data set only.")
    parser.add_argument("--rows", type=int, default=None, help="A seeded sample of this many Hillstrom customers.")
    parser.add_argument("--customers", type=int, default=None, help=f"Simulated customers per seed (default {SIM_CUSTOMERS:,}).")
    parser.add_argument("--processes", type=int, default=2, help="Seeds run in parallel (at most 2).")
    parser.add_argument("--figure", default=None, help="Where the Qini figure goes (PNG or SVG by its suffix).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    parser.add_argument("--progress", default=None, metavar="FILE.jsonl", help="Append each finished seed's figures to this file.")
    parser.add_argument("--tables", nargs="+", metavar="FILE", default=None,
                        help="Print the tables and targets of earlier --json outputs or --progress files (.jsonl) instead of running; "
                             "several are merged.")
    args = parser.parse_args(argv)
    res = merge(args.tables, args.figure) if args.tables else run(args)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print_tables(res)


if __name__ == "__main__":
    main()
