"""The feature statements: each one GROUP BY customer pass, plus how to decode its rows.

A :class:`Query` pairs a SELECT (first column the customer id) with a
``decode(keys, table) -> (keys, columns)`` that turns the fetched object
matrix into named float arrays. The statements are independent, so
:func:`relmail.features.compute.compute_features` may run them on two
connections at once.

Cost model (SQLite): a statement pays for reading each event row once, and
then for every aggregate's FILTER on every row it keeps. Hence two event
statements (commerce, e-mail) each with only its own aggregates, rows of
other types dropped early, and counts read together packed into one integer
(:func:`packed`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import BigInteger, String, and_, case, cast, func, literal, or_, select, union

from ..store.models import Customer, CustomerMessage, CustomerProduct, CustomerTotals, Event, Preference, Product, Suppression
from ..windows import days_start
from .frame import FeatureContext, FeatureSettings
from .sql import Scope, age_days, unindexed, when

#: Upper edges (days) of the age steps category affinity decays over; each
#: step weighs 0.5 ** (its midpoint / half-life). Older than the horizon
#: counts nothing. Steps instead of exp(): SQLite may lack math functions.
AFFINITY_EDGES = (1, 3, 7, 14, 30, 60, 90, 120, 180, 270, 365, 540, 730, 1095)

#: Result columns that are ages ("days since the last ..."): NaN when nothing happened, not 0.
AGES = {"last_purchase", "first_purchase", "days_since_open", "days_since_click", "last_hard_bounce",
        "last_delivery", "last_unsubscribe"}

E = Event.__table__

#: The windows (days) of the frequency caps. The send counts over them, like a recurring
#: message's ``repeat_after_days``, are whole calendar days in the project's time zone
#: (:func:`relmail.windows.days_start`); every other window is the days before as_of, to the
#: microsecond.
CAP_DAYS = (7, 30)


def on_days(col, as_of: datetime, tz: str):
    """``days -> condition``: ``col`` falls on the as-of day or the ``days - 1`` calendar days before it."""
    return lambda days: col >= when(days_start(as_of, days, tz))


@dataclass
class Query:
    stmt: object
    decode: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, dict[str, np.ndarray]]]
    #: Columns that stay NaN (not 0) for customers without a row.
    nan_fill: frozenset = frozenset(AGES)
    #: The table's primary key leads with the customer: over a range of customers its rows come in
    #: customer order, and grouping them as they come beats hashing them (see :func:`.sql.key_order`).
    key_order: bool = False


def affinity_horizon(half_life_days: float) -> int:
    """Days of history affinity reads: the last step edge within six half-lives (weight < 2%)."""
    inside = [edge for edge in AFFINITY_EDGES if edge <= 6 * half_life_days]
    return inside[-1] if inside else AFFINITY_EDGES[0]


def affinity_weights(half_life_days: float) -> list[tuple[float, float]]:
    """(upper edge in days, weight) per age step of category affinity."""
    out, lower = [], 0.0
    for edge in AFFINITY_EDGES:
        out.append((float(edge), 0.5 ** (((lower + edge) / 2.0) / half_life_days)))
        lower = edge
    return out


def _window_case(windows: tuple, since, shift: int, bits: int):
    """Per-row increment adding 1 to field j (``bits`` wide, from bit ``shift``)
    for every window j (days, ascending; ``None`` = ever) the row falls in."""
    n = len(windows)
    whens = [(since(w), sum(1 << (shift + bits * j) for j in range(i, n))) for i, w in enumerate(windows) if w is not None]
    rest = 1 << (shift + bits * (n - 1)) if windows[-1] is None else 0
    return case(*whens, else_=rest) if whens else literal(rest, BigInteger)


def packed(branches: list[tuple], bits: int, where, since, exclusive: bool = True) -> tuple:
    """One SUM holding several counts, ``bits`` bits each: (expression, labels, bits).

    ``branches`` are (condition or None, windows, labels). Counts read
    together share one integer (split again by :func:`unpack`): one
    aggregate per row instead of one per count. ``exclusive`` branches match
    at most one per row (a CASE); otherwise their increments add up. A field
    overflows only past 2**bits events in its window for one customer, far
    beyond anything real.
    """
    incs, labels, shift = [], [], 0
    for cond, windows, names in branches:
        incs.append((cond, _window_case(windows, since, shift, bits)))
        labels += list(names)
        shift += bits * len(windows)
    assert shift <= 63, "packed counts exceed 63 bits"
    if len(incs) == 1 and incs[0][0] is None:
        value = incs[0][1]
    elif exclusive:
        value = case(*[(c, inc) for c, inc in incs if c is not None],
                     else_=next((inc for c, inc in incs if c is None), 0))
    else:
        value = sum((case((c, inc), else_=0) for c, inc in incs[1:]), case((incs[0][0], incs[0][1]), else_=0))
    return func.coalesce(cast(func.sum(value).filter(where), BigInteger), 0), labels, bits


def unpack(values: np.ndarray, fields: int, bits: int) -> list[np.ndarray]:
    """The ``fields`` counts of ``bits`` bits each in every packed int64 of ``values``."""
    ints = np.asarray(values).astype(np.int64)
    mask = (1 << bits) - 1
    return [((ints >> (bits * j)) & mask).astype(float) for j in range(fields)]


def _group(scope: Scope, as_of: datetime, exprs: dict[str, tuple], wanted) -> Query:
    """GROUP BY customer over the events ``wanted`` keeps; packed columns are split on decode."""
    names = list(exprs)
    stmt = select(E.c.customer_id, *[exprs[k][0].label(f"f{i}") for i, k in enumerate(names)])
    stmt = stmt.where(E.c.occurred_at <= when(as_of), wanted)
    stmt = scope.restrict(stmt.select_from(E), E.c.customer_id).group_by(E.c.customer_id)

    def decode(keys, table):
        raw: dict[str, np.ndarray] = {}
        for j, name in enumerate(names):
            _, labels, bits = exprs[name]
            if labels is None:
                raw[name] = table[j].astype(float)
            else:
                raw.update(zip(labels, unpack(table[j], len(labels), bits)))
        return keys, raw

    return Query(stmt, decode)


def _one(expr) -> tuple:
    return expr, None, None


def commerce(scope: Scope, as_of, dialect, contexts: dict[str, FeatureContext], settings: FeatureSettings,
             category_products: dict[str, set[str]], maintained: bool = False) -> Query:
    """Purchases, views (for affinity) and recent usage.

    ``maintained``: the lifetime columns and ownership come from the
    per-customer aggregates (:func:`totals`, :func:`owned`) and usage from
    :func:`usage`; this statement then reads only the events inside its
    windows (a year of purchases, affinity's horizon of views).
    """
    t, at = E.c.type, E.c.occurred_at

    def since(days):
        return at > when(as_of, days)

    purchase = t == "purchase"
    if maintained:
        exprs: dict[str, tuple] = {
            "purchases": packed([(None, (365,), ("frequency_365",))], 30, purchase, since),
            "monetary_365": _one(func.sum(E.c.value).filter(and_(purchase, since(365)))),
        }
    else:
        exprs = {
            "purchases": packed([(None, (365, None), ("frequency_365", "orders_total"))], 30, purchase, since),
            "monetary_365": _one(func.sum(E.c.value).filter(and_(purchase, since(365)))),
            "monetary_total": _one(func.sum(E.c.value).filter(purchase)),
            "last_purchase": _one(age_days(dialect, as_of, func.max(at).filter(purchase))),
            "first_purchase": _one(age_days(dialect, as_of, func.min(at).filter(purchase))),
        }
        exprs.update(_owners(contexts, lambda ctx: E.c.product_id.in_(ctx.products),
                             lambda every: and_(purchase, E.c.product_id.in_(every)), since))
    steps = affinity_weights(settings.affinity_half_life_days)
    horizon = affinity_horizon(settings.affinity_half_life_days)
    decay = case(*[(since(edge), weight) for edge, weight in steps if edge <= horizon], else_=0.0)
    kind = case((purchase, settings.purchase_weight), else_=settings.view_weight)
    use_views = use_usage = False
    for key, ctx in contexts.items():
        if ctx.feature is not None and not maintained:
            exprs[f"{key}.feature_usage_30"] = _one(_usage_sum(ctx, since))
            use_usage = True
        items = sorted(set(ctx.products) | category_products.get(key, set()))
        if items:
            cond = and_(t.in_(("purchase", "view")), since(horizon), E.c.product_id.in_(items))
            exprs[f"{key}.category_affinity"] = _one(func.sum(decay * kind).filter(cond))
            use_views = True
    plain = unindexed(t)
    wanted = plain.in_(("purchase", "view") if use_views else ("purchase",))
    if use_usage:
        wanted = or_(wanted, and_(plain == "usage", since(30)))
    if maintained:
        # Tested on the (customer, time) index entry, before the event row is read.
        wanted = and_(wanted, unindexed(at) > when(as_of, commerce_window(settings) if use_views else 365))
    return _group(scope, as_of, exprs, wanted)


def _usage_sum(ctx: FeatureContext, since):
    conds = [E.c.type == "usage", since(30), E.c.feature == ctx.feature]
    if ctx.products:
        conds.append(or_(E.c.product_id.in_(ctx.products), E.c.product_id.is_(None)))
    return func.sum(func.coalesce(E.c.value, 1.0)).filter(and_(*conds))


def _owners(contexts: dict[str, FeatureContext], owns, where, since) -> dict[str, tuple]:
    """Packed ``k.owns_product`` counts, three contexts per integer."""
    exprs = {}
    owners = [(k, ctx) for k, ctx in contexts.items() if ctx.products]
    for start in range(0, len(owners), 3):
        chunk = owners[start:start + 3]
        every = sorted({p for _, ctx in chunk for p in ctx.products})
        exprs[f"owns{start}"] = packed([(owns(ctx), (None,), (f"{k}.owns_product",)) for k, ctx in chunk], 20,
                                       where(every), since, exclusive=False)
    return exprs


#: Days of e-mail events the e-mail statement reads when the aggregates are used: its longest window.
EMAIL_WINDOW = 90


def commerce_window(settings: FeatureSettings) -> int:
    """Days of purchases and views the commerce statement reads when the aggregates are used."""
    return max(365, affinity_horizon(settings.affinity_half_life_days))


def history_beyond_windows(conn, as_of: datetime, settings: FeatureSettings) -> bool:
    """Whether the store holds commerce or e-mail events older than the windows the aggregates let a plan read.

    Without such events the raw scan reads the same rows as the windowed
    statements, and the aggregate statements would be extra work. One seek
    per type into the (type, time) index.
    """
    reads = {"purchase": commerce_window(settings), "view": commerce_window(settings), "email_sent": EMAIL_WINDOW,
             "email_opened": EMAIL_WINDOW, "email_clicked": EMAIL_WINDOW}
    for event_type, days in reads.items():
        oldest = conn.execute(select(func.min(E.c.occurred_at)).where(E.c.type == event_type)).scalar()
        if oldest is not None and oldest <= as_of - timedelta(days=days):
            return True
    return False


def usage(scope: Scope, as_of, contexts: dict[str, FeatureContext]) -> Query | None:
    """Usage of each message's feature in 30 days, read through the (type, time) index (maintained stores)."""
    at = E.c.occurred_at

    def since(days):
        return at > when(as_of, days)

    exprs = {f"{key}.feature_usage_30": _one(_usage_sum(ctx, since)) for key, ctx in contexts.items() if ctx.feature is not None}
    if not exprs:
        return None
    names = list(exprs)
    stmt = select(E.c.customer_id, *[exprs[k][0] for k in names]).where(E.c.type == "usage", since(30), at <= when(as_of))
    stmt = scope.restrict(stmt.select_from(E), E.c.customer_id, by_customer_index=False).group_by(unindexed(E.c.customer_id))
    return Query(stmt, lambda keys, table: (keys, {k: table[j].astype(float) for j, k in enumerate(names)}))


def totals(scope: Scope, as_of, dialect) -> Query:
    """Lifetime purchases, money, first and last purchase, last open and click: one aggregate row per customer."""
    c = CustomerTotals.__table__
    stmt = select(c.c.customer_id, c.c.purchases, c.c.spend, age_days(dialect, as_of, c.c.last_purchase_at),
                  age_days(dialect, as_of, c.c.first_purchase_at), age_days(dialect, as_of, c.c.last_open_at),
                  age_days(dialect, as_of, c.c.last_click_at))
    stmt = scope.restrict(stmt.select_from(c), c.c.customer_id)
    names = ("orders_total", "monetary_total", "last_purchase", "first_purchase", "days_since_open", "days_since_click")
    return Query(stmt, lambda keys, table: (keys, {k: table[j].astype(float) for j, k in enumerate(names)}))


def owned(scope: Scope, as_of, contexts: dict[str, FeatureContext]) -> Query | None:
    """``k.owns_product`` from the purchases per (customer, product)."""
    p = CustomerProduct.__table__
    exprs = _owners(contexts, lambda ctx: p.c.product_id.in_(ctx.products), lambda every: p.c.product_id.in_(every), None)
    return _aggregate(scope, p, exprs)


def ownership(scope: Scope, as_of, contexts: dict[str, FeatureContext]) -> Query | None:
    """``k.owns_product`` from the purchase events up to ``as_of``, for a few customers (the mailboxes several share)."""
    exprs = _owners(contexts, lambda ctx: E.c.product_id.in_(ctx.products),
                    lambda every: and_(E.c.type == "purchase", E.c.product_id.in_(every)), None)
    if not exprs:
        return None
    return _group(scope, as_of, exprs, unindexed(E.c.type) == "purchase")


def sent(scope: Scope, as_of, contexts: dict[str, FeatureContext], tz: str) -> Query | None:
    """``k.already_sent`` from the last send of each message (within ``repeat_after_days`` for a recurring one)."""
    m = CustomerMessage.__table__
    exprs = _sent(contexts, m.c.message_id, on_days(m.c.last_sent_at, as_of, tz), lambda chunk: m.c.message_id.in_(chunk))
    return _aggregate(scope, m, exprs, key_order=True)


def _sent(contexts: dict[str, FeatureContext], message, since, where) -> dict[str, tuple]:
    """Packed ``k.already_sent`` counts, five messages per integer."""
    exprs = {}
    keys = list(contexts)
    for start in range(0, len(keys), 5):
        chunk = keys[start:start + 5]
        # A recurring message's earlier issues do not count: only those of its last ``repeat_after_days`` calendar days.
        exprs[f"sent{start}"] = packed([(message == k, (contexts[k].repeat_after_days,), (f"{k}.already_sent",)) for k in chunk],
                                       12, where(chunk), since)
    return exprs


def _aggregate(scope: Scope, table, exprs: dict[str, tuple], key_order: bool = False) -> Query | None:
    """GROUP BY customer over an aggregate table, packed columns split on decode."""
    if not exprs:
        return None
    names = list(exprs)
    stmt = select(table.c.customer_id, *[exprs[k][0] for k in names])
    stmt = scope.restrict(stmt.select_from(table), table.c.customer_id).group_by(table.c.customer_id)

    def decode(keys, values):
        raw: dict[str, np.ndarray] = {}
        for j, name in enumerate(names):
            _, labels, bits = exprs[name]
            raw.update(zip(labels, unpack(values[j], len(labels), bits)))
        return keys, raw

    return Query(stmt, decode, key_order=key_order)


def email(scope: Scope, as_of, dialect, contexts: dict[str, FeatureContext], tz: str, maintained: bool = False) -> Query:
    """Sends, opens and clicks: windows, per-topic sends, messages already sent.

    The send counts of the caps (:data:`CAP_DAYS`) and of a recurring
    message are calendar days in time zone ``tz``. ``maintained``: the last
    open and click come from :func:`totals` and the messages already sent
    from :func:`sent`; this statement then reads only the events of the last
    90 days (its longest window).
    """
    t, at = E.c.type, E.c.occurred_at

    def since(days):
        return at > when(as_of, days)

    days = on_days(at, as_of, tz)

    def sends_since(window):
        # The 90 days (fatigue's) roll; the caps' windows start later, so the three stay nested.
        return days(window) if window in CAP_DAYS else since(window)

    sent_, opened = t == "email_sent", t == "email_opened"
    exprs: dict[str, tuple] = {
        "engagement": packed([(opened, (30, 90), ("opens_30", "opens_90")),
                              (None, (30, 90), ("clicks_30", "clicks_90"))], 15, t != "email_sent", since),
        "sends": packed([(None, (*CAP_DAYS, EMAIL_WINDOW), ("sends_7", "sends_30", "sends_90"))], 20, sent_, sends_since),
    }
    if not maintained:
        exprs["days_since_open"] = _one(age_days(dialect, as_of, func.max(at).filter(opened)))
        exprs["days_since_click"] = _one(age_days(dialect, as_of, func.max(at).filter(t == "email_clicked")))
    topics = sorted({ctx.topic for ctx in contexts.values() if ctx.topic is not None})
    for start in range(0, len(topics), 2):
        chunk = topics[start:start + 2]
        exprs[f"topics{start}"] = packed([(E.c.topic == tp, CAP_DAYS, (f"topic:{tp}:7", f"topic:{tp}:30")) for tp in chunk],
                                         15, and_(sent_, E.c.topic.in_(chunk)), days)
    if not maintained:
        exprs.update(_sent(contexts, E.c.message_id, days, lambda chunk: and_(sent_, E.c.message_id.in_(chunk))))
    wanted = unindexed(t).in_(("email_sent", "email_opened", "email_clicked"))
    if maintained:
        wanted = and_(wanted, unindexed(at) > when(as_of, EMAIL_WINDOW))
    return _group(scope, as_of, exprs, wanted)


def rare(scope: Scope, as_of, dialect) -> Query:
    """Bounces, unsubscribes and complaints: rare types, read through the (type, time) index."""
    t, at = E.c.type, E.c.occurred_at
    # Neither the time test nor the grouping may use the (customer, time) index: for them SQLite
    # would skip-scan or walk that index, reading every event of the store, instead of seeking
    # the few thousand rows of these three types.
    stmt = select(
        E.c.customer_id,
        age_days(dialect, as_of, func.max(at).filter(t == "email_bounced_hard")),
        age_days(dialect, as_of, func.max(at).filter(unsubscribed_all())),
        packed([(None, (90, None), ("complaints_90", "complaints_total"))], 30, t == "email_complained",
               lambda days: at > when(as_of, days))[0],
    ).where(t.in_(("email_bounced_hard", "email_unsubscribed", "email_complained")), unindexed(at) <= when(as_of))
    stmt = scope.restrict(stmt.select_from(E), E.c.customer_id, by_customer_index=False)
    stmt = stmt.group_by(unindexed(E.c.customer_id))

    def decode(keys, table):
        complaints_90, complaints_total = unpack(table[2], 2, 30)
        return keys, {"last_hard_bounce": table[0].astype(float), "last_unsubscribe": table[1].astype(float),
                      "complaints_90": complaints_90, "complaints_total": complaints_total}

    return Query(stmt, decode)


def unsubscribed_all():
    """The condition on an event row: an unsubscribe that stops every e-mail (not one topic's opt-out)."""
    p = Preference.__table__
    # An unsubscribe from one topic (the link's "this list only", a provider's group) is that
    # topic's opt-out, recorded as the customer's preference for the topic, which NO_CONSENT
    # reads; only the others stop every e-mail: those without a topic, and those whose topic the
    # store keeps no preference of (an events import, a provider's global unsubscribe of a
    # message on some topic). A preference counts only if it knows of the event: it is an
    # opt-out, or it was set at the event or later (a re-subscription). An opt-in older than the
    # unsubscribe (an events import after a preferences import) never lets the e-mail through.
    topic_preference = (select(literal(1)).where(p.c.customer_id == E.c.customer_id, p.c.topic == E.c.topic,
                                                 or_(p.c.opted_in.is_(False), p.c.updated_at >= E.c.occurred_at))
                        .correlate(E).exists())
    return and_(E.c.type == "email_unsubscribed", or_(E.c.topic.is_(None), E.c.topic == "*", ~topic_preference))


#: Days back soft bounces count for REPEATED_SOFT_BOUNCE: the e-mail statement's longest window. An
#: address held back by them gets another try once they age out, so it soft-bounces at most
#: ``soft_bounce_limit`` times in any such window.
SOFT_BOUNCE_DAYS = EMAIL_WINDOW
#: Events that show an e-mail reached the mailbox: a bounce before the last of them no longer counts.
DELIVERY_TYPES = ("email_delivered", "email_opened", "email_clicked")


def last_delivery(scope: Scope, as_of, dialect) -> Query:
    """The last sign of delivery, and the e-mails that soft-bounced since, for the few who bounced.

    Only customers who ever hard-bounced or soft-bounced in the last
    :data:`SOFT_BOUNCE_DAYS` days, found through the (type, time) index.
    ``soft_bounces`` counts e-mails (a run's message), not events: a
    provider's or a mailbox's deferral and its final failure are one.
    """
    t, at = E.c.type, E.c.occurred_at
    hard = select(E.c.customer_id).where(t == "email_bounced_hard", at <= when(as_of))
    soft = select(E.c.customer_id).where(t == "email_bounced_soft", at > when(as_of, SOFT_BOUNCE_DAYS), at <= when(as_of))
    bounced = union(*(scope.restrict(part.select_from(E), E.c.customer_id, by_customer_index=False)
                      for part in (hard, soft))).subquery()
    d = E.alias("d")
    # A subquery per bounced customer, so each is one seek of the (customer, time) index, walked back
    # from the as-of time to the first delivery, open or click (most customers had one lately). As a
    # join, PostgreSQL would for some ranges read every delivery, open and click of the store through
    # the (type, time) index instead, and hash them against the few bounced customers.
    latest = (select(d.c.occurred_at)
              .where(d.c.customer_id == bounced.c.customer_id, unindexed(d.c.type).in_(DELIVERY_TYPES),
                     d.c.occurred_at <= when(as_of))
              .order_by(d.c.occurred_at.desc()).limit(1)
              .scalar_subquery())
    # Materialized: each bounced customer's last delivery is sought once, not once per use below.
    found = select(bounced.c.customer_id.label("customer_id"), latest.label("latest")).cte("found")
    if dialect != "sqlite" or sqlite3.sqlite_version_info >= (3, 35):  # SQLite learnt the hint in 3.35 (Debian 11 has 3.34)
        found = found.prefix_with("MATERIALIZED")
    s = E.alias("s")
    # One e-mail is its run and message; an event without them counts alone.
    email = func.coalesce(s.c.run_id + " " + s.c.message_id, "#" + cast(s.c.id, String))
    # A soft bounce counts unless a delivery, open or click came after it (or at the same time, as for
    # hard_bounced): only those after the customer's last one, a short seek of the (customer, time) index.
    window = when(as_of, SOFT_BOUNCE_DAYS)
    since = case((found.c.latest > window, found.c.latest), else_=window)  # the later of the two; NULL latest: the window
    soft_since = (select(func.count(func.distinct(email)))
                  .where(s.c.customer_id == found.c.customer_id, unindexed(s.c.type) == "email_bounced_soft",
                         s.c.occurred_at > since, s.c.occurred_at <= when(as_of))
                  .scalar_subquery())
    stmt = select(found.c.customer_id, age_days(dialect, as_of, found.c.latest), soft_since)
    # A bounced customer without such an event gets NULL: NaN, as for a customer without a row.
    return Query(stmt, lambda keys, table: (keys, {"last_delivery": table[0].astype(float), "soft_bounces": table[1].astype(float)}))


def tickets(scope: Scope, as_of, dialect) -> Query:
    """Per (customer, ticket id): open when its last opening is later than its last closing."""
    t, at = E.c.type, E.c.occurred_at
    opened, closed = t == "ticket_opened", t == "ticket_closed"
    stmt = select(
        E.c.customer_id,
        case((E.c.feature.is_(None), 1), else_=0),
        func.count().filter(opened),
        func.count().filter(closed),
        age_days(dialect, as_of, func.max(at).filter(opened)),
        age_days(dialect, as_of, func.max(at).filter(closed)),
    ).where(t.in_(("ticket_opened", "ticket_closed")), at <= when(as_of))
    stmt = scope.restrict(stmt.select_from(E), E.c.customer_id, by_customer_index=False).group_by(E.c.customer_id, E.c.feature)

    def decode(keys, table):
        no_id, n_open, n_close, open_age, close_age = (np.asarray(col, dtype=float) for col in table)
        # Events without a ticket id can only be counted against each other.
        with np.errstate(invalid="ignore"):
            by_id = (n_open > 0) & (np.isnan(close_age) | (open_age < close_age))
        count = np.where(no_id == 1, np.maximum(n_open - n_close, 0), by_id.astype(float))
        uniq, inverse = np.unique(keys, return_inverse=True)
        return uniq, {"open_tickets": np.bincount(inverse, weights=count, minlength=len(uniq)).astype(float)}

    return Query(stmt, decode, frozenset())


def preferences(scope: Scope, as_of, dialect, contexts: dict[str, FeatureContext]) -> Query:
    """Consent per topic (latest state), the global switch, the frequency wish."""
    p = Preference.__table__
    topics = sorted({ctx.topic for ctx in contexts.values() if ctx.topic not in (None, "*")})
    # Consent of the global switch and of each topic in 2 bits each: 0 no record, 1 out, 2 in.
    every = ["*", *topics]
    state = case(*[(p.c.topic == topic, case((p.c.opted_in, 2 << (2 * j)), else_=1 << (2 * j)))
                   for j, topic in enumerate(every)], else_=0)
    stmt = select(
        p.c.customer_id,
        func.sum(state),
        func.min(p.c.max_per_week),
        age_days(dialect, as_of, func.max(p.c.updated_at).filter(and_(p.c.topic == "*", p.c.opted_in))),
    )
    stmt = scope.restrict(stmt.select_from(p), p.c.customer_id).group_by(p.c.customer_id)
    names = ["consent_global", *[f"topic:{topic}" for topic in topics]]

    def decode(keys, table):
        fields = np.nan_to_num(table[0], nan=0).astype(np.int64)  # small: 2 bits per topic
        out = {}
        for j, name in enumerate(names):
            code = (fields >> (2 * j)) & 3
            out[name] = np.where(code == 2, 1.0, np.where(code == 1, 0.0, np.nan))
        out["frequency_wish"] = table[1].astype(float)
        out["global_opt_in"] = table[2].astype(float)
        return keys, out

    return Query(stmt, decode, frozenset(names) | {"frequency_wish", "global_opt_in"}, key_order=True)


def customers(scope: Scope, as_of, dialect) -> Query:
    """Tenure (NaN when the sign-up date is unknown), the address (for the syntax and suppression checks) and
    whether the shop lists the customer: the latest state, as consent is (a plan as of an earlier hour must not
    mail an account the shop closed since)."""
    c = Customer.__table__
    listed = case((c.c.removed_at.isnot(None), 0), else_=1)
    stmt = scope.restrict(select(c.c.id, age_days(dialect, as_of, c.c.created_at), c.c.email, c.c.email_valid, listed)
                          .select_from(c), c.c.id)
    return Query(stmt, lambda keys, table: (keys, {"tenure_days": table[0].astype(float), "_email": table[1],
                                                   "address_flag": np.asarray(table[2], dtype=float),
                                                   "in_shop": np.asarray(table[3], dtype=float)}),
                 frozenset({"tenure_days"}))


def suppression_hashes():
    return select(Suppression.__table__.c.email_hash)


def category_products(conn, contexts: dict[str, FeatureContext]) -> dict[str, set[str]]:
    """Product ids per context, of the categories the context names (a small lookup)."""
    wanted = sorted({c for ctx in contexts.values() for c in ctx.categories})
    if not wanted:
        return {}
    p = Product.__table__
    by_category: dict[str, set[str]] = {}
    for pid, category in conn.execute(select(p.c.id, p.c.category).where(p.c.category.in_(wanted))):
        by_category.setdefault(category, set()).add(pid)
    return {k: set().union(*(by_category.get(c, set()) for c in ctx.categories)) for k, ctx in contexts.items()}
