"""The demo shop: a deterministic, realistic fictional bike shop in the store.

``generate(engine, customers=5000, seed=7)`` fills the store with the
Fietsenwinkel: customers with Dutch and English names, products in six
categories, a year of purchases, views, product usage and service tickets,
consent per topic, and six weeks of past campaign sends with their opens,
clicks, bounces, complaints and unsubscribes.  The same seed, ``as_of`` and
size give the same rows on SQLite and PostgreSQL.

Customers are generated and written in chunks of :data:`CHUNK` with one
random stream per chunk (``default_rng([seed, chunk])``), so memory stays
flat and a million customers take minutes.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from sqlalchemy.engine import Engine

from ..errors import ValidationError
from ..store import aggregates
from ..store.db import refresh_statistics
from ..store.models import EVENT_TYPES, Meta, Product, Run
from ..windows import current_time
from . import behaviour, catalog, mailings, population, specials, store
from .frames import TYPE_CODE, EventFrame, lookup, nullable_floats, time_strings

__all__ = ["generate", "DemoResult", "ROLES", "DESCRIPTIONS", "parse_as_of", "default_as_of"]

ROLES = {role: population.customer_id(i) for role, i in specials.ROLES.items()}
DESCRIPTIONS = specials.DESCRIPTIONS

CHUNK = 20_000
MIN_CUSTOMERS = len(specials.ROLES)
MAX_CUSTOMERS = 9_999_999  # customer ids have seven digits


@dataclass
class DemoResult:
    """What :func:`generate` wrote."""

    customers: int
    products: int
    preferences: int
    runs: int
    events: dict[str, int]
    seed: int
    as_of: datetime
    seconds: float
    special_customers: dict[str, str] = field(default_factory=lambda: dict(ROLES))

    @property
    def total_events(self) -> int:
        return sum(self.events.values())

    def as_dict(self) -> dict:
        return {
            "customers": self.customers,
            "products": self.products,
            "preferences": self.preferences,
            "runs": self.runs,
            "events": dict(self.events),
            "total_events": self.total_events,
            "seed": self.seed,
            "as_of": self.as_of.isoformat(),
            "seconds": round(self.seconds, 2),
            "special_customers": dict(self.special_customers),
        }


def default_as_of() -> datetime:
    """Now (:func:`relmail.windows.current_time`), truncated to the hour, UTC."""
    return current_time().replace(minute=0, second=0, microsecond=0)


def parse_as_of(value: str) -> datetime:
    """An ISO 8601 time with an explicit zone (``Z`` or an offset)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise ValidationError(f"--as-of: {value!r} is not an ISO 8601 time (e.g. 2026-11-23T09:00:00Z)") from None
    if parsed.tzinfo is None:
        raise ValidationError(f"--as-of: {value!r} has no time zone; add Z or an offset like +01:00")
    return parsed.astimezone(UTC)


def generate(
    engine: Engine,
    customers: int = 5000,
    seed: int = 7,
    as_of: datetime | None = None,
    *,
    replace: bool = False,
    progress: Callable[[int], None] | None = None,
    history_years: int = 1,
) -> DemoResult:
    """Fill the store with the demo shop; refuse (``Conflict``) if it holds data unless ``replace``.

    ``progress`` is called with the number of customers written after each chunk.
    ``history_years``: years of shop behaviour (purchases, views, usage,
    tickets) before ``as_of``, at the same yearly rates; the mailing history
    stays the last six weeks.
    """
    if not MIN_CUSTOMERS <= customers <= MAX_CUSTOMERS:
        raise ValidationError(f"--customers must be between {MIN_CUSTOMERS} and {MAX_CUSTOMERS:,}, not {customers}")
    if seed < 0:
        raise ValidationError(f"--seed must be zero or positive, not {seed}")
    if not 1 <= history_years <= population.MAX_TENURE_DAYS // 365:
        raise ValidationError(f"history_years must be between 1 and {population.MAX_TENURE_DAYS // 365}, not {history_years}")
    as_of = default_as_of() if as_of is None else as_of
    if as_of.tzinfo is None:
        raise ValidationError("as_of must be timezone-aware")
    as_of = as_of.astimezone(UTC)
    now = int(as_of.timestamp())
    started = time.perf_counter()
    runs = mailings.past_runs(now)
    counts: Counter[str] = Counter()
    prefs = 0

    with engine.begin() as conn:
        store.ensure_empty(conn, replace)
        conn.execute(Product.__table__.insert(), catalog.product_rows())
        conn.execute(Run.__table__.insert(), [_run_row(r, seed) for r in runs])
        store.drop_indexes(conn)
    try:
        for chunk, start in enumerate(range(0, customers, CHUNK)):
            n = min(CHUNK, customers - start)
            rng = np.random.default_rng([seed, chunk])
            pop, events = _chunk(rng, start, n, now, runs, history_years)
            with engine.begin() as conn:
                dialect = conn.dialect.name
                store.write(conn, "customers", store.CUSTOMER_COLUMNS, _customer_rows(pop, events, now, dialect))
                pref_rows = _preference_rows(pop, dialect)
                store.write(conn, "preferences", store.PREFERENCE_COLUMNS, pref_rows)
                store.write(conn, "events", store.EVENT_COLUMNS, _event_rows(pop, events, runs, dialect))
            prefs += len(pref_rows)
            counts.update({EVENT_TYPES[t]: int(c) for t, c in enumerate(np.bincount(events.type, minlength=len(EVENT_TYPES))) if c})
            if progress:
                progress(start + n)
        with engine.begin() as conn:
            store.create_indexes(conn)
            aggregates.rebuild(conn)
            for table, rows in (("customers", customers), ("preferences", prefs), ("events", sum(counts.values()))):
                refresh_statistics(conn, table, rows)
            # Replaces a leftover record of an earlier demo whose tables were emptied by hand.
            conn.execute(Meta.__table__.delete().where(Meta.__table__.c.key == "demo"))
            info = {"seed": seed, "customers": customers, "as_of": as_of.isoformat(), "special_customers": ROLES}
            if history_years != 1:
                info["history_years"] = history_years
            conn.execute(Meta.__table__.insert().values(key="demo", value=json.dumps(info)))
    except BaseException:
        # Chunks are committed as they go (a million customers in one
        # transaction would balloon SQLite's WAL); on failure or Ctrl-C the
        # half-written shop is removed so the store is as empty as it began.
        with engine.begin() as conn:
            store.clear(conn)
            store.create_indexes(conn)
            aggregates.rebuild(conn)
        raise
    return DemoResult(
        customers=customers,
        products=len(catalog.PRODUCTS),
        preferences=prefs,
        runs=len(runs),
        events=dict(sorted(counts.items(), key=lambda kv: EVENT_TYPES.index(kv[0]))),
        seed=seed,
        as_of=as_of,
        seconds=time.perf_counter() - started,
    )


def _chunk(rng, start: int, n: int, now: int, runs, years: int = 1) -> tuple[population.Population, EventFrame]:
    pop = population.draw(rng, start, n, now)
    shop, _count, _spend = behaviour.generate(rng, pop, now, years)
    mail = mailings.generate(rng, pop, runs, now)
    events = EventFrame.concat([shop, mail])
    if start == 0:
        events = specials.apply(pop, runs, now, events)
    return pop, events.sorted()


def _run_row(run: mailings.PastRun, seed: int) -> dict:
    at = datetime.fromtimestamp(run.at, UTC)
    return {
        "id": run.id,
        "campaign": mailings.CAMPAIGN,
        "window": run.window,
        "as_of": at,
        "seed": seed,
        "status": "done",
        "config_hash": "",
        "created_at": at,
        "updated_at": datetime.fromtimestamp(run.at + 2 * 3600, UTC),
    }


def _customer_rows(pop: population.Population, events: EventFrame, now: int, dialect: str) -> list[tuple]:
    # Loyalty from the events actually written, so tier and history agree.
    local = events.cust - pop.start
    bought = events.type == TYPE_CODE["purchase"]
    count = np.bincount(local[bought], minlength=pop.n)
    spend = np.bincount(local[bought], weights=events.value[bought], minlength=pop.n)
    tier = population.loyalty_tier(pop.created, count, spend, now)
    hint = population.segment_hint(pop.favourite)
    attributes = [
        json.dumps({"loyalty_tier": t, "birth_year": int(b), "city": c, "segment_hint": h}, ensure_ascii=False)
        for t, b, c, h in zip(tier, pop.birth_year, pop.city, hint)
    ]
    locale = np.where(pop.nl, "nl_NL", "en_GB").tolist()
    tz = np.where(pop.london, "Europe/London", "Europe/Amsterdam").tolist()
    created = time_strings(pop.created, dialect)
    return list(zip(pop.ids, pop.email, pop.first, pop.last, locale, tz, created, attributes))


def _preference_rows(pop: population.Population, dialect: str) -> list[tuple]:
    k = len(catalog.TOPICS)
    ids = np.repeat(np.array(pop.ids, dtype=object), k).tolist()
    topics = list(catalog.TOPICS) * pop.n
    rows = list(
        zip(
            ids,
            topics,
            pop.opted_in.ravel().tolist(),
            [None] * len(ids),
            time_strings(pop.opt_time.ravel(), dialect),
            pop.opt_source.ravel().tolist(),
        )
    )
    # Topic '*' carries the global switch and the frequency wish.
    star = np.flatnonzero(pop.global_out | (pop.max_per_week > 0))
    wish = [int(w) if w else None for w in pop.max_per_week[star]]
    star_time = np.where(pop.global_out[star], pop.global_time[star], pop.created[star] + 3600)
    rows += zip(
        [pop.ids[i] for i in star],
        ["*"] * len(star),
        (~pop.global_out[star]).tolist(),
        wish,
        time_strings(star_time, dialect),
        pop.global_source[star].tolist(),
    )
    # Sorted by customer so the table reads naturally and ids match across backends.
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows


def _event_rows(pop: population.Population, events: EventFrame, runs, dialect: str) -> list[tuple]:
    ids = np.array(pop.ids, dtype=object)[events.cust - pop.start].tolist()
    types = lookup(list(EVENT_TYPES), events.type).tolist()
    return list(
        zip(
            ids,
            types,
            time_strings(events.t, dialect),
            lookup(behaviour.PRODUCT_IDS, events.product).tolist(),
            events.feature.tolist(),
            nullable_floats(events.value),
            lookup(mailings.MESSAGES, events.message).tolist(),
            lookup([r.id for r in runs], events.run).tolist(),
            lookup(list(catalog.TOPICS), events.topic).tolist(),
        )
    )
