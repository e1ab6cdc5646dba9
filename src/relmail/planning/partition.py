"""One partition of a plan: features → score → rules → arbitration → hold-outs → decision rows.

Everything after the audience depends on one customer at a time (her
features, her budget, her arbitration, her hold-out draw), so a plan splits
its audience into contiguous ranges of customer ids and decides each range
on its own: in the planning process for a small audience, or one range per
worker process (:mod:`relmail.executors`, local processes or Dask) for a
large one. A partition reads the store (features, ledger context) but never
writes: its decision rows go back to the planning process, which writes the
whole run in one transaction.

:func:`decide_partition` is the work; :func:`partition_task` is the same
behind a database URL, for a worker process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from ..campaigns import Campaign
from ..features import FeatureContext, FeatureSettings, compute_features
from ..features.columns import frame_key, logged_key, own
from ..rules import ARBITRATION_LOST, HOLDOUT, RULES, rules_for
from ..rules.frequency_cap import effective_caps
from ..store.db import make_engine
from ..windows import Window
from . import decisions as dec
from . import shared_mailbox
from .addresses import normalized
from .arbitration import NO_LIMIT, arbitrate, best_winner, customer_hashes, holdout_draw
from .mailbox_budget import MailboxRooms
from .pending import load_context
from .shared_mailbox import MailboxFacts

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

#: The score as a rule reads it (LOW_RELEVANCE): logged as ``score`` with every decision whose score counted.
SCORE = own("score")


class Laps:
    """Seconds per stage: ``laps("features")`` books the time since the previous call to that stage."""

    def __init__(self):
        self.timings: dict[str, float] = {}
        self.clock = time.perf_counter()

    def __call__(self, stage: str) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + self.elapsed()

    def elapsed(self) -> float:
        """Seconds since the previous lap, booked to no stage."""
        t = time.perf_counter()
        spent, self.clock = t - self.clock, t
        return spent


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

    def add(self, other: MessageSummary) -> None:
        """Add the counts of ``other`` (the same message, another partition)."""
        for name in ("audience", "send", "holdout", "suppress"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for code, n in other.reasons.items():
            self.reasons[code] = self.reasons.get(code, 0) + n


@dataclass
class PartitionResult:
    """The decisions of one partition: per message (campaign order) its rows and counts."""

    parts: list[dec.Decisions]
    summaries: list[MessageSummary]
    timings: dict[str, float]
    #: The scorer's account of its models (:meth:`relmail.score.model.ModelScorer.info`), as this partition saw them.
    models: dict[str, dict] = field(default_factory=dict)
    #: Per message, each row's customer as a position in the partition's (sorted) customer ids.
    positions: list[np.ndarray] = field(default_factory=list)
    #: Per message, the normalized address of each of its sends (in row order), or None when the
    #: features came without addresses (see :mod:`relmail.planning.addresses`).
    send_addresses: list[np.ndarray | None] = field(default_factory=list)
    #: The caps' room of the range's customers who share an address (None: there are none).
    rooms: MailboxRooms | None = None


@dataclass(frozen=True)
class PlanJob:
    """What every customer range of one plan shares: the campaign, the run and how to score it."""

    campaign: Campaign
    window: Window
    run_id: str
    seed: int
    as_of: datetime
    #: Message id → customers whose decision of an earlier plan of this window stays (delivered or in flight).
    kept: dict[str, set[str]]
    #: Message id → what its features are computed about.
    contexts: dict[str, FeatureContext]
    settings: FeatureSettings
    scorer: Any
    #: The directory of the columnar copy of the events, brought in step before the partitions start (None: SQL only).
    columns: str | None = None
    #: The facts of the mailboxes several customers share (:mod:`.shared_mailbox`), read once per plan.
    mailboxes: MailboxFacts = field(default_factory=MailboxFacts.none)


@dataclass(frozen=True)
class CustomerRange:
    """The customers one partition decides."""

    #: Sorted customer ids: the union of ``members``.
    ids: np.ndarray
    #: A message's sorted segment names → the sorted ids of its audience within ``ids``.
    members: dict[tuple, np.ndarray]
    #: ``ids`` is one range of a partitioned audience: the feature statements read only the
    #: events of customers between its first and last id.
    bounded: bool = False


@dataclass
class Candidates:
    """One message's audience rows in a partition, with what the score and the rules made of them."""

    message: Any
    #: The audience's rows in the frame (kept decisions left out).
    rows: np.ndarray
    #: Score of every frame row (not only ``rows``).
    score: np.ndarray
    #: Score contributions by component, cut to the rows where the score counted (no hard rule fired).
    contrib: dict[str, np.ndarray]
    #: Per audience row: a bit per reason code that fired (in :data:`relmail.rules.RULES` order).
    bits: np.ndarray
    #: Per audience row: a hard rule fired.
    hard: np.ndarray
    #: Reason code → the limits the rule compared against (its ``RuleFindings.detail``).
    details: dict[str, dict[str, Any]]
    #: The rules that applied to the message.
    rules: list
    #: Columns the scorer read (``k.`` = the message's own).
    columns: tuple[str, ...]
    #: Extra logged features from the scorer (a model's contributions), where the score counted.
    extra: dict[str, np.ndarray]
    #: Expected value per audience row, set by arbitration.
    ev: np.ndarray | None = None


def partition_task(url: str, job: PlanJob, part: CustomerRange) -> PartitionResult:
    """:func:`decide_partition` in a worker process, on its own engine for ``url``."""
    engine = make_engine(url)
    try:
        return decide_partition(engine, job, part)
    finally:
        engine.dispose()


def decide_partition(engine: Engine, job: PlanJob, part: CustomerRange) -> PartitionResult:
    """Decide every (customer, message) of the customers of ``part``."""
    lap = Laps()
    camp = job.campaign
    with engine.connect() as conn:
        frame = compute_features(conn, part.ids, job.as_of, job.contexts, job.settings, bounded=part.bounded,
                                 columns=job.columns)
        lap("features")
        if "columns" in frame.seconds:  # reported apart: the NumPy pass over the columnar copy
            lap.timings["features"] -= frame.seconds["columns"]
            lap.timings["features (columnar)"] = frame.seconds["columns"]
        load_context(conn, frame, camp, job.settings.timezone, job.run_id, job.as_of)
        lap("ledger context")
        shared_mailbox.merge(frame, job.mailboxes)
        lap("shared mailboxes")

    n = len(frame)
    scorer = job.scorer
    candidates: list[Candidates | None] = []
    for m in camp.messages:
        rows = np.searchsorted(frame.customer_ids, part.members[tuple(sorted(m.segments))])
        done = job.kept.get(m.id)
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
        extra = {}
        if hasattr(scorer, "logged"):
            extra = scorer.logged(frame, m, considered)
            lap("model explanations")
        # Contributions are logged only where the score counted: keep just those (few, as most
        # suppressions are hard), not one full-frame array per component until the last message.
        contrib = {name: np.asarray(c)[considered] for name, c in contrib.items()}
        candidates.append(Candidates(m, rows, score, contrib, bits[rows], hard[rows], details, applied, scorer.columns(m), extra))

    budget, room = _budget(frame, camp, job.kept)
    wins, best = _arbitration(frame, camp, candidates, budget)
    rooms = _mailbox_rooms(frame, camp, job.mailboxes, room)
    lap("arbitration")

    hashes = None
    if any(m.policy.holdout_share > 0 for m in camp.messages):
        # Only a winner can be held out: hash those (one BLAKE2b call each), not the whole range.
        winners = np.unique(np.concatenate([c.rows[won] for c, won in zip(candidates, wins)]))
        hashes = np.zeros(n, dtype=np.uint64)
        hashes[winners] = customer_hashes(_drawn_as(frame.customer_ids[winners], job.mailboxes))
    # One str per customer, shared by all of a customer's decisions (not one copy per decision).
    customer_texts = frame.customer_ids.astype(object)
    parts, summaries, positions, send_addresses = [], [], [], []
    for j, won in enumerate(wins):
        cand = candidates[j]
        candidates[j] = None  # the message's scores, contributions and rule masks die with its decisions
        m, rows = cand.message, cand.rows
        positions.append(np.asarray(rows, dtype=np.int64))  # searchsorted's intp: no copy
        lost = (cand.bits == 0) & ~won
        held = np.zeros(len(rows), dtype=bool)
        if m.policy.holdout_share > 0 and hashes is not None:
            held = won & (holdout_draw(job.seed, hashes[rows], m.id) < m.policy.holdout_share)
        part_rows, summary = _decide(frame, cand, Outcomes(won, lost, held), best, camp, budget, customer_texts)
        del cand
        parts.append(part_rows)
        summaries.append(summary)
        sent = rows[part_rows.action == "send"]
        send_addresses.append(None if frame.addresses is None else normalized(frame.addresses[sent]))
    lap("decisions")
    return PartitionResult(parts, summaries, lap.timings, scorer.info() if hasattr(scorer, "info") else {}, positions,
                           send_addresses, rooms)


def _drawn_as(customer_ids: np.ndarray, mailboxes: MailboxFacts) -> np.ndarray:
    """Whose hold-out draw each customer takes: her own, or for an address several customers share the
    mailbox's lowest customer id, so the mailbox lands in one arm of each message's experiment (a
    customer who shares no address keeps her draw)."""
    box = mailboxes.mailbox_of(customer_ids)
    shared = box >= 0
    if not shared.any():
        return customer_ids
    out = customer_ids.astype(object)
    at = np.searchsorted(mailboxes.ids, customer_ids[shared])
    out[shared] = mailboxes.first[at]
    return out


def _mailbox_rooms(frame, camp: Campaign, mailboxes: MailboxFacts, room: np.ndarray) -> MailboxRooms | None:
    """The caps' room of this range's customers who share an address, for the mailbox's budget (:mod:`.mailbox_budget`)."""
    if not len(mailboxes) or not len(frame):
        return None
    # The few shared customers looked up in the range's sorted ids, not every row in theirs.
    at = np.minimum(np.searchsorted(frame.customer_ids, mailboxes.ids), len(frame) - 1)
    rows = np.unique(at[frame.customer_ids[at] == mailboxes.ids])
    if not len(rows):
        return None
    topic = np.stack([_topic_budget(frame, m, rows) for m in camp.messages], axis=1)
    return MailboxRooms(frame.customer_ids[rows].astype(str), room[rows], topic)


@dataclass(frozen=True)
class Outcomes:
    """Per audience row of one message: what arbitration and the hold-out draw made of it."""

    won: np.ndarray
    #: Passed every rule but lost arbitration.
    lost: np.ndarray
    held: np.ndarray


def _arbitration(frame, camp: Campaign, candidates: list[Candidates], budget: np.ndarray):
    """Run arbitration over every message's candidates at once.

    Returns (per message: winner mask over its audience rows, per customer
    row: the index of their best winning message or -1). Also sets each
    message's expected values (:attr:`Candidates.ev`).
    """
    topics = {t: i for i, t in enumerate(sorted({m.topic for m in camp.messages}))}
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("cust", "msg", "ev", "prio", "topic", "topic_budget")}
    for j, cand in enumerate(candidates):
        m, rows = cand.message, cand.rows
        model_ev = f"{m.id}.expected_value"
        # A trained model's expected value (gain minus irritation risk) replaces score × value.
        cand.ev = frame[model_ev][rows] if model_ev in frame else cand.score[rows] * m.value - m.policy.contact_cost
        ok = cand.bits == 0
        r = rows[ok]
        parts["cust"].append(r)
        parts["msg"].append(np.full(len(r), j, dtype=np.int64))
        parts["ev"].append(cand.ev[ok])
        parts["prio"].append(np.full(len(r), m.priority, dtype=np.int64))
        parts["topic"].append(np.full(len(r), topics[m.topic], dtype=np.int64))
        parts["topic_budget"].append(_topic_budget(frame, m, r))
    cat = {k: np.concatenate(v) if v else np.zeros(0, dtype=np.int64) for k, v in parts.items()}
    win = arbitrate(cat["cust"], cat["topic"], cat["ev"].astype(np.float64), cat["prio"], cat["msg"],
                    budget[cat["cust"]], cat["topic_budget"])
    best = best_winner(cat["cust"], cat["msg"], cat["ev"].astype(np.float64), win, len(frame))
    wins, start = [], 0
    for cand in candidates:
        ok = cand.bits == 0
        k = int(ok.sum())
        won = np.zeros(len(cand.rows), dtype=bool)
        won[np.flatnonzero(ok)] = win[start:start + k]
        start += k
        wins.append(won)
    return wins, best


def _remaining(limit: np.ndarray, used: np.ndarray) -> np.ndarray:
    return np.where(np.isinf(limit), NO_LIMIT, np.maximum(limit - used, 0)).astype(np.int64)


def _budget(frame, camp: Campaign, kept: dict[str, set[str]]) -> tuple[np.ndarray, np.ndarray]:
    """E-mails each customer may still get from this run (per-run limit and the global caps), and
    the caps' room alone."""
    n = len(frame)
    used_here = np.zeros(n, dtype=np.int64)
    for customers in kept.values():
        if customers:
            used_here += np.isin(frame.customer_ids, np.array(sorted(customers)))
    budget = np.maximum(camp.policy.max_messages_per_run - used_here, 0)
    room = np.full(n, NO_LIMIT, dtype=np.int64)
    if camp.policy.rule_on("FREQUENCY_CAP"):
        c7, c30 = effective_caps(frame, None, camp.policy)
        s7 = frame["sends_7"] + frame["planned_7"]
        s30 = frame["sends_30"] + frame["planned_30"]
        room = np.minimum(_remaining(c7, s7), _remaining(c30, s30))
        budget = np.minimum(budget, room)
    return budget, room


def _topic_budget(frame, m, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
    """E-mails on the message's topic each customer (of ``rows``) may still get: the topic caps' room."""
    n = len(frame.customer_ids[rows])
    out = np.full(n, NO_LIMIT, dtype=np.int64)
    if not m.policy.rule_on("TOPIC_FREQUENCY_CAP"):
        return out
    for days, key in ((7, "7d"), (30, "30d")):
        cap = m.policy.topic_cap(key)
        if cap is not None:
            used = frame[f"{m.id}.topic_sends_{days}"][rows] + frame[f"{m.id}.topic_planned_{days}"][rows]
            out = np.minimum(out, _remaining(np.full(n, float(cap)), used))
    return out


def _decide(frame, cand: Candidates, out: Outcomes, best, camp, budget, customer_texts) -> tuple[dec.Decisions, MessageSummary]:
    """The decision rows of one message, with reasons and logged features."""
    m, rows, bits = cand.message, cand.rows, cand.bits
    won, lost, held = out.won, out.lost, out.held
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
    score = cand.score[rows]
    considered = ~cand.hard
    idx_considered = np.flatnonzero(considered)
    js.add("score", score[considered], idx_considered, keep_zero=True)
    for name, c in cand.contrib.items():
        js.add(f"c.{name}", c, idx_considered)  # already cut to the considered rows
    for key, values in cand.extra.items():
        js.add(key, values, idx_considered)
    scorer_cols = list(cand.columns)
    full = bits == 0  # send, hold-out, arbitration lost: every column the decision used
    full_idx = np.flatnonzero(full)
    logged = dict.fromkeys(scorer_cols)
    for rule in cand.rules:
        logged.update(dict.fromkeys(rule.columns))
    for col in logged:
        if col == SCORE:
            continue
        values = _column(frame, m, col)[rows]
        js.add(logged_key(col), values[full], full_idx)
    # Suppressed rows: the columns and limits of the rules that fired (each column once per row).
    fired_cols: dict[str, np.ndarray] = {}
    for b, code in enumerate(codes):
        fired = ((bits >> b) & 1).astype(bool)
        if not fired.any():
            continue
        rule_cols = RULES[code].columns + (tuple(scorer_cols) if RULES[code].logs_score_inputs else ())
        for col in rule_cols:
            if col != SCORE:
                fired_cols[col] = fired_cols.get(col, np.zeros(size, dtype=bool)) | fired
    for col, fired in fired_cols.items():
        js.add(logged_key(col), _column(frame, m, col)[rows][fired], np.flatnonzero(fired))
    for b, code in enumerate(codes):
        fired = ((bits >> b) & 1).astype(bool)
        if not fired.any():
            continue
        fidx = np.flatnonzero(fired)
        for key, value in cand.details.get(code, {}).items():
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

    ev = cand.ev
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
    return np.asarray(frame[frame_key(name, m.id)], dtype=np.float64)
