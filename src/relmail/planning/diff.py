"""What changed between a plan and an earlier one, for a reviewer: ``relmail plan --diff-against``.

The earlier plan (the *baseline*) is a run in the ledger (``weekly:2026-W49``,
or ``last``: the campaign's newest run) or a plan file written by
``relmail plan --out`` (CSV or JSON Lines). Every (customer, message) whose
action or set of reason codes differs is a :class:`Change`, and so is every
pair that entered the audience (``absent -> ...``) or left it
(``... -> absent``). Changes are grouped per customer (each customer once)
and counted per transition and per reason code, for the top of the report.

A replan (or a dry run over a written window) keeps the decisions whose
e-mail has left; they are not decided again, so they are left out of the
comparison and counted as kept.

The comparison is columnar: both sides are NumPy arrays joined on their
(customer, message) keys, so a million-decision plan diffs in seconds.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from ..errors import NotFound
from ..rules import REASON_CODES
from ..store.models import Decision
from .output import read_plan_columns
from .runs import resolve_run

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from .run import PlanResult

DEC = Decision.__table__
ABSENT = "absent"
_RUN_ID = re.compile(r"^[^/\\:]+:[^/\\]+$")


@dataclass(frozen=True)
class Baseline:
    """The earlier plan, as columns: one row per (customer, message)."""

    #: What it is, for people: ``run weekly:2026-W49`` or the file's path.
    label: str
    customer_id: np.ndarray
    message_id: np.ndarray
    action: np.ndarray
    #: Reason codes, space-separated (the ledger's form).
    reasons: np.ndarray
    #: The run id when the baseline is a stored run.
    run_id: str | None = None


def load_baseline(engine: Engine, spec: str, campaign: str) -> Baseline:
    """The baseline named by ``spec``: ``last``, a run id, or a plan file (``.csv`` / ``.jsonl``)."""
    spec = spec.strip()
    if spec == "last" or (_RUN_ID.match(spec) and not Path(spec).exists()):
        with engine.connect() as conn:
            run_id = resolve_run(conn, spec, campaign)
            rows = conn.execute(select(DEC.c.customer_id, DEC.c.message_id, DEC.c.action, DEC.c.reasons)
                                .where(DEC.c.run_id == run_id)).all()
        cols = list(zip(*rows)) if rows else [(), (), (), ()]
        return Baseline(f"run {run_id}", *(np.array(c, dtype=object) for c in cols), run_id=run_id)
    if not Path(spec).exists():
        raise NotFound(f"--diff-against {spec!r}: no such plan file, and not a run id (campaign:window) or 'last'")
    customer, message, action, reasons = read_plan_columns(spec)
    return Baseline(spec, customer, message, action, reasons)


@dataclass(frozen=True)
class Change:
    """One (customer, message) whose decision differs from the baseline's."""

    message_id: str
    #: The baseline's action, or ``absent`` (not in that audience).
    before: str
    after: str
    reasons_before: tuple[str, ...]
    reasons_after: tuple[str, ...]

    @property
    def transition(self) -> str:
        """``send -> suppress``, ``absent -> send`` (into the audience), or ``suppress, other reasons``."""
        return f"{self.before}, other reasons" if self.before == self.after else f"{self.before} -> {self.after}"

    def as_dict(self) -> dict[str, Any]:
        return {"message_id": self.message_id, "before": self.before, "after": self.after,
                "reasons_before": list(self.reasons_before), "reasons_after": list(self.reasons_after)}


@dataclass
class CustomerChanges:
    customer_id: str
    changes: list[Change]


@dataclass
class PlanDiff:
    """Every change against a baseline, per customer, with counts for the top of a report."""

    against: str
    customers: list[CustomerChanges] = field(default_factory=list)
    #: Transition (``send -> suppress``) → decisions.
    transitions: dict[str, int] = field(default_factory=dict)
    #: Reason code → decisions that have it now and did not before.
    reasons_added: dict[str, int] = field(default_factory=dict)
    #: Reason code → decisions that had it before and do not now.
    reasons_removed: dict[str, int] = field(default_factory=dict)
    #: Decisions of the planned window kept unchanged by the replan (not compared).
    kept: int = 0
    #: Decisions the same on both sides.
    unchanged: int = 0

    @property
    def changed(self) -> int:
        return sum(len(c.changes) for c in self.customers)

    def reason_rows(self) -> list[tuple[str, int, int]]:
        """(code, added, removed) in the registry's order, codes that changed only."""
        codes = [c for c in REASON_CODES if c in self.reasons_added or c in self.reasons_removed]
        codes += sorted((set(self.reasons_added) | set(self.reasons_removed)) - set(codes))
        return [(c, self.reasons_added.get(c, 0), self.reasons_removed.get(c, 0)) for c in codes]

    def as_dict(self) -> dict[str, Any]:
        return {
            "against": self.against, "customers": len(self.customers), "decisions": self.changed,
            "unchanged": self.unchanged, "kept": self.kept, "transitions": self.transitions,
            "reasons": {code: {"added": a, "removed": r} for code, a, r in self.reason_rows()},
            "changes": [{"customer_id": c.customer_id, "changes": [x.as_dict() for x in c.changes]} for c in self.customers],
        }


def diff(baseline: Baseline, result: PlanResult) -> PlanDiff:
    """Compare ``result`` (a :class:`~relmail.planning.run.PlanResult`) with ``baseline``."""
    new = result.decisions
    old_c, old_m = baseline.customer_id, baseline.message_id
    keep = np.ones(len(old_c), dtype=bool)
    if baseline.run_id == result.run_id and result.kept_pairs:
        # Decisions the replan kept are not in the result: they did not change, they were not decided again.
        for message_id, customers in result.kept_pairs.items():
            keep &= ~((old_m == message_id) & np.isin(old_c, np.array(sorted(customers), dtype=object)))
    old_keys, new_keys = _keys(old_c[keep], old_m[keep]), _keys(new.customer_id, new.message_id)
    old_idx = np.flatnonzero(keep)
    _, in_old, in_new = np.intersect1d(old_keys, new_keys, assume_unique=True, return_indices=True)
    in_old = old_idx[in_old]
    same_action = baseline.action[in_old].astype(str) == new.action[in_new].astype(str)
    old_reasons, new_reasons = baseline.reasons[in_old].astype(str), new.reasons[in_new].astype(str)
    same_reasons = old_reasons == new_reasons
    # Texts differ but the sets may not (a file with codes in another order): compare those as sets.
    for k in np.flatnonzero(~same_reasons).tolist():
        same_reasons[k] = set(old_reasons[k].split()) == set(new_reasons[k].split())
    differs = ~(same_action & same_reasons)
    out = PlanDiff(against=baseline.label, kept=int(sum(len(v) for v in result.kept_pairs.values())) if baseline.run_id == result.run_id else 0,
                   unchanged=int((~differs).sum()))
    rows: list[tuple[str, Change]] = []
    for i, j in zip(in_old[differs].tolist(), in_new[differs].tolist()):
        rows.append((new.customer_id[j], Change(new.message_id[j], baseline.action[i], new.action[j],
                                                _codes(baseline.reasons[i]), _codes(new.reasons[j]))))
    for i in old_idx[~np.isin(old_keys, new_keys)].tolist():
        rows.append((baseline.customer_id[i], Change(baseline.message_id[i], baseline.action[i], ABSENT, _codes(baseline.reasons[i]), ())))
    for j in np.flatnonzero(~np.isin(new_keys, old_keys)).tolist():
        rows.append((new.customer_id[j], Change(new.message_id[j], ABSENT, new.action[j], (), _codes(new.reasons[j]))))
    order = {m.message_id: i for i, m in enumerate(result.messages)}
    rows.sort(key=lambda r: (r[0], order.get(r[1].message_id, len(order)), r[1].message_id))
    transitions: Counter = Counter()
    added: Counter = Counter()
    removed: Counter = Counter()
    for customer, change in rows:
        if not out.customers or out.customers[-1].customer_id != customer:
            out.customers.append(CustomerChanges(customer, []))
        out.customers[-1].changes.append(change)
        transitions[change.transition] += 1
        added.update(set(change.reasons_after) - set(change.reasons_before))
        removed.update(set(change.reasons_before) - set(change.reasons_after))
    out.transitions = dict(sorted(transitions.items(), key=lambda kv: (-kv[1], kv[0])))
    out.reasons_added, out.reasons_removed = dict(added), dict(removed)
    return out


def _keys(customers: np.ndarray, messages: np.ndarray) -> np.ndarray:
    """One sortable text per (customer, message)."""
    if not len(customers):
        return np.array([], dtype=str)
    return np.char.add(np.char.add(customers.astype(str), "\x1f"), messages.astype(str))


def _codes(reasons) -> tuple[str, ...]:
    return tuple(str(reasons).split()) if reasons else ()
