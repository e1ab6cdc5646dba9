"""One budget per mailbox: customers who share an address get at most the mailbox's e-mails in a run.

Each customer is decided on her own (:mod:`.partition`), with a budget of
``max_messages_per_run`` and what the frequency caps leave. The caps already
count what the mailbox received under all its customer ids
(:mod:`.shared_mailbox`), and one e-mail per address (:mod:`.addresses`)
keeps each message to one of them; but two ids of one mailbox could still
each get a *different* message of the run. After one e-mail per address,
this step decides the mailbox as one customer: its sends and hold-outs, one
per message, are arbitrated again over the mailbox (the same ordering as
:func:`relmail.planning.arbitration.arbitrate`: expected value, priority,
the campaign's order) against the mailbox's budget: ``max_messages_per_run``
less the e-mails of the run already delivered to any of its ids (a re-plan
keeps those), and the room the caps leave it, per topic too. The ones that
do not fit become ``suppress`` with ``SHARED_BUDGET``, their logged features
naming the message that got the place (``lost_to``), the customer id it goes
to (``same_address_as``) and the mailbox's budget (``budget``).

The hold-out draw is the mailbox's too (:mod:`.partition`): a mailbox is held
out of a message under all its ids or none. A send or hold-out under one id
of a message this run already delivered under another id becomes
``SHARED_ADDRESS``: the mailbox got the message, so it is in no control group.

Only the few customers whose address another customer has are looked at:
their rows are found in each decided part by binary search.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import orjson
from sqlalchemy import JSON, Text, bindparam, cast, func, update
from sqlalchemy.dialects.postgresql import JSONB

from ..rules import HOLDOUT, SHARED_ADDRESS, SHARED_BUDGET
from . import decisions as dec
from .arbitration import NO_LIMIT, arbitrate

DEC = dec.DEC


@dataclass(frozen=True)
class MailboxRooms:
    """Per decided customer who shares an address (sorted ``ids``): the room the frequency caps leave
    (``room``) and, per message of the campaign (columns in its order), the room its topic caps leave."""

    ids: np.ndarray
    room: np.ndarray
    topic: np.ndarray

    @classmethod
    def concat(cls, parts: Sequence[MailboxRooms | None], messages: int) -> MailboxRooms:
        """The rooms of every range, in order (ranges are consecutive, so the ids stay sorted)."""
        found = [p for p in parts if p is not None]
        if not found:
            return cls(np.array([], dtype=str), np.zeros(0, dtype=np.int64), np.zeros((0, messages), dtype=np.int64))
        return cls(np.concatenate([p.ids for p in found]), np.concatenate([p.room for p in found]),
                   np.concatenate([p.topic for p in found]))


@dataclass(frozen=True)
class Change:
    """One decision this step changes: to ``suppress`` with ``reason``, and the keys added to its logged features."""

    message: int
    part: int
    row: int
    reason: str
    logged: dict


def limit(messages: Sequence, policy_max: int, parts: Sequence[Sequence[dec.Decisions]], box_of, rooms: MailboxRooms,
          kept: Mapping[str, set[str]]) -> list[Change]:
    """The sends and hold-outs of mailboxes several customers share that exceed the mailbox's budget.

    ``messages``: the campaign's messages (``parts[j]`` holds message j's
    decided parts, each sorted by customer); ``box_of(ids)``: each id's
    mailbox number or -1 (:meth:`relmail.planning.shared_mailbox.MailboxFacts.mailbox_of`);
    ``kept``: message id → customers whose send of it this run already
    delivered or has in flight.
    """
    if not len(rooms.ids):
        return []
    needles = rooms.ids.astype(object)
    found: dict[str, list] = {k: [] for k in ("msg", "part", "row", "customer", "ev")}
    for j, message_parts in enumerate(parts):
        for p, d in enumerate(message_parts):
            if not len(d):
                continue
            at = np.minimum(np.searchsorted(d.customer_id, needles), len(d) - 1)
            rows = at[d.customer_id[at] == needles]
            rows = rows[(d.action[rows] == "send") | (d.action[rows] == "holdout")]
            found["msg"].append(np.full(len(rows), j, dtype=np.int64))
            found["part"].append(np.full(len(rows), p, dtype=np.int64))
            found["row"].append(rows.astype(np.int64))
            found["customer"].append(d.customer_id[rows].astype(str))
            found["ev"].append(np.nan_to_num(np.asarray(d.expected_value[rows], dtype=np.float64), nan=-np.inf))
    cand = {k: np.concatenate(v) for k, v in found.items()} if found["msg"] else {}
    if not cand or not len(cand["msg"]):
        return []
    cand["box"] = box_of(cand["customer"])
    changes: list[Change] = []

    # What the run already delivered to each mailbox: it uses the budget, and a message it holds is no hold-out.
    used: dict[int, int] = {}
    holder: dict[tuple[int, int], str] = {}
    ids = {m.id: j for j, m in enumerate(messages)}
    for message_id, customers in kept.items():
        if not customers:
            continue
        listed = np.array(sorted(customers), dtype=str)
        for c, b in zip(listed.tolist(), box_of(listed).tolist()):
            if b >= 0:
                used[b] = used.get(b, 0) + 1
                if message_id in ids:
                    holder.setdefault((b, ids[message_id]), c)
    got = np.array([(b, j) in holder for b, j in zip(cand["box"].tolist(), cand["msg"].tolist())], dtype=bool)
    for i in np.flatnonzero(got).tolist():
        changes.append(Change(int(cand["msg"][i]), int(cand["part"][i]), int(cand["row"][i]), SHARED_ADDRESS,
                              {"same_address_as": holder[(int(cand["box"][i]), int(cand["msg"][i]))]}))
    cand = {k: v[~got] for k, v in cand.items()}
    if not len(cand["msg"]):
        return changes

    # One unit per (mailbox, message): a send, or the hold-outs of every id of a held-out mailbox.
    keys = cand["box"] * len(messages) + cand["msg"]
    unit_key, unit = np.unique(keys, return_inverse=True)
    n_units = len(unit_key)
    ev = np.full(n_units, -np.inf)
    np.fmax.at(ev, unit, cand["ev"])
    box, msg = unit_key // len(messages), unit_key % len(messages)
    # The mailbox's budget and room: the least any of its decided ids has (their counts are the mailbox's).
    where = np.searchsorted(rooms.ids, cand["customer"])
    boxes = int(box.max()) + 1
    room = np.full(boxes, NO_LIMIT, dtype=np.int64)
    np.minimum.at(room, cand["box"], rooms.room[where])
    topic_room = np.full(n_units, NO_LIMIT, dtype=np.int64)
    np.minimum.at(topic_room, unit, rooms.topic[where, cand["msg"]])
    spent = np.array([used.get(b, 0) for b in range(boxes)], dtype=np.int64)
    budget = np.minimum(np.maximum(policy_max - spent, 0), room)
    topics = {t: i for i, t in enumerate(sorted({m.topic for m in messages}))}
    topic = np.array([topics[messages[j].topic] for j in msg.tolist()], dtype=np.int64)
    priority = np.array([messages[j].priority for j in msg.tolist()], dtype=np.int64)
    win = arbitrate(box, topic, ev, priority, msg, budget[box], topic_room)
    if win.all():
        return changes

    # Who got the mailbox's place: its best winning unit (in arbitration's order), and the customer id it goes to.
    ranked = np.lexsort((msg, -priority, -ev))
    best: dict[int, list[int]] = {}
    for u in ranked[win[ranked]].tolist():
        best.setdefault(int(box[u]), []).append(u)
    first_of = {}
    for i in np.argsort(cand["customer"], kind="stable").tolist():
        first_of.setdefault(int(unit[i]), str(cand["customer"][i]))
    for i in np.flatnonzero(~win[unit]).tolist():
        b, me = int(cand["box"][i]), str(cand["customer"][i])
        logged: dict = {"budget": int(budget[b])}
        winners = best.get(b, [])
        # Name a winner under another id where there is one: that is where the mailbox's place went.
        other = next((w for w in winners if first_of[w] != me), winners[0] if winners else None)
        if other is not None:
            logged["lost_to"] = messages[int(msg[other])].id
            logged["same_address_as"] = first_of[other]
        changes.append(Change(int(cand["msg"][i]), int(cand["part"][i]), int(cand["row"][i]), SHARED_BUDGET, logged))
    return changes


def apply(parts: Sequence[Sequence[dec.Decisions]], summaries: Sequence, changes: Sequence[Change]) -> None:
    """Make ``changes`` in the decided parts and the messages' counts (in place)."""
    for c in changes:
        d, summary = parts[c.message][c.part], summaries[c.message]
        if d.action[c.row] == "holdout":
            summary.holdout -= 1
            summary.reasons[HOLDOUT] -= 1
            if not summary.reasons[HOLDOUT]:
                del summary.reasons[HOLDOUT]
        else:
            summary.send -= 1
        summary.suppress += 1
        summary.reasons[c.reason] = summary.reasons.get(c.reason, 0) + 1
        d.action[c.row] = "suppress"
        d.reasons[c.row] = c.reason
        text = d.features[c.row]
        if text != "{}":  # features kept in memory (a dry run, or asked for)
            d.features[c.row] = orjson.dumps({**orjson.loads(text), **c.logged}).decode()


def write(conn, run_id: str, messages: Sequence, parts: Sequence[Sequence[dec.Decisions]], changes: Sequence[Change]) -> None:
    """The same changes in the ledger, inside the plan's transaction (the decisions are written already)."""
    rows = [{"r": run_id, "c": str(parts[c.message][c.part].customer_id[c.row]), "m": messages[c.message].id,
             "why": c.reason, "x": orjson.dumps(c.logged).decode()} for c in changes]
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        features = cast(cast(DEC.c.features, JSONB).op("||")(cast(cast(bindparam("x"), Text), JSONB)), JSON)
    else:
        features = func.json_patch(DEC.c.features, bindparam("x"))
    stmt = (update(DEC)
            .where(DEC.c.run_id == bindparam("r"), DEC.c.customer_id == bindparam("c"), DEC.c.message_id == bindparam("m"))
            .values(action="suppress", reasons=bindparam("why"), features=features))
    conn.execute(stmt, rows)
