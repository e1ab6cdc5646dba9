"""bench/protocol.py: target 2's rule held to every method, as it is held to relmail."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
protocol = importlib.import_module("protocol")

FIGS = ("keep_at_30", "keep_at_50")


def _arm(offsets: dict[str, float], seeds: int = 20, noise: float = 0.01, seed: int = 0):
    """Per-seed results where each method is a shared per-seed level plus its offset plus its own noise."""
    rng = np.random.default_rng(seed)
    level = rng.normal(0.5, 0.05, seeds)
    runs = [{"methods": {m: {f: float(level[s] + off + rng.normal(0, noise)) for f in FIGS} for m, off in offsets.items()}}
            for s in range(seeds)]
    methods = {m: {f: protocol.mean_se([r["methods"][m][f] for r in runs]) for f in FIGS} for m in offsets}
    return runs, methods


def test_a_method_ahead_of_every_other_passes_and_one_behind_fails_against_the_best_other():
    runs, methods = _arm({"relmail": 0.0, "peer_a": 0.10, "peer_b": -0.10, "response": 0.0})
    rule = protocol.rule_for_each(runs, methods, ("relmail", "peer_a", "peer_b", "response"))
    assert not any(rule["peer_a"][f]["below"] for f in FIGS)
    for m in ("relmail", "peer_b"):
        for f in FIGS:
            assert rule[m][f]["below"] and rule[m][f]["rival"] == "peer_a"
            assert rule[m][f]["diff"] < -0.05


def test_relmail_is_judged_against_the_better_of_response_and_the_best_peer():
    runs, methods = _arm({"relmail": 0.0, "peer_a": -0.02, "response": 0.05})
    rule = protocol.rule_for_each(runs, methods, ("relmail", "peer_a", "response"))
    assert {rule["relmail"][f]["rival"] for f in FIGS} == {"response"}
    # The response model is never its own rival: its rival is the best of the others (relmail here).
    assert {rule["response"][f]["rival"] for f in FIGS} == {"relmail"}
    assert not any(rule["response"][f]["below"] for f in FIGS)


def test_held_to_each_counts_every_arm_and_figure_and_names_where_a_method_fails():
    behind, methods_behind = _arm({"relmail": -0.1, "peer_a": 0.0, "response": 0.0}, seed=1)
    level, methods_level = _arm({"relmail": 0.1, "peer_a": 0.0, "response": 0.0}, seed=2)
    contenders = ("relmail", "peer_a", "response")
    res = {"hillstrom": {"mens/visit": {"rule": protocol.rule_for_each(behind, methods_behind, contenders)}},
           "simulator": {"sale/visit": {"rule": protocol.rule_for_each(level, methods_level, contenders)}}}
    held = protocol.held_to_each(res)
    assert held["relmail"]["checks"] == 4
    assert held["relmail"]["below"] == 2
    assert held["relmail"]["where"] == ["hillstrom/mens/visit keep_at_30", "hillstrom/mens/visit keep_at_50"]
    assert held["peer_a"]["where"] == ["simulator/sale/visit keep_at_30", "simulator/sale/visit keep_at_50"]


def test_methods_level_with_each_other_fail_the_rule_by_chance():
    """Why a rule of one paired standard error is a coin for equals: over many arms, each of them fails some."""
    contenders = ("relmail", "peer_a", "peer_b", "response")
    res = {"simulator": {}}
    for arm in range(12):
        runs, methods = _arm(dict.fromkeys(contenders, 0.0), seed=100 + arm)
        res["simulator"][f"arm{arm}"] = {"rule": protocol.rule_for_each(runs, methods, contenders)}
    held = protocol.held_to_each(res)
    assert all(held[m]["below"] >= 1 for m in contenders)
