"""What one mailbox said or received under other customer ids: the facts of a shared address.

A shop's export holds the same mailbox under two customer ids more often
than anyone expects (a guest checkout, then a registered account; the same
address in another case; a shop's customer and a mailing tool's profile
keyed differently). Decided customer by customer, an opt-out, a hard bounce
or a spam complaint recorded under one id would not stop the mail to the
other, and each id would have its own frequency cap. What is about the
mailbox, not the account, is therefore read across every customer with the
address (compared trimmed and case-insensitively, as
:mod:`relmail.planning.addresses` does), after the ledger context is loaded
and before the rules run:

- consent: for each topic (and for ``*``, every e-mail) the mailbox's latest
  dated change wins, whichever id recorded it; a tie goes to the opt-out, and
  an opt-in without a date (dated 1970-01-01 by the imports) never beats a
  dated opt-out. An unsubscribe event that stops every e-mail counts unless a
  global opt-in on the mailbox came after it. When that latest word is
  another id's opt-out, ``SHARED_OPT_OUT`` suppresses the send. An opt-in
  under another id never lifts a customer's own opt-out: the mail reaches the
  mailbox through the id that holds the opt-in (one e-mail per address);
- a hard bounce under another id with no delivery, open or click to the
  mailbox since: ``SHARED_HARD_BOUNCE``; a spam complaint under another id:
  ``SHARED_COMPLAINT`` (the person behind the mailbox complained);
- what the mailbox received and did counts whole: e-mails sent and planned
  (the frequency caps, the topic caps, a message already sent), opens (fatigue),
  service tickets (open and recent), the smallest frequency wish.

``address_shared`` (the number of other customer ids with the address) is
logged with the decisions these columns decide, so ``relmail why`` can say
that the count is the mailbox's, and look up which other id and when.

Only the few customers whose address another customer has are read again:
:func:`find` lists them once per plan (one pass over the customers), and
:func:`merge` computes their features as any range's, in one batch per range.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import func, select

from ..features import queries as q
from ..features.derived import fatigue
from ..features.queries import DELIVERY_TYPES, unsubscribed_all
from ..features.sql import age_days, align, fetch_columns, when
from ..store.models import MAILBOX, Customer, Event, Preference
from .pending import planned, recent_tickets

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ..campaigns import Campaign
    from ..features.frame import FeatureFrame, FeatureSettings

C, E, P = Customer.__table__, Event.__table__, Preference.__table__
#: Customer ids per ``IN (...)`` (well under SQLite's 32,766 and PostgreSQL's 65,535 parameters).
CHUNK = 5_000

#: Counts of what the mailbox received or did: summed over its customers.
SUMMED = ("sends_7", "sends_30", "sends_90", "opens_30", "opens_90", "planned_7", "planned_30", "open_tickets")
#: The same per message context ``k``: ``k.<suffix>``.
SUMMED_PER_MESSAGE = ("topic_sends_7", "topic_sends_30", "topic_planned_7", "topic_planned_30", "already_sent", "planned_same",
                      "recent_tickets")


@dataclass(frozen=True)
class Mailboxes:
    """The customers whose address another customer has too: sorted ids, and each one's mailbox number."""

    ids: np.ndarray
    box: np.ndarray

    @classmethod
    def none(cls) -> Mailboxes:
        return cls(np.array([], dtype="<U1"), np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    def around(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sorted ids, mailbox numbers) of every customer sharing a mailbox with one of ``ids`` (those included)."""
        if not len(self) or not len(ids):
            return self.ids[:0], self.box[:0]
        touched = np.unique(self.box[np.isin(self.ids, ids)])
        keep = np.isin(self.box, touched)
        return self.ids[keep], self.box[keep]


def find(conn: Connection) -> Mailboxes:
    """Every customer whose address (trimmed, in any case) another customer has.

    The mailbox index read in its order, repeats found in NumPy, then the
    customers of the repeated mailboxes: a GROUP BY over the expression
    costs SQLite four times as much (it evaluates it per table row), and
    SQLAlchemy's rows another two (the driver's tuples are read instead).
    """
    keys, _ = fetch_columns(conn, select(MAILBOX).where(MAILBOX != "").order_by(MAILBOX))
    if len(keys) < 2:
        return Mailboxes.none()
    repeated = sorted(set(keys[1:][keys[1:] == keys[:-1]].tolist()))
    if not repeated:
        return Mailboxes.none()
    rows = []
    for a in range(0, len(repeated), CHUNK):
        rows += conn.execute(select(C.c.id, MAILBOX).where(MAILBOX.in_(repeated[a:a + CHUNK]))).all()
    ids = np.array([r[0] for r in rows], dtype=str)
    _, box = np.unique(np.array([r[1] for r in rows], dtype=object).astype(str), return_inverse=True)
    order = np.argsort(ids, kind="stable")
    return Mailboxes(ids[order], box[order].astype(np.int64))


def mates(conn: Connection, customer_ids: Iterable[str]) -> dict[str, list[str]]:
    """Customer id -> the other customer ids with its address (trimmed, in any case), for the ids that have any.

    Two look-ups per chunk of ids through the primary key and the mailbox index, not a pass over the customers.
    """
    ids = sorted(set(customer_ids))
    out: dict[str, list[str]] = {}
    for a in range(0, len(ids), CHUNK):
        keys = dict(conn.execute(select(C.c.id, MAILBOX).where(C.c.id.in_(ids[a:a + CHUNK]), C.c.email != "")).all())
        holders: dict[str, list[str]] = {}
        for cid, key in conn.execute(select(C.c.id, MAILBOX).where(MAILBOX.in_(sorted(set(keys.values()))))):
            holders.setdefault(key, []).append(cid)
        for cid, key in keys.items():
            others = sorted(c for c in holders.get(key, ()) if c != cid)
            if others:
                out[cid] = others
    return out


def add_columns(frame: FeatureFrame) -> None:
    """The mailbox columns, 0 for every row: what :func:`merge` fills in for the customers who share one."""
    n = len(frame)
    for name in ("address_shared", "shared_unsubscribed", "shared_hard_bounced", "shared_complained"):
        frame.columns[name] = np.zeros(n)
    for key in frame.contexts:
        frame.columns[f"{key}.shared_topic_opt_out"] = np.zeros(n)


def merge(conn: Connection, frame: FeatureFrame, mailboxes: Mailboxes, campaign: Campaign, run_id: str,
          settings: FeatureSettings) -> None:
    """Make ``frame``'s rows of customers who share a mailbox carry the mailbox's facts (in place; see the module).

    The mailboxes' customers are read as of ``frame.as_of``, with the ledger context of run ``run_id`` of ``campaign``.
    """
    add_columns(frame)
    ids, box = mailboxes.around(frame.customer_ids)
    if not len(ids):
        return
    rows = np.searchsorted(frame.customer_ids, ids)
    here = (rows < len(frame)) & (frame.customer_ids[np.minimum(rows, len(frame) - 1)] == ids)
    rows, row_box = rows[here], box[here]
    boxes = int(box.max()) + 1
    theirs = _counts(conn, ids, frame.as_of, frame.contexts, campaign, run_id, settings)

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(box, weights=np.nan_to_num(values), minlength=boxes)[row_box]

    for name in SUMMED:
        frame.columns[name][rows] = total(theirs[name])
    for key in frame.contexts:
        for suffix in SUMMED_PER_MESSAGE:
            name = f"{key}.{suffix}"
            if name in theirs:
                summed = total(theirs[name])
                frame.columns[name][rows] = np.minimum(summed, 1.0) if suffix == "already_sent" else summed
    frame.columns["fatigue"][rows] = fatigue(*(frame[name][rows] for name in ("sends_30", "sends_90", "opens_30", "opens_90")))
    wish = np.full(boxes, np.inf)
    np.fmin.at(wish, box, np.where(np.isnan(theirs["frequency_wish"]), np.inf, theirs["frequency_wish"]))
    frame.columns["frequency_wish"][rows] = np.where(np.isinf(wish), np.nan, wish)[row_box]
    frame.columns["address_shared"][rows] = np.bincount(box, minlength=boxes)[row_box] - 1.0

    facts = _facts(conn, ids, frame.as_of)
    own = frame.customer_ids[rows]
    mine = np.searchsorted(ids, own)  # each row's place among the mailbox customers
    # Bounce: the mailbox's latest hard bounce after its latest sign of delivery, not this customer's own.
    bounce, delivered = _latest(box, facts["bounce"], boxes), _latest(box, facts["delivered"], boxes)
    with np.errstate(invalid="ignore"):
        dead = ~np.isnan(bounce) & (np.isnan(delivered) | (bounce < delivered))
    frame.columns["shared_hard_bounced"][rows] = (dead[row_box] & (frame["hard_bounced"][rows] < 0.5)).astype(float)
    complaints = np.bincount(box, weights=(facts["complaints"] > 0).astype(float), minlength=boxes)
    frame.columns["shared_complained"][rows] = ((complaints[row_box] - (facts["complaints"][mine] > 0) > 0)
                                                & (frame["complained_ever"][rows] < 0.5)).astype(float)
    # Every e-mail: the latest dated global change is another id's opt-out, or another id's unsubscribe
    # came after the mailbox's last global opt-in.
    prefs = facts["preferences"]
    out_all = _opted_out_by_other(prefs, "*", box, ids, own, row_box, boxes)
    opt_in = _latest(box[prefs["member"]][prefs["in"] & (prefs["topic"] == "*")],
                     prefs["age"][prefs["in"] & (prefs["topic"] == "*")], boxes)
    unsub = facts["unsubscribed"]
    with np.errstate(invalid="ignore"):
        stands = ~np.isnan(unsub) & (np.isnan(opt_in[box]) | (opt_in[box] > unsub))
    others = np.bincount(box, weights=stands.astype(float), minlength=boxes)[row_box] - stands[mine]
    frame.columns["shared_unsubscribed"][rows] = (out_all | (others > 0)).astype(float)
    for key, ctx in frame.contexts.items():
        if ctx.topic not in (None, "*"):
            frame.columns[f"{key}.shared_topic_opt_out"][rows] = _opted_out_by_other(
                prefs, ctx.topic, box, ids, own, row_box, boxes).astype(float)


class _Listed:
    """A feature statement's audience given as a list of ids (:class:`relmail.features.sql.Scope`'s ``restrict``):
    a few customers spread over the store, each found through the customer index."""

    def __init__(self, ids: list[str]):
        self.ids = ids

    def restrict(self, stmt, customer_col, by_customer_index: bool = True):
        return stmt.where(customer_col.in_(self.ids))


def _counts(conn: Connection, ids: np.ndarray, as_of, contexts: dict, campaign: Campaign, run_id: str,
            settings: FeatureSettings) -> dict[str, np.ndarray]:
    """What :data:`SUMMED` and :data:`SUMMED_PER_MESSAGE` name, and ``frequency_wish``, for the sorted ``ids``.

    The same statements (and the same calendar days) as any range's features
    and ledger context, for these customers only: their e-mail events, service
    tickets and preferences, and the sends other runs planned for them.
    """
    dialect, tz = conn.dialect.name, settings.timezone
    out: dict[str, np.ndarray] = {}
    for a in range(0, len(ids), CHUNK):
        chunk = ids[a:a + CHUNK]
        scope = _Listed(chunk.tolist())
        for query in (q.email(scope, as_of, dialect, contexts, tz), q.tickets(scope, as_of, dialect),
                      q.preferences(scope, as_of, dialect, contexts)):
            keys, values = query.decode(*fetch_columns(conn, query.stmt))
            mask, pos = align(chunk, keys)
            for name, col in values.items():
                part = np.full(len(chunk), np.nan if name in query.nan_fill else 0.0)
                part[pos] = col[mask]
                out.setdefault(name, np.zeros(0))
                out[name] = np.concatenate([out[name], part])
    for key, ctx in contexts.items():
        if ctx.topic is not None:
            out[f"{key}.topic_sends_7"], out[f"{key}.topic_sends_30"] = out[f"topic:{ctx.topic}:7"], out[f"topic:{ctx.topic}:30"]
    out.update(planned(conn, ids, campaign, tz, run_id, as_of, exact=True))
    out.update(recent_tickets(conn, ids, campaign, as_of))
    return out


def _latest(box: np.ndarray, age: np.ndarray, boxes: int) -> np.ndarray:
    """Per mailbox, the smallest age in days (the latest time) of ``age`` (NaN: none)."""
    out = np.full(boxes, np.inf)
    np.fmin.at(out, box, np.where(np.isnan(age), np.inf, age))
    return np.where(np.isinf(out), np.nan, out)


def _opted_out_by_other(prefs: dict[str, np.ndarray], topic: str, box: np.ndarray, ids: np.ndarray, own: np.ndarray,
                        row_box: np.ndarray, boxes: int) -> np.ndarray:
    """Per row: the mailbox's latest change of ``topic`` is an opt-out another customer id recorded."""
    on = np.flatnonzero(prefs["topic"] == topic)
    if not len(on):
        return np.zeros(len(row_box), dtype=bool)
    member, age, opted_in = prefs["member"][on], prefs["age"][on], prefs["in"][on]
    # Latest first within each mailbox; at the same time the opt-out first.
    order = np.lexsort((opted_in, age, box[member]))
    first = np.ones(len(order), dtype=bool)
    first[1:] = box[member[order]][1:] != box[member[order]][:-1]
    latest = order[first]
    by = np.full(boxes, -1, dtype=np.int64)
    out = np.zeros(boxes, dtype=bool)
    by[box[member[latest]]] = member[latest]
    out[box[member[latest]]] = ~opted_in[latest]
    who = by[row_box]
    return out[row_box] & (who >= 0) & (ids[np.maximum(who, 0)] != own)


def _facts(conn: Connection, ids: np.ndarray, as_of) -> dict:
    """Per mailbox customer (``ids`` order): ages in days of the last hard bounce, sign of delivery and
    unsubscribe from all e-mail, the complaints, and their consent rows."""
    dialect = conn.dialect.name
    n = len(ids)
    facts = {name: np.full(n, np.nan) for name in ("bounce", "delivered", "unsubscribed")}
    facts["complaints"] = np.zeros(n)
    t, at = E.c.type, E.c.occurred_at
    member, topic, opted_in, age = [], [], [], []
    for a in range(0, n, CHUNK):
        chunk = ids[a:a + CHUNK].tolist()
        stmt = (select(E.c.customer_id,
                       age_days(dialect, as_of, func.max(at).filter(t == "email_bounced_hard")),
                       age_days(dialect, as_of, func.max(at).filter(t.in_(DELIVERY_TYPES))),
                       age_days(dialect, as_of, func.max(at).filter(unsubscribed_all())),
                       func.count().filter(t == "email_complained"))
                .where(E.c.customer_id.in_(chunk), at <= when(as_of),
                       t.in_(("email_bounced_hard", "email_unsubscribed", "email_complained", *DELIVERY_TYPES)))
                .group_by(E.c.customer_id))
        for cid, bounce, delivered, unsub, complaints in conn.execute(stmt):
            i = int(np.searchsorted(ids, cid))
            facts["bounce"][i], facts["delivered"][i] = _nan(bounce), _nan(delivered)
            facts["unsubscribed"][i], facts["complaints"][i] = _nan(unsub), float(complaints or 0)
        # Consent is read as it is now, as the features read it (a plan of an earlier time included).
        for cid, tp, yes, days in conn.execute(select(P.c.customer_id, P.c.topic, P.c.opted_in,
                                                      age_days(dialect, as_of, P.c.updated_at))
                                               .where(P.c.customer_id.in_(chunk))):
            member.append(int(np.searchsorted(ids, cid)))
            topic.append(tp)
            opted_in.append(bool(yes))
            age.append(float(days))
    facts["preferences"] = {"member": np.array(member, dtype=np.int64), "topic": np.array(topic, dtype=object),
                            "in": np.array(opted_in, dtype=bool), "age": np.array(age, dtype=float)}
    return facts


def _nan(value) -> float:
    return np.nan if value is None else float(value)
