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
  recorded under another id alone (a provider's re-subscription: the imports,
  the link and the preference page write theirs for every id,
  :mod:`relmail.feedback.consent`, :class:`relmail.importers.history.MailboxConsent`)
  never lifts a customer's own opt-out: the mail reaches the mailbox through
  the id that holds the opt-in (one e-mail per address);
- a hard bounce under another id with no delivery, open or click to the
  mailbox since: ``SHARED_HARD_BOUNCE``; a spam complaint under another id:
  ``SHARED_COMPLAINT`` (the person behind the mailbox complained);
- a delivery, open or click under any id reached the mailbox: it lifts each
  id's own earlier hard bounce (``HARD_BOUNCE``), and the soft bounces of
  every id after the mailbox's last one count together
  (``REPEATED_SOFT_BOUNCE``);
- what the mailbox received and did counts whole: e-mails sent and planned
  (the frequency caps, the topic caps, a message already sent), products bought
  (``OWNS_PRODUCT``: a guest checkout's teapot is the account's too), opens (fatigue),
  service tickets (open and recent), the smallest frequency wish, and the
  hold-outs of earlier runs (``HELD_OUT``: the mailbox stays in the control group).

``address_shared`` (the number of other customer ids with the address) is
logged with the decisions these columns decide, so ``relmail why`` can say
that the count is the mailbox's, and look up which other id and when.

Only the few customers whose address another customer has are read again:
:func:`relmail.store.mailboxes.find` lists them once per plan (one pass over the customers), and
:func:`merge` computes their features as any range's, in one batch per range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import String, cast, func, select

from ..features import queries as q
from ..features.derived import complained, fatigue, hard_bounced
from ..features.queries import DELIVERY_TYPES, SOFT_BOUNCE_DAYS, unsubscribed_all
from ..features.sql import age_days, align, fetch_columns, unindexed, when
from ..store import aggregates
from ..store.mailboxes import Mailboxes, find
from ..store.models import Customer, Event, Preference
from .pending import held_out, planned, recent_tickets

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ..campaigns import Campaign
    from ..features.frame import FeatureContext, FeatureFrame, FeatureSettings

C, E, P = Customer.__table__, Event.__table__, Preference.__table__
#: Customer ids per ``IN (...)`` (well under SQLite's 32,766 and PostgreSQL's 65,535 parameters).
CHUNK = 5_000

#: Counts of what the mailbox received or did: summed over its customers.
SUMMED = ("sends_7", "sends_30", "sends_90", "opens_30", "opens_90", "planned_7", "planned_30", "open_tickets")
#: The same per message context ``k``: ``k.<suffix>``.
SUMMED_PER_MESSAGE = ("topic_sends_7", "topic_sends_30", "topic_planned_7", "topic_planned_30", "already_sent", "planned_same",
                      "recent_tickets", "held_out", "owns_product")


def add_columns(frame: FeatureFrame) -> None:
    """The mailbox columns, 0 for every row: what :func:`merge` fills in for the customers who share one."""
    n = len(frame)
    for name in ("address_shared", "shared_unsubscribed", "shared_hard_bounced", "shared_complained"):
        frame.columns[name] = np.zeros(n)
    for key in frame.contexts:
        frame.columns[f"{key}.shared_topic_opt_out"] = np.zeros(n)


@dataclass(frozen=True)
class MailboxFacts:
    """Per customer whose address another customer has (sorted ``ids``): the frame columns that are the mailbox's,
    the mailbox's number (``box``, 0 to the number of mailboxes) and its lowest customer id (``first``)."""

    ids: np.ndarray
    columns: dict[str, np.ndarray]
    box: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    first: np.ndarray = field(default_factory=lambda: np.array([], dtype="<U1"))

    @classmethod
    def none(cls) -> MailboxFacts:
        return cls(np.array([], dtype="<U1"), {})

    def mailbox_of(self, customer_ids: np.ndarray) -> np.ndarray:
        """The mailbox number of each of ``customer_ids``, -1 for a customer who shares no address."""
        return Mailboxes(self.ids, self.box).mailbox_of(customer_ids)

    def __len__(self) -> int:
        return len(self.ids)


def read(conn: Connection, audience: np.ndarray, as_of, contexts: dict[str, FeatureContext], campaign: Campaign,
         run_id: str, settings: FeatureSettings) -> MailboxFacts:
    """The mailbox's facts for every customer of the mailboxes several customers share that the sorted
    ``audience`` reaches, as of ``as_of``; once per plan.

    The ledger context (sends planned by other runs) is that of run ``run_id`` of ``campaign``.
    """
    mailboxes = find(conn)
    if not len(mailboxes) or not len(audience):
        return MailboxFacts.none()
    at = np.minimum(np.searchsorted(audience, mailboxes.ids), len(audience) - 1)
    reached = np.unique(mailboxes.box[audience[at] == mailboxes.ids])
    if not len(reached):
        return MailboxFacts.none()
    keep = np.isin(mailboxes.box, reached)
    ids = mailboxes.ids[keep]
    _, box = np.unique(mailboxes.box[keep], return_inverse=True)
    boxes = int(box.max()) + 1
    theirs = _counts(conn, ids, as_of, contexts, campaign, run_id, settings)
    out: dict[str, np.ndarray] = {}

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(box, weights=np.nan_to_num(values), minlength=boxes)[box]

    for name in SUMMED:
        out[name] = total(theirs[name])
    for key in contexts:
        for suffix in SUMMED_PER_MESSAGE:
            name = f"{key}.{suffix}"
            if name in theirs:
                yes_no = suffix in ("already_sent", "owns_product")
                out[name] = np.minimum(total(theirs[name]), 1.0) if yes_no else total(theirs[name])
    out["fatigue"] = fatigue(out["sends_30"], out["sends_90"], out["opens_30"], out["opens_90"])
    out["frequency_wish"] = _smallest(box, theirs["frequency_wish"], boxes)[box]
    out["address_shared"] = np.bincount(box, minlength=boxes)[box] - 1.0

    facts = _facts(conn, ids, box, as_of)
    # A sign of delivery under any id is mail reaching the mailbox: a customer's own hard bounce counts
    # (HARD_BOUNCE's definition) against the mailbox's latest one, as do the soft bounces, counted
    # over every id of the mailbox (REPEATED_SOFT_BOUNCE's definition: e-mails, in the last 90 days).
    delivered = _smallest(box, facts["delivered"], boxes)
    own_bounce = hard_bounced(facts["bounce"], delivered[box]) > 0
    out["hard_bounced"] = own_bounce.astype(float)
    out["days_since_delivery"] = delivered[box]
    soft = facts["soft"]
    with np.errstate(invalid="ignore"):
        counts = ~(soft["age"] >= delivered[box[soft["member"]]])  # NaN (no delivery ever): every one counts
    out["soft_bounces"] = np.bincount(box[soft["member"]], weights=counts.astype(float), minlength=boxes)[box]
    own_complaint = complained(facts["complaints"]) > 0
    # Bounce: the mailbox's latest hard bounce against its latest sign of delivery, under any id.
    dead = hard_bounced(_smallest(box, facts["bounce"], boxes), delivered) > 0
    out["shared_hard_bounced"] = (dead[box] & ~own_bounce).astype(float)
    out["shared_complained"] = ((np.bincount(box, weights=own_complaint.astype(float), minlength=boxes)[box] > 0)
                                & ~own_complaint).astype(float)
    # Every e-mail: the latest dated global change is another id's opt-out, or another id's unsubscribe
    # came after the mailbox's last global opt-in.
    prefs = facts["preferences"]
    global_in = prefs["in"] & (prefs["topic"] == "*")
    opt_in = _smallest(box[prefs["member"][global_in]], prefs["age"][global_in], boxes)
    unsub = facts["unsubscribed"]
    with np.errstate(invalid="ignore"):
        stands = ~np.isnan(unsub) & (np.isnan(opt_in[box]) | (opt_in[box] > unsub))
    others = np.bincount(box, weights=stands.astype(float), minlength=boxes)[box] - stands
    out["shared_unsubscribed"] = (_opted_out_by_other(prefs, "*", box, boxes) | (others > 0)).astype(float)
    for key, ctx in contexts.items():
        if ctx.topic not in (None, "*"):
            out[f"{key}.shared_topic_opt_out"] = _opted_out_by_other(prefs, ctx.topic, box, boxes).astype(float)
    # The lowest id of each mailbox: the customer whose hold-out draw the mailbox takes (see partition).
    box = box.astype(np.int64)
    return MailboxFacts(ids, out, box, Mailboxes(ids, box).lowest())


def merge(frame: FeatureFrame, facts: MailboxFacts) -> None:
    """Give ``frame``'s rows of customers who share a mailbox the mailbox's facts (in place; see the module)."""
    add_columns(frame)
    if not len(facts) or not len(frame):
        return
    # ``frame``'s ids are sorted: each shared customer is looked up in them.
    at = np.minimum(np.searchsorted(frame.customer_ids, facts.ids), len(frame) - 1)
    hit = frame.customer_ids[at] == facts.ids
    rows = at[hit]
    for name, values in facts.columns.items():
        if name in frame:
            frame.columns[name][rows] = values[hit]


class _Listed:
    """A feature statement's audience given as a list of ids (:class:`relmail.features.sql.Scope`'s ``restrict``):
    a few customers spread over the store, each found through the customer index."""

    def __init__(self, ids: list[str]):
        self.ids = ids

    def restrict(self, stmt, customer_col, by_customer_index: bool = True):
        # A statement of rare event types (tickets) reads them through the (type, time) index, whose entries
        # hold the customer: the customer index would read every event of these customers.
        return stmt.where((customer_col if by_customer_index else unindexed(customer_col)).in_(self.ids))


def _counts(conn: Connection, ids: np.ndarray, as_of, contexts: dict, campaign: Campaign, run_id: str,
            settings: FeatureSettings) -> dict[str, np.ndarray]:
    """What :data:`SUMMED` and :data:`SUMMED_PER_MESSAGE` name, and ``frequency_wish``, for the sorted ``ids``.

    The same statements (and the same calendar days) as any range's features
    and ledger context, for these customers only: their e-mail events, service
    tickets and preferences, and the sends other runs planned for them.
    """
    dialect, tz = conn.dialect.name, settings.timezone
    # With current aggregates, the e-mail events of the last 90 days and the messages sent from the
    # aggregates, as the features read them; else every e-mail event.
    current = aggregates.current(conn, as_of)
    out: dict[str, np.ndarray] = {}
    for a in range(0, len(ids), CHUNK):
        chunk = ids[a:a + CHUNK]
        scope = _Listed(chunk.tolist())
        queries = [q.email(scope, as_of, dialect, contexts, tz, maintained=current), q.tickets(scope, as_of, dialect),
                   q.preferences(scope, as_of, dialect, contexts)]
        if current and contexts:
            queries.append(q.sent(scope, as_of, contexts, tz))
        owners = q.ownership(scope, as_of, contexts)
        if owners is not None:
            queries.append(owners)
        for query in queries:
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
    out.update(held_out(conn, ids, campaign, tz, run_id, as_of))
    return out


def _smallest(box: np.ndarray, values: np.ndarray, boxes: int) -> np.ndarray:
    """Per mailbox, the smallest of ``values`` (for ages in days: the latest time); NaN: none."""
    out = np.full(boxes, np.inf)
    np.fmin.at(out, box, np.where(np.isnan(values), np.inf, values))
    return np.where(np.isinf(out), np.nan, out)


def _opted_out_by_other(prefs: dict[str, np.ndarray], topic: str, box: np.ndarray, boxes: int) -> np.ndarray:
    """Per mailbox customer: the mailbox's latest change of ``topic`` is an opt-out another customer id recorded."""
    on = np.flatnonzero(prefs["topic"] == topic)
    if not len(on):
        return np.zeros(len(box), dtype=bool)
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
    return out[box] & (by[box] != np.arange(len(box)))


def _facts(conn: Connection, ids: np.ndarray, box: np.ndarray, as_of) -> dict:
    """Per mailbox customer (``ids`` order, mailbox numbers ``box``): ages in days of the last hard bounce,
    sign of delivery (for the mailboxes that bounced) and unsubscribe from all e-mail, the complaints,
    and their consent rows."""
    dialect = conn.dialect.name
    n = len(ids)
    facts = {name: np.full(n, np.nan) for name in ("bounce", "delivered", "unsubscribed")}
    facts["complaints"] = np.zeros(n)
    t, at = E.c.type, E.c.occurred_at
    member: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    topic: list[np.ndarray] = [np.zeros(0, dtype=object)]
    opted_in: list[np.ndarray] = [np.zeros(0, dtype=bool)]
    age: list[np.ndarray] = [np.zeros(0)]
    for a in range(0, n, CHUNK):
        chunk = ids[a:a + CHUNK].tolist()
        # Rare types, through the (type, time) index whose entries hold the customer, as the features read them.
        stmt = (select(E.c.customer_id,
                       age_days(dialect, as_of, func.max(at).filter(t == "email_bounced_hard")),
                       age_days(dialect, as_of, func.max(at).filter(unsubscribed_all())),
                       func.count().filter(t == "email_complained"))
                .where(unindexed(E.c.customer_id).in_(chunk), unindexed(at) <= when(as_of),
                       t.in_(("email_bounced_hard", "email_unsubscribed", "email_complained")))
                .group_by(unindexed(E.c.customer_id)))
        keys, (bounce, unsub, complaints) = fetch_columns(conn, stmt)
        pos = np.searchsorted(ids, keys)
        facts["bounce"][pos], facts["unsubscribed"][pos], facts["complaints"][pos] = bounce, unsub, complaints
        # Consent is read as it is now, as the features read it (a plan of an earlier time included).
        keys, (tp, yes, days) = fetch_columns(conn, select(P.c.customer_id, P.c.topic, P.c.opted_in,
                                                          age_days(dialect, as_of, P.c.updated_at))
                                              .where(P.c.customer_id.in_(chunk)))
        member.append(np.searchsorted(ids, keys))
        topic.append(tp.astype(object))
        opted_in.append(yes.astype(bool))
        age.append(days.astype(float))
    # Soft bounces of the last 90 days, one per e-mail (its run and message; an event without them alone),
    # as the features count them.
    soft_member: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    soft_age: list[np.ndarray] = [np.zeros(0)]
    email = func.coalesce(E.c.run_id + " " + E.c.message_id, "#" + cast(E.c.id, String))
    for a in range(0, n, CHUNK):
        stmt = (select(E.c.customer_id, age_days(dialect, as_of, func.max(at)))
                .where(unindexed(E.c.customer_id).in_(ids[a:a + CHUNK].tolist()), t == "email_bounced_soft",
                       at > when(as_of, SOFT_BOUNCE_DAYS), at <= when(as_of))
                .group_by(unindexed(E.c.customer_id), email))
        keys, (days,) = fetch_columns(conn, stmt)
        soft_member.append(np.searchsorted(ids, keys))
        soft_age.append(days.astype(float))
    facts["soft"] = {"member": np.concatenate(soft_member).astype(np.int64), "age": np.concatenate(soft_age)}
    # The last sign of delivery matters only where the mailbox bounced: those few customers' events.
    bounced = ids[np.isin(box, np.concatenate([box[~np.isnan(facts["bounce"])], box[facts["soft"]["member"]]]))].tolist()
    for a in range(0, len(bounced), CHUNK):
        stmt = (select(E.c.customer_id, age_days(dialect, as_of, func.max(at)))
                .where(E.c.customer_id.in_(bounced[a:a + CHUNK]), at <= when(as_of), unindexed(t).in_(DELIVERY_TYPES))
                .group_by(E.c.customer_id))
        keys, (delivered,) = fetch_columns(conn, stmt)
        facts["delivered"][np.searchsorted(ids, keys)] = delivered
    facts["preferences"] = {"member": np.concatenate(member).astype(np.int64), "topic": np.concatenate(topic),
                            "in": np.concatenate(opted_in), "age": np.concatenate(age)}
    return facts
