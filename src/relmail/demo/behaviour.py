"""A year of shop behaviour: purchases, views, product usage, service tickets.

Heavy skew by construction: each customer's ``activity`` (lognormal, most
customers near zero) scales every count, so a tenth of the customers hold
most of the events.  Purchases fall mostly in the customer's favourite
category, every purchase is preceded by views of the product, and usage
events exist only for owners of products with features.
"""

from __future__ import annotations

import numpy as np

from . import catalog as cat
from .frames import DAY, HOUR, EventFrame
from .population import Population

YEAR = 365 * DAY
PURCHASE_RATE = 0.9  # purchases per year at activity 1
BROWSE_RATE = 6.0  # views per year at activity 1, besides those before a purchase
FAVOURITE_SHARE = 0.6
TICKET_BASE, TICKET_PER_ACTIVITY = 0.03, 0.05

#: Shop traffic per UTC hour (the shop's customers live around UTC+1): quiet
#: at night, busiest in the evening.
HOUR_WEIGHTS = np.array([2, 1, 1, 1, 1, 2, 4, 6, 7, 7, 7, 8, 8, 7, 7, 7, 8, 9, 11, 12, 11, 8, 5, 3], dtype=float)
HOUR_P = HOUR_WEIGHTS / HOUR_WEIGHTS.sum()
#: Cycling season per month (January first): spring peak, a December gift bump.
MONTH_WEIGHTS = np.array([0.6, 0.7, 1.0, 1.3, 1.4, 1.3, 1.2, 1.1, 1.0, 0.9, 0.8, 0.95])

PRODUCT_IDS = [p[0] for p in cat.PRODUCTS]
PRODUCT_CATEGORY = np.array([cat.CATEGORIES.index(p[1]) for p in cat.PRODUCTS])
PRICES = np.array([p[4] for p in cat.PRODUCTS])
FEATURES = [p[5] for p in cat.PRODUCTS]


def _popularity() -> list[tuple[np.ndarray, np.ndarray]]:
    """Per category: its product indexes and a Zipf-like choice distribution."""
    out = []
    for c in range(len(cat.CATEGORIES)):
        idx = np.flatnonzero(c == PRODUCT_CATEGORY)
        w = 1.0 / (np.arange(len(idx)) + 1.0) ** 0.7
        # The featured products are best-sellers in their category.
        for j, p in enumerate(idx):
            if PRODUCT_IDS[p] in cat.FEATURED:
                w[j] = w.max() * 1.5
        out.append((idx, w / w.sum()))
    return out


POPULARITY = _popularity()


def pick_products(rng: np.random.Generator, favourite: np.ndarray) -> np.ndarray:
    """One product per row: in the favourite category mostly, else anywhere."""
    n = len(favourite)
    category = np.where(
        rng.random(n) < FAVOURITE_SHARE,
        favourite,
        rng.choice(len(cat.CATEGORIES), n, p=np.array(cat.CATEGORY_WEIGHTS) / sum(cat.CATEGORY_WEIGHTS)),
    )
    product = np.empty(n, dtype=np.int16)
    for c, (idx, p) in enumerate(POPULARITY):
        rows = np.flatnonzero(category == c)
        product[rows] = rng.choice(idx, len(rows), p=p)
    return product


def when(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Times in ``[lo, hi)``, more in the cycling season and in the evening.

    Season by thinning: a time drawn in a quiet month is redrawn (twice at
    most), which keeps the count exact and tilts the calendar.  Then the
    time of day is redrawn from :data:`HOUR_P` on the same day.
    """
    span = (hi - lo).astype(np.float64)
    t = lo + (rng.random(len(lo)) * span).astype(np.int64)
    for _ in range(2):
        month = t.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64) % 12
        redo = rng.random(len(t)) > MONTH_WEIGHTS[month] / MONTH_WEIGHTS.max()
        t[redo] = lo[redo] + (rng.random(redo.sum()) * span[redo]).astype(np.int64)
    t = t - t % DAY + rng.choice(24, len(t), p=HOUR_P) * HOUR + rng.integers(0, HOUR, len(t))
    return np.clip(t, lo, hi - 1)


def generate(rng: np.random.Generator, pop: Population, as_of: int, years: int = 1) -> tuple[EventFrame, np.ndarray, np.ndarray]:
    """Shop events of one chunk over ``years`` before ``as_of``, and per customer the purchase count and spend."""
    idx = pop.index
    start = np.maximum(pop.created, as_of - years * YEAR)
    span = (as_of - start).astype(np.float64)
    frac = span / YEAR

    # Purchases, uniformly in the customer's part of the year.
    n_buy = rng.poisson(pop.activity * PURCHASE_RATE * frac)
    who = np.repeat(np.arange(pop.n), n_buy)
    buy_t = when(rng, start[who], np.full(len(who), as_of))
    buy_p = pick_products(rng, pop.favourite[who])
    discount = np.where(rng.random(len(who)) < 0.12, 0.85, 1.0)
    buy_value = np.round(PRICES[buy_p] * discount, 2)
    purchases = EventFrame.make(idx[who], "purchase", buy_t, product=buy_p, value=buy_value)

    # Views: one to a few of the product before each purchase, plus browsing.
    n_pre = 1 + rng.poisson(1.5, len(who))
    pre = np.repeat(np.arange(len(who)), n_pre)
    pre_t = buy_t[pre] - (rng.lognormal(np.log(6 * HOUR), 1.2, len(pre))).astype(np.int64) - 60
    pre_t = np.maximum(pre_t, pop.created[who[pre]])
    n_browse = rng.poisson(pop.activity * BROWSE_RATE * frac)
    bwho = np.repeat(np.arange(pop.n), n_browse)
    browse_t = when(rng, start[bwho], np.full(len(bwho), as_of))
    views = EventFrame.concat([
        EventFrame.make(idx[who[pre]], "view", pre_t, product=buy_p[pre]),
        EventFrame.make(idx[bwho], "view", browse_t, product=pick_products(rng, pop.favourite[bwho])),
    ])

    usage = _usage(rng, idx[who], buy_p, buy_t, as_of)
    tickets = _tickets(rng, pop, start, span, as_of)

    count = np.bincount(who, minlength=pop.n)
    spend = np.bincount(who, weights=buy_value, minlength=pop.n)
    return EventFrame.concat([purchases, views, usage, tickets]), count, spend


def _usage(rng, cust: np.ndarray, product: np.ndarray, bought: np.ndarray, as_of: int) -> EventFrame:
    """Weekly-ish usage tallies of each adopted feature, from purchase to now."""
    frames = []
    for p in np.unique(product):
        feats = FEATURES[p]
        rows = np.flatnonzero(product == p)
        for feature in feats:
            adopted = rows[rng.random(len(rows)) < cat.FEATURE_ADOPTION[feature]]
            if not len(adopted):
                continue
            weeks = np.maximum((as_of - bought[adopted]) // (7 * DAY), 0)
            n = rng.binomial(weeks, rng.beta(2, 2, len(adopted)))
            owner = np.repeat(adopted, n)
            t = when(rng, bought[owner], np.full(len(owner), as_of))
            frames.append(
                EventFrame.make(cust[owner], "usage", t, product=p, feature=feature, value=1 + rng.poisson(4, len(owner)))
            )
    return EventFrame.concat(frames)


def _tickets(rng, pop: Population, start, span, as_of: int) -> EventFrame:
    """Service tickets; those whose resolution lies after ``as_of`` stay open."""
    rate = (TICKET_BASE + TICKET_PER_ACTIVITY * np.minimum(pop.activity, 3)) * span / YEAR
    n = rng.poisson(rate)
    who = np.repeat(np.arange(pop.n), n)
    if not len(who):
        return EventFrame.concat([])
    opened = when(rng, start[who], np.full(len(who), as_of))
    closed = opened + rng.lognormal(np.log(2 * DAY), 1.0, len(who)).astype(np.int64)
    # The ticket number within the customer makes ids unique and stable.
    first = np.cumsum(n) - n
    number = np.arange(len(who)) - np.repeat(first, n) + 1
    ticket = np.array([f"T{i + 1:07d}-{k}" for i, k in zip(pop.index[who], number)], dtype=object)
    done = closed < as_of
    return EventFrame.concat([
        EventFrame.make(pop.index[who], "ticket_opened", opened, feature=ticket),
        EventFrame.make(pop.index[who[done]], "ticket_closed", closed[done], feature=ticket[done]),
    ])
