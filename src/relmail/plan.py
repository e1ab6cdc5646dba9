"""Plan a campaign for a window: audience → features → score → rules → arbitration → hold-outs → ledger.

:func:`plan` is the library API behind ``relmail plan``. It writes one run
(``<campaign>:<window>``) and one decision per (customer, message) of each
message's audience: ``send``, ``holdout`` or ``suppress``, with the score,
the expected value, every reason code that applies, and the features the
decision used. ``dry_run=True`` computes the same and writes nothing.

A window is planned once. ``replan=True`` replaces the decisions whose
e-mail has not left (no delivery, or one that is planned, deferred, rejected
or failed) and keeps those that were delivered or are being delivered;
kept pairs are not decided again and count against the customer's budget.

With a trained model for a message (``models/<message>/``, policy ``model:
auto``, the default) the plan scores it with :class:`relmail.model_scoring.ModelScorer`:
arbitration ranks by the model's expected value and the rules
``NEGATIVE_UPLIFT`` and ``NOT_WORTH_IT`` apply. Without one nothing changes.

Frequency caps hold across runs: e-mails already sent (``email_sent``
events) and ``send`` decisions of other runs within 30 days that are not
delivered yet both count (see :func:`relmail.ledger_context.pending`).
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError

from . import decisions as dec
from .arbitration import arbitrate, best_winner, customer_hashes, holdout_draw
from .campaigns import Campaign, load_campaign
from .errors import Conflict, Problem, ValidationError
from .features import FeatureContext, FeatureSettings, compute_features
from .ledger_context import KEEP_STATES, kept_decisions, load_context
from .models import Delivery, Product, Run
from .rules import ARBITRATION_LOST, HOLDOUT, RULES, rules_for
from .rules.frequency_cap import effective_caps
from .scoring import Scorer, make_scorer
from .segments import audience, load_segments
from .windows import Window, parse_window

RUNS, DELIVERIES, DEC = Run.__table__, Delivery.__table__, dec.DEC


@dataclass
class MessageSummary:
    message_id: str
    topic: str
    offer: str
    audience: int = 0
    send: int = 0
    holdout: int = 0
    suppress: int = 0
    kept: int = 0
    #: Reason code → number of decisions it applies to (a decision can have several).
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class PlanResult:
    """What a plan decided; :attr:`decisions` holds every row (written or, in a dry run, not)."""

    run_id: str
    campaign: str
    window: Window
    as_of: datetime
    seed: int
    dry_run: bool
    replan: bool
    decisions: dec.Decisions
    messages: list[MessageSummary]
    #: Decisions of an earlier plan of this window kept unchanged (delivered or in flight).
    kept: int = 0
    #: Replaced decisions of an earlier plan (replan / dry run over an existing run).
    replaced: int = 0
    #: Templates that failed to render for a sample (filled in by :func:`relmail.plan_render.render_sample`).
    render_errors: int = 0
    render_problems: list = field(default_factory=list)
    #: Message id → trained model used (version, outcome, features the plan could not provide).
    models: dict[str, dict] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def totals(self) -> dict[str, int]:
        out = {"audience": 0, "send": 0, "holdout": 0, "suppress": 0, "kept": self.kept}
        for m in self.messages:
            for k in ("audience", "send", "holdout", "suppress"):
                out[k] += getattr(m, k)
        return out

    @property
    def suppression_rate(self) -> float:
        t = self.totals
        decided = t["send"] + t["holdout"] + t["suppress"]
        return t["suppress"] / decided if decided else 0.0

    def reason_counts(self) -> dict[str, int]:
        """Decisions per reason code over all messages, in the registry's order."""
        from .rules import REASON_CODES

        out = {code: sum(m.reasons.get(code, 0) for m in self.messages) for code in REASON_CODES}
        return {code: n for code, n in out.items() if n}

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``relmail plan --json`` prints)."""
        out = {
            "run": self.run_id,
            "campaign": self.campaign,
            "window": self.window.key,
            "as_of": self.as_of.isoformat(),
            "dry_run": self.dry_run,
            "replan": self.replan,
            "totals": self.totals,
            "suppression_rate": round(self.suppression_rate, 4),
            "reasons": self.reason_counts(),
            "render_errors": self.render_errors,
            "render_problems": [str(p) for p in self.render_problems],
            "messages": [m.__dict__ for m in self.messages],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }
        if self.models:
            out["models"] = self.models
        return out


def run_id_for(campaign: str, window: str) -> str:
    return f"{campaign}:{window}"


def plan(
    project,
    engine,
    campaign: str | Campaign,
    window: str | Window,
    *,
    as_of: datetime | None = None,
    dry_run: bool = False,
    replan: bool = False,
    scorer: Scorer | None = None,
    now: datetime | None = None,
) -> PlanResult:
    """Plan ``campaign`` for ``window`` and (unless ``dry_run``) record it in the ledger.

    ``campaign`` is a name under ``campaigns/``, a file path or a loaded
    :class:`Campaign`; ``window`` a window name (``2026-W48``) or a
    :class:`Window`. ``as_of`` defaults to now, capped at the window's end.
    ``scorer`` replaces the campaign's scorer; without it, messages with a
    trained model are scored by it (see :mod:`relmail.model_scoring`).
    Raises :class:`Conflict` if the window has a run and ``replan`` is false.
    """
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        t = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + t - clock
        clock = t

    camp = campaign if isinstance(campaign, Campaign) else load_campaign(project, campaign)
    win = window if isinstance(window, Window) else parse_window(window, project.settings.timezone, now=now)
    as_of = (as_of or win.default_as_of(now)).astimezone(timezone.utc)
    segments = load_segments(project)
    _check_segments(camp, segments)
    run_id = run_id_for(camp.name, win.key)
    seed = camp.run_seed(win.key)
    if scorer is None:
        from .model_scoring import ModelScorer, find_models

        models = find_models(project, camp)
        scorer = ModelScorer(make_scorer(camp), models, camp.scoring.model_weight) if models else make_scorer(camp)

    with engine.connect() as conn:
        existing = conn.execute(select(RUNS.c.id).where(RUNS.c.campaign == camp.name, RUNS.c.window == win.key)).first()
        if existing is not None and not replan and not dry_run:
            n = conn.execute(select(DEC.c.id).where(DEC.c.run_id == existing[0]).limit(1)).first()
            raise Conflict(
                f"window {win.key} of campaign '{camp.name}' is planned already (run {existing[0]}"
                f"{', with decisions' if n else ''}); use --replan to replace the decisions not delivered yet"
            )
        kept = kept_decisions(conn, run_id) if existing is not None else {}
        replaced = 0
        if existing is not None:
            total = conn.execute(select(func.count()).select_from(DEC).where(DEC.c.run_id == run_id)).scalar_one()
            replaced = total - sum(len(v) for v in kept.values())
        lap("setup")

        members = {}
        for m in camp.messages:
            key = tuple(sorted(m.segments))
            if key not in members:
                members[key] = audience(conn, [segments[s] for s in key], as_of)
        ids = np.unique(np.concatenate(list(members.values()))) if members else np.array([], dtype=str)
        lap("audience")

        contexts = {m.id: FeatureContext(topic=m.topic, categories=_categories(conn, m), products=m.products, feature=m.feature) for m in camp.messages}
        frame = compute_features(conn, ids, as_of, contexts, FeatureSettings.from_project(project))
        lap("features")
        load_context(conn, frame, camp, win, run_id, as_of)
        lap("ledger context")

    n = len(frame)
    result_parts: list[dec.Decisions] = []
    summaries: list[MessageSummary] = []
    per_message: list[dict[str, Any]] = []
    for m in camp.messages:
        rows = np.searchsorted(frame.customer_ids, members[tuple(sorted(m.segments))])
        done = kept.get(m.id)
        if done:
            rows = rows[~np.isin(frame.customer_ids[rows], np.array(sorted(done)))]
        score, contrib = scorer.score(frame, m)
        frame.columns[f"{m.id}.score"] = score
        lap("score")
        bits = np.zeros(n, dtype=np.int64)
        hard = np.zeros(n, dtype=bool)
        details: dict[str, dict[str, Any]] = {}
        applied = rules_for(m, frame)
        for rule in applied:
            out = rule.evaluate(frame, m, m.policy)
            bit = list(RULES).index(rule.code)
            bits |= out.mask.astype(np.int64) << bit
            if rule.hard:
                hard |= out.mask
            details[rule.code] = out.detail
        lap("rules")
        considered = rows[~hard[rows]]  # rows where the score counted
        # Extra logged features from the scorer (a model's contributions), where the score counted.
        extra = {}
        if hasattr(scorer, "logged"):
            extra = scorer.logged(frame, m, considered)
            lap("model explanations")
        # Contributions are logged only where the score counted: keep just those (few, as most
        # suppressions are hard), not one full-frame array per component until the last message.
        contrib = {name: np.asarray(c)[considered] for name, c in contrib.items()}
        per_message.append({"message": m, "rows": rows, "score": score, "contrib": contrib, "bits": bits[rows],
                            "hard": hard[rows], "details": details, "rules": applied, "columns": scorer.columns(m),
                            "extra": extra})

    budget = _budget(frame, camp, kept)
    wins, best = _arbitration(frame, camp, per_message, budget)
    lap("arbitration")

    hashes = customer_hashes(frame.customer_ids) if any(m.policy.holdout_share > 0 for m in camp.messages) else None
    # One str per customer, shared by all of a customer's decisions (not one copy per decision).
    customer_texts = frame.customer_ids.astype(object)
    now = datetime.now(timezone.utc)
    # Each message's decisions go to the ledger as soon as they are built, so only one message's
    # write buffers exist at a time; one transaction for the whole run, so a failure leaves no
    # half-written plan.
    with nullcontext() if dry_run else _ledger(engine, camp, win, run_id, seed, as_of, existing is not None, now) as conn:
        lap("ledger write")  # replaced decisions removed, run row written
        for j, won in enumerate(wins):
            pm = per_message[j]
            per_message[j] = None  # the message's scores, contributions and rule masks die with its decisions
            m, rows = pm["message"], pm["rows"]
            lost = (pm["bits"] == 0) & ~won
            held = np.zeros(len(rows), dtype=bool)
            if m.policy.holdout_share > 0 and hashes is not None:
                held = won & (holdout_draw(seed, hashes[rows], m.id) < m.policy.holdout_share)
            part, summary = _decide(frame, m, pm, won, lost, held, best, camp, budget, customer_texts)
            del pm
            result_parts.append(part)
            summary.kept = len(kept.get(m.id, ()))
            summaries.append(summary)
            lap("decisions")
            if conn is not None:
                dec.write(conn, run_id, part, now)
            lap("ledger write")
    lap("ledger write")  # the commit

    decisions = dec.Decisions.concat(result_parts)
    del result_parts
    return PlanResult(
        run_id=run_id, campaign=camp.name, window=win, as_of=as_of, seed=seed, dry_run=dry_run, replan=replan,
        decisions=decisions, messages=summaries, kept=sum(len(v) for v in kept.values()), replaced=max(replaced, 0),
        models=scorer.info() if hasattr(scorer, "info") else {}, timings=timings,
    )


def _arbitration(frame, camp: Campaign, per_message: list[dict[str, Any]], budget: np.ndarray):
    """Run arbitration over every message's candidates at once.

    Returns (per message: winner mask over its audience rows, per customer
    row: the index of their best winning message or -1). Also stores each
    message's expected values in ``pm["ev"]``.
    """
    topics = {t: i for i, t in enumerate(sorted({m.topic for m in camp.messages}))}
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("cust", "msg", "ev", "prio", "topic", "topic_budget")}
    for j, pm in enumerate(per_message):
        m, rows = pm["message"], pm["rows"]
        model_ev = f"{m.id}.expected_value"
        # A trained model's expected value (gain minus irritation risk) replaces score × value.
        pm["ev"] = frame[model_ev][rows] if model_ev in frame else pm["score"][rows] * m.value - m.policy.contact_cost
        ok = pm["bits"] == 0
        r = rows[ok]
        parts["cust"].append(r)
        parts["msg"].append(np.full(len(r), j, dtype=np.int64))
        parts["ev"].append(pm["ev"][ok])
        parts["prio"].append(np.full(len(r), m.priority, dtype=np.int64))
        parts["topic"].append(np.full(len(r), topics[m.topic], dtype=np.int64))
        parts["topic_budget"].append(_topic_budget(frame, m)[r])
    cat = {k: np.concatenate(v) if v else np.zeros(0, dtype=np.int64) for k, v in parts.items()}
    win = arbitrate(cat["cust"], cat["topic"], cat["ev"].astype(np.float64), cat["prio"], cat["msg"],
                    budget[cat["cust"]], cat["topic_budget"])
    best = best_winner(cat["cust"], cat["msg"], cat["ev"].astype(np.float64), win, len(frame))
    wins, start = [], 0
    for pm in per_message:
        ok = pm["bits"] == 0
        k = int(ok.sum())
        won = np.zeros(len(pm["rows"]), dtype=bool)
        won[np.flatnonzero(ok)] = win[start:start + k]
        start += k
        wins.append(won)
    return wins, best


def _check_segments(camp: Campaign, segments: dict) -> None:
    problems = []
    for i, m in enumerate(camp.messages):
        for s in m.segments:
            if s not in segments:
                problems.append(Problem(str(camp.path or camp.name), None, f"messages.{i}.segments",
                                        f"unknown segment '{s}' (known: {', '.join(sorted(segments)) or 'none'})"))
    if problems:
        raise ValidationError(f"campaign '{camp.name}' names segments that do not exist", problems)


def _categories(conn, message) -> tuple[str, ...]:
    """The message's categories, or those of its featured products when it names none."""
    if message.categories or not message.products:
        return message.categories
    p = Product.__table__
    found = conn.execute(select(p.c.category).where(p.c.id.in_(message.products)).distinct()).scalars().all()
    return tuple(sorted(found))


def _remaining(limit: np.ndarray, used: np.ndarray) -> np.ndarray:
    return np.where(np.isinf(limit), np.iinfo(np.int64).max // 4, np.maximum(limit - used, 0)).astype(np.int64)


def _budget(frame, camp: Campaign, kept: dict[str, set[str]]) -> np.ndarray:
    """E-mails each customer may still get from this run: per-run limit and the global caps."""
    n = len(frame)
    used_here = np.zeros(n, dtype=np.int64)
    for customers in kept.values():
        if customers:
            used_here += np.isin(frame.customer_ids, np.array(sorted(customers)))
    budget = np.maximum(camp.policy.max_messages_per_run - used_here, 0)
    if camp.policy.rule_on("FREQUENCY_CAP"):
        c7, c30 = effective_caps(frame, None, camp.policy)
        s7 = frame["sends_7"] + frame["planned_7"]
        s30 = frame["sends_30"] + frame["planned_30"]
        budget = np.minimum(budget, np.minimum(_remaining(c7, s7), _remaining(c30, s30)))
    return budget


def _topic_budget(frame, m) -> np.ndarray:
    n = len(frame)
    out = np.full(n, np.iinfo(np.int64).max // 4, dtype=np.int64)
    if not m.policy.rule_on("TOPIC_FREQUENCY_CAP"):
        return out
    for days, key in ((7, "7d"), (30, "30d")):
        cap = m.policy.topic_cap(key)
        if cap is not None:
            used = frame[f"{m.id}.topic_sends_{days}"] + frame[f"{m.id}.topic_planned_{days}"]
            out = np.minimum(out, _remaining(np.full(n, float(cap)), used))
    return out


def _decide(frame, m, pm, won, lost, held, best, camp, budget, customer_texts) -> tuple[dec.Decisions, MessageSummary]:
    """The decision rows of one message, with reasons and logged features."""
    rows, bits = pm["rows"], pm["bits"]
    size = len(rows)
    codes = list(RULES)
    action = np.full(size, "suppress", dtype=object)
    action[won & ~held] = "send"
    action[held] = "holdout"
    summary = MessageSummary(m.id, m.topic, m.offer, audience=size)
    summary.send, summary.holdout = int((won & ~held).sum()), int(held.sum())
    summary.suppress = size - summary.send - summary.holdout

    # Reason strings: one per distinct bit pattern, then looked up.
    patterns, inverse = np.unique(bits, return_inverse=True)
    texts = [" ".join(c for b, c in enumerate(codes) if p >> b & 1) for p in patterns.tolist()]
    reasons = np.array(texts, dtype=object)[inverse] if size else np.zeros(0, dtype=object)
    for b, c in enumerate(codes):
        fired = int(((bits >> b) & 1).sum())
        if fired:
            summary.reasons[c] = fired
    reasons[lost] = ARBITRATION_LOST
    reasons[held] = HOLDOUT
    if lost.any():
        summary.reasons[ARBITRATION_LOST] = int(lost.sum())
    if held.any():
        summary.reasons[HOLDOUT] = int(held.sum())

    # Logged features.
    constants: dict[str, Any] = {"topic": m.topic}
    if m.products:
        constants["products"] = ", ".join(m.products)
    js = dec.JsonRows(size, constants)
    score = pm["score"][rows]
    considered = ~pm["hard"]
    idx_considered = np.flatnonzero(considered)
    js.add("score", score[considered], idx_considered, keep_zero=True)
    for name, c in pm["contrib"].items():
        js.add(f"c.{name}", c, idx_considered)  # already cut to the considered rows
    for key, values in pm.get("extra", {}).items():
        js.add(key, values, idx_considered)
    rules = pm["rules"]
    scorer_cols = list(pm["columns"])
    full = bits == 0  # send, hold-out, arbitration lost: every column the decision used
    full_idx = np.flatnonzero(full)
    logged = dict.fromkeys(scorer_cols)
    for rule in rules:
        logged.update(dict.fromkeys(rule.columns))
    for col in logged:
        if col == "k.score":
            continue
        values = _column(frame, m, col)[rows]
        js.add(col[2:] if col.startswith("k.") else col, values[full], full_idx)
    # Suppressed rows: the columns and limits of the rules that fired (each column once per row).
    fired_cols: dict[str, np.ndarray] = {}
    for b, code in enumerate(codes):
        fired = ((bits >> b) & 1).astype(bool)
        if not fired.any():
            continue
        rule_cols = RULES[code].columns + (tuple(scorer_cols) if RULES[code].logs_score_inputs else ())
        for col in rule_cols:
            if col != "k.score":
                fired_cols[col] = fired_cols.get(col, np.zeros(size, dtype=bool)) | fired
    for col, fired in fired_cols.items():
        js.add(col[2:] if col.startswith("k.") else col, _column(frame, m, col)[rows][fired], np.flatnonzero(fired))
    for b, code in enumerate(codes):
        fired = ((bits >> b) & 1).astype(bool)
        if not fired.any():
            continue
        fidx = np.flatnonzero(fired)
        for key, value in pm["details"].get(code, {}).items():
            v = np.asarray(value, dtype=np.float64)
            js.add(key, v[rows][fired] if v.ndim else np.full(len(fidx), float(v)), fidx, keep_zero=True)
    if lost.any():
        lidx = np.flatnonzero(lost)
        winners = best[rows[lost]]
        names = np.array([mm.id for mm in camp.messages], dtype=object)
        for jj in np.unique(winners).tolist():
            sel = lidx[winners == jj]
            js.add("lost_to", names[jj] if jj >= 0 else "budget", sel)
        js.add("budget", budget[rows[lost]], lidx, keep_zero=True)
    if held.any():
        js.add("holdout_share", np.full(int(held.sum()), m.policy.holdout_share), np.flatnonzero(held), keep_zero=True)

    ev = pm["ev"]
    out = dec.Decisions(
        customer_id=customer_texts[rows],
        message_id=np.full(size, m.id, dtype=dec.S),
        action=action.astype(dec.S),
        score=score,
        expected_value=ev,
        reasons=reasons.astype(dec.S),
        features=js.finish(),
    )
    return out, summary


def _column(frame, m, name: str) -> np.ndarray:
    key = f"{m.id}.{name[2:]}" if name.startswith("k.") else name
    return np.asarray(frame[key], dtype=np.float64)


@contextmanager
def _ledger(engine, camp: Campaign, win: Window, run_id: str, seed: int, as_of: datetime, exists_: bool, now: datetime):
    """A transaction holding the run's row (new, or the old one with its replaceable decisions gone); yields its connection."""
    with engine.begin() as conn:
        if exists_:
            keep = exists().where(DELIVERIES.c.decision_id == DEC.c.id, DELIVERIES.c.status.in_(KEEP_STATES))
            replaced = select(DEC.c.id).where(DEC.c.run_id == run_id, ~keep)
            conn.execute(delete(DELIVERIES).where(DELIVERIES.c.run_id == run_id, DELIVERIES.c.decision_id.in_(replaced)))
            conn.execute(delete(DEC).where(DEC.c.run_id == run_id, ~keep))
            conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(
                as_of=as_of, seed=seed, status="planned", config_hash=camp.digest[:64], updated_at=now))
        else:
            try:
                conn.execute(RUNS.insert().values(
                    id=run_id, campaign=camp.name, window=win.key, as_of=as_of, seed=seed, status="planned",
                    config_hash=camp.digest[:64], created_at=now, updated_at=now))
            except IntegrityError:
                # Another plan of the same window committed while this one computed.
                raise Conflict(f"window {win.key} of campaign '{camp.name}' was planned by another process meanwhile; "
                               "use --replan") from None
        yield conn
