"""``relmail model train`` as a library call: ledger → models on disk.

For each message: the decisions of closed runs with their outcomes
(:mod:`.outcomes`), a customer-level split into training and test parts (the
test part is left for ``relmail model evaluate``), estimator selection by
cross-fitting on the training part (:mod:`.select`), a refit of the winner
on the whole training part, and a new model version (:mod:`.store`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy.engine import Engine

from .. import __version__
from ..errors import ConfigError, NothingToDo, ValidationError
from . import store
from .bases import BASES, MIN_POSITIVES, Propensity, fit_probability
from .dataset import FeatureSpec, split_mask
from .estimators import (
    POOLING_KINDS,
    UPLIFT_KINDS,
    UPSTREAM,
    Funnel,
    make_uplift,
    nested,
)
from .incrementality import lift_interval
from .outcomes import DEFAULT_WINDOW, POSITIVE, OutcomeTable, load_outcomes
from .select import DEFAULT_REPEATS, Upstream, choose


@dataclass(frozen=True)
class TrainOptions:
    """Training settings; ``[model]`` in ``relmail.toml`` gives the defaults."""

    window: timedelta = DEFAULT_WINDOW
    test_share: float = 0.3
    split_seed: int = 0
    outcomes: tuple[str, ...] = tuple(POSITIVE)
    kinds: tuple[str, ...] = UPLIFT_KINDS
    bases: tuple[str, ...] = BASES
    criterion: str = "qini"
    #: Independent 2-fold splits each candidate is cross-fitted on during selection.
    cv_repeats: int = DEFAULT_REPEATS
    primary_outcome: str | None = None
    #: Threads per fit. The fits are many and small: with more threads the
    #: OpenMP start-up and contention cost more than they save, most on a
    #: busy machine.
    threads: int = 1
    #: Overwrite the newest version of each model instead of adding one (for experiments).
    replace: bool = False

    @classmethod
    def from_project(cls, project, **overrides) -> TrainOptions:
        cfg = project.settings.section("model") if project is not None else {}
        values = {
            "window": timedelta(days=float(cfg.get("window_days", 14))),
            "test_share": float(cfg.get("test_share", 0.3)),
            "outcomes": tuple(cfg.get("outcomes", POSITIVE)),
            "kinds": tuple(cfg.get("estimators", UPLIFT_KINDS)),
            "bases": tuple(cfg.get("bases", BASES)),
            "criterion": str(cfg.get("criterion", "qini")),
            "cv_repeats": int(cfg.get("cv_repeats", DEFAULT_REPEATS)),
            "primary_outcome": cfg.get("primary_outcome"),
            "threads": int(cfg.get("threads", 1)),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = [o for o in values["outcomes"] if o not in POSITIVE]
        if unknown:
            raise ValidationError(f"unknown outcome(s) {', '.join(unknown)}; choose from {', '.join(POSITIVE)}")
        if not 0.0 <= values["test_share"] < 1.0:
            _bad(overrides, "test_share", f"{values['test_share']} is not a share of customers from 0 up to (not including) 1")
        if values["window"] <= timedelta(0):
            _bad(overrides, "window", "the outcome window must be longer than 0 days")
        return cls(**values)


def train(
    engine: Engine,
    root,
    messages: Sequence[str] | None = None,
    options: TrainOptions | None = None,
    now: datetime | None = None,
    table: OutcomeTable | None = None,
) -> list[dict]:
    """Train and save one model per message; returns what was chosen and why, per message.

    ``root`` is the models folder (see :func:`relmail.learn.store.models_dir`).
    ``table`` skips the database read when the caller already has the outcomes.
    """
    options = options or TrainOptions()
    pooling = any(k in POOLING_KINDS for k in options.kinds)
    if table is None:
        # A pooling estimator learns from every message's sends, even when only some are trained.
        table = load_outcomes(engine, options.window, messages=None if pooling else messages, now=now)
    if len(table) == 0:
        raise NothingToDo("no decisions with closed outcome windows to train on; run a campaign (or 'relmail runs import') first")
    wanted = list(messages) if messages else sorted(set(table.message_id))
    results = []
    for key in wanted:
        mine = table.message_id == key
        if not mine.any():
            raise NothingToDo(f"no decisions for message '{key}' in closed runs: nothing to train it on")
        replaced = replaced_outcomes(root, key, options.outcomes) if options.replace else {}
        result = train_message(root, key, table.subset(mine), options, siblings_of(table, key) if pooling else None)
        if replaced:
            result["replaced"] = replaced
        results.append(result)
    return results


def _bad(overrides: dict, key: str, text: str) -> None:
    """A bad training setting: a usage error when the caller passed it, else a relmail.toml error."""
    if overrides.get(key) is not None:
        raise ValidationError(f"{key}: {text}")
    setting = {"window": "window_days"}.get(key, key)
    raise ConfigError(f"relmail.toml: [model] {setting}: {text}")


def replaced_outcomes(root, key: str, outcomes) -> dict:
    """What ``replace`` takes away: the outcomes the newest version learned that this training does not ask for.

    The plan scores a message by its model's primary outcome (conversion
    first): replacing a visit-and-conversion model with a visit-only one
    moves that message's plan to P(visit), which the train output must say.
    """
    meta = store.read_meta(root, key)
    if meta is None:
        return {}
    had = list(meta.get("estimators", {}).get("outcomes", {}))
    dropped = [o for o in had if o not in outcomes]
    return {"version": meta["version"], "outcomes": had, "dropped": dropped} if dropped else {}


def siblings_of(table: OutcomeTable, key: str) -> OutcomeTable:
    """Sends of other messages to mailboxes without a row for ``key`` in that run.

    What a pooling estimator adds to ``key``'s own sends and hold-outs: a
    mailbox that got another message of the run (and neither this one nor
    a hold-out from it, under any of its customer ids) shows how people react
    to the campaign's e-mail at all.
    """
    pairs = np.char.add(np.char.add(table.run_id.astype(str), "\x00"), table.mailbox.astype(str))
    mine = table.message_id == key
    return table.subset(~mine & (table.treated == 1) & ~np.isin(pairs, pairs[mine]))


def limited_threads(threads: int):
    """A context that caps BLAS/OpenMP threads for the fits inside it."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=max(1, int(threads)))


def train_message(root, key: str, table: OutcomeTable, options: TrainOptions, siblings: OutcomeTable | None = None) -> dict:
    """Select, fit and save the model of one message from its decisions (and ``siblings``, see :func:`siblings_of`)."""
    with limited_threads(options.threads):
        return _train_message(root, key, table, options, siblings)


def _train_message(root, key: str, table: OutcomeTable, options: TrainOptions, siblings: OutcomeTable | None) -> dict:
    # By mailbox: a person's rows under any of the customer ids of the address stay on one side.
    test = split_mask(table.mailbox, options.split_seed, options.test_share)
    data = table.subset(~test)
    if siblings is not None:
        # The same customers are held back for evaluation as in the message's own rows.
        siblings = siblings.subset(~split_mask(siblings.mailbox, options.split_seed, options.test_share))
    spec = FeatureSpec.infer(data.features)
    if not spec.columns:
        raise NothingToDo(f"message '{key}': the decisions logged no usable features: nothing to train on")
    X = spec.encode(data.features)
    X_sib = spec.encode(siblings.features) if siblings is not None and len(siblings) else None
    t = data.treated
    seed = options.split_seed
    n_hold = int((t == 0).sum())
    payload: dict = {"outcomes": {}}
    est_meta: dict = {"outcomes": {}}
    selection, skipped, chosen = {}, {}, {}
    for outcome in upstream_first(options.outcomes):
        y = data.outcomes[outcome]
        layout = spec.layout_of(X, y)
        sent_pos = int(y[t == 1].sum())
        if sent_pos < MIN_POSITIVES:
            skipped[outcome] = f"only {sent_pos} {outcome} outcomes among sends (need {MIN_POSITIVES})"
            continue
        hold_pos = int(y[t == 0].sum())
        if n_hold == 0 or hold_pos < MIN_POSITIVES:
            # Propensity only: without hold-out outcomes there is nothing to compare sends with.
            prop = Propensity(layout, options.bases[0], seed).fit(X, y, t)
            payload["outcomes"][outcome] = {"propensity": prop.parts(), "uplift": None}
            est_meta["outcomes"][outcome] = {"propensity": {"base": prop.base}, "uplift": None}
            selection[outcome] = {"chosen": None, "reason": f"no uplift model: {hold_pos} {outcome} outcomes among {n_hold} "
                                                               f"hold-outs (need {MIN_POSITIVES})"}
            continue
        sib = None if X_sib is None else (X_sib, siblings.outcomes[outcome], siblings.mailbox)
        up = _upstream(outcome, data, siblings, chosen) if Funnel.kind in options.kinds else None
        choice = choose(X, y, t, data.mailbox, layout, seed, options.kinds, options.bases, options.criterion, options.cv_repeats, sib, up)
        chosen[outcome] = (choice.kind, choice.base)
        if choice.kind == Funnel.kind:
            uplift = Funnel(layout, choice.base, seed, up.kind).fit(
                X, y, t, upstream=up.y, siblings=None if sib is None else (sib[0], up.siblings))
        elif choice.kind in POOLING_KINDS:
            uplift = make_uplift(choice.kind, layout, choice.base, seed).fit(X, y, t, siblings=sib[:2])
        else:
            uplift = make_uplift(choice.kind, layout, choice.base, seed).fit(X, y, t)
        prop = Propensity(layout, choice.propensity_base, seed).fit(X, y, t)
        payload["outcomes"][outcome] = {"propensity": prop.parts(), "uplift": uplift.parts()}
        slope, intercept = choice.calibration
        est_meta["outcomes"][outcome] = {
            "propensity": {"base": prop.base},
            "uplift": {"kind": choice.kind, "base": choice.base, "calibration": {"slope": slope, "intercept": intercept},
                       # Whether the uplift may hold customers back (TrainedModel.uplift_unfounded) depends on it.
                       "lift": _lift(y, t), "lift_interval": list(lift_interval(y, t))},
            # Numeric features the linear models bent with a spline (see Layout.of).
            "curved": [spec.columns[j] for j in layout.curved],
        }
        selection[outcome] = {
            "chosen": f"{choice.kind}/{choice.base}",
            "criterion": choice.criterion,
            "reason": choice.reason,
            "candidates": choice.candidates,
        }
    if not payload["outcomes"]:
        raise NothingToDo(f"message '{key}': no outcome has enough data to train ({'; '.join(skipped.values())})")
    sends = t == 1
    irritation = data.outcomes["irritation"][sends]
    payload["irritation"] = fit_probability(spec.layout_of(X[sends], irritation), "logistic", X[sends], irritation, seed)
    converted = sends & (data.outcomes["conversion"] == 1)
    date_from, date_to = data.date_range()
    meta = {
        "relmail": __version__,
        "estimators": est_meta,
        "selection": selection,
        "skipped": skipped,
        "primary_outcome": options.primary_outcome,
        "spec": spec.as_dict(),
        "baseline": _baseline(X, spec).tolist(),
        "training": {
            "date_from": date_from,
            "date_to": date_to,
            "runs": sorted(set(data.run_id)),
            "rows": len(data),
            "sends": int(sends.sum()),
            "holdouts": n_hold,
            # Other messages' sends a pooling estimator could learn from (see siblings_of).
            "sibling_sends": 0 if siblings is None else len(siblings),
            "sibling_messages": [] if siblings is None else sorted(set(siblings.message_id)),
            "window_days": options.window.total_seconds() / 86400,
            "split_seed": options.split_seed,
            "test_share": options.test_share,
            "value_per_conversion": float(data.revenue[converted].mean()) if converted.any() else None,
            "irritation_rate": float(data.outcomes["irritation"][sends].mean()) if sends.any() else 0.0,
        },
    }
    path = store.save(root, key, payload, meta, replace=options.replace)
    return {"message": key, "version": int(path.stem[1:]), "path": str(path), "rows": len(data), "test_rows": int(test.sum()),
            "selection": selection, "skipped": skipped,
            "sibling_sends": meta["training"]["sibling_sends"], "sibling_messages": meta["training"]["sibling_messages"]}


def upstream_first(outcomes: Sequence[str]) -> list[str]:
    """``outcomes`` with each one's upstream outcome (see :data:`~relmail.learn.estimators.UPSTREAM`) trained before it."""
    return sorted(outcomes, key=lambda o: o in UPSTREAM and UPSTREAM[o] in outcomes)


def _upstream(outcome: str, data: OutcomeTable, siblings: OutcomeTable | None, chosen: dict) -> Upstream | None:
    """The funnel's upstream for ``outcome``: when its upstream outcome has an uplift model and the cases nest in it."""
    up = UPSTREAM.get(outcome)
    if up not in chosen or chosen[up][0] == Funnel.kind or not nested(data.outcomes[outcome], data.outcomes[up]):
        return None
    kind, base = chosen[up]
    return Upstream(up, kind, base, data.outcomes[up], None if siblings is None else siblings.outcomes[up])


def _lift(y: np.ndarray, t: np.ndarray) -> float:
    """The training rows' observed lift: sends' outcome rate minus hold-outs'."""
    return float(np.mean(y[t == 1]) - np.mean(y[t == 0]))


def _baseline(X: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Reference values for contributions: median numbers, most common category codes."""
    out = np.zeros(X.shape[1])
    n_num = len(spec.numeric)
    for j in range(X.shape[1]):
        col = X[:, j]
        if j < n_num:
            finite = col[np.isfinite(col)]
            out[j] = float(np.median(finite)) if len(finite) else 0.0
        else:
            codes, counts = np.unique(col, return_counts=True)
            out[j] = float(codes[np.argmax(counts)]) if len(codes) else -1.0
    return out
