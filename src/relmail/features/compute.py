"""``compute_features``: run the feature statements, align them, derive the rest.

The statements of :mod:`relmail.features.queries` (customers, commerce
events, e-mail events, rare e-mail events, tickets, preferences) are
independent GROUP BY passes. For a large audience they run two at a time on
their own connections: SQLite and psycopg both release the GIL while a
statement runs, so the two cores work in parallel. A small audience (a
temporary id table lives on one connection) runs them one after the other.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import numpy as np
from sqlalchemy.engine import Connection

from ..store import aggregates, columnar
from ..store.addresses import address_hash, salt
from . import queries as q
from .columnar import window_features
from .derived import derive, email_valid
from .frame import CONTEXT_COLUMNS, GENERIC_COLUMNS, FeatureContext, FeatureFrame, FeatureSettings
from .sql import Scope, align, analytic, connection, fetch_columns, key_order, parallel_connections, sorted_ids

# Re-exported: tests and the docs refer to the affinity steps from here.
AFFINITY_EDGES, affinity_horizon, affinity_weights = q.AFFINITY_EDGES, q.affinity_horizon, q.affinity_weights

#: Statements run at once for a large audience (this machine class has 2 cores).
PARALLEL = 2


def compute_features(
    engine_or_conn,
    customer_ids,
    as_of: datetime,
    contexts: dict[str, FeatureContext] | None = None,
    settings: FeatureSettings | None = None,
    bounded: bool = False,
    use_aggregates: bool | None = None,
    columns: str | os.PathLike | None = None,
) -> FeatureFrame:
    """Features of ``customer_ids`` as of ``as_of``, generic and per message context.

    ``contexts`` maps a message id to what the message is about; its columns
    are named ``<message id>.<suffix>``. Ids that are not customers get NaN
    tenure and zero counts. Only events with ``occurred_at <= as_of`` are
    read, so the result is the same whatever happened later.

    For a large audience the statements run on fresh connections of the
    same engine (two at a time), so they read committed data: rows written
    but not yet committed on ``engine_or_conn`` are not seen.

    ``bounded``: the ids are one contiguous range of a partitioned audience
    (see :mod:`relmail.planning.partition`); the statements then read only the
    rows of customers from the first id to the last, through the
    customer-ordered indexes, instead of the whole store.

    What a customer did over her whole history (purchases ever, the last
    open, the products she owns, the messages she was sent) comes from the
    per-customer aggregates of :mod:`relmail.store.aggregates` when they
    cover every event and none lies after ``as_of``, and the store holds
    events older than the feature windows (otherwise they would save
    nothing); raw events are then read only inside the windows. Otherwise
    everything is read from the raw events. Both give the same features.
    ``use_aggregates=True`` uses the aggregates whenever they are current,
    ``False`` never.

    The send counts of the frequency caps (``sends_7``, ``sends_30``, the
    topic ones) and a recurring message's ``already_sent`` count whole
    calendar days in ``settings.timezone``
    (:func:`relmail.windows.days_start`), on every path alike.

    ``columns``: the directory of a columnar copy of the events
    (:mod:`relmail.store.columnar`, brought in step by its ``update``).
    When the aggregates are current and the copy covers exactly the
    store's events, the windowed event features are computed from it with
    NumPy instead of the commerce, e-mail and usage statements (the same
    counts; sums equal up to the order of addition). Otherwise, or without
    ``columns``, they are read with SQL. ``frame.source`` says which
    (``columns``, ``aggregates`` or ``events``).
    """
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    contexts = dict(contexts or {})
    settings = settings or FeatureSettings()
    ids = sorted_ids(customer_ids)
    n = len(ids)
    with connection(engine_or_conn) as conn:
        dialect = conn.dialect.name
        current = use_aggregates is not False and aggregates.current(conn, as_of)
        copy = columnar.open_copy(columns, conn) if current and columns is not None else None
        maintained = current and (copy is not None or use_aggregates or q.history_beyond_windows(conn, as_of, settings))
        by_category = q.category_products(conn, contexts)
        scope = Scope(conn, ids, bounded=bounded)
        try:
            statements = {} if copy is not None else {
                "commerce": q.commerce(scope, as_of, dialect, contexts, settings, by_category, maintained),
                "email": q.email(scope, as_of, dialect, contexts, settings.timezone, maintained),
            }
            statements |= {
                "preferences": q.preferences(scope, as_of, dialect, contexts),
                "customers": q.customers(scope, as_of, dialect),
                "rare": q.rare(scope, as_of, dialect),
                "delivery": q.last_delivery(scope, as_of, dialect),
                "tickets": q.tickets(scope, as_of, dialect),
            }
            if maintained:
                extra = {"totals": q.totals(scope, as_of, dialect), "owned": q.owned(scope, as_of, contexts),
                         "sent": q.sent(scope, as_of, contexts, settings.timezone)}
                if copy is None:
                    extra["usage"] = q.usage(scope, as_of, contexts)
                statements.update({name: query for name, query in extra.items() if query is not None})
            fetched = _fetch_all(conn, scope, statements)
            hashes = {h for (h,) in conn.execute(q.suppression_hashes())}
            address_salt = salt(conn) if hashes else ""
        finally:
            scope.close()

    raw: dict[str, np.ndarray] = {}
    seconds = {}
    if copy is not None:
        clock = time.perf_counter()
        raw.update(window_features(copy, ids, as_of, contexts, settings, by_category))
        seconds["columns"] = time.perf_counter() - clock
    emails = np.full(n, "", dtype=object)
    for name, query in statements.items():
        keys, values = query.decode(*fetched.pop(name))  # pop: free each result once aligned
        mask, pos = align(ids, keys)
        if "_email" in values:
            emails[pos] = values.pop("_email")[mask]
        for col_name, col in values.items():
            nan_fill = col_name in query.nan_fill
            out = np.full(n, np.nan if nan_fill else 0.0)
            out[pos] = col[mask]
            # SUM ... FILTER over no rows is NULL: none of them. Ages stay
            # NaN (never) but lose sub-second clock noise below 0.
            raw[col_name] = np.maximum(out, 0.0) if col_name in q.AGES else out if nan_fill else np.nan_to_num(out, nan=0.0)
    # Without a sign-up date (a shop export has none) a customer counts from the first order; with
    # neither tenure is NaN: never new, never loyal. Read before a future sign-up becomes NaN too.
    unknown = np.isnan(raw["tenure_days"])
    raw["tenure_days"][raw["tenure_days"] < 0] = np.nan  # created after as_of: not a customer yet
    raw["tenure_days"] = np.where(unknown, raw["first_purchase"], raw["tenure_days"])

    cols = {"_raw": raw, "tenure_days": raw["tenure_days"], "open_tickets": raw["open_tickets"],
            "frequency_wish": raw["frequency_wish"]}
    cols["consent_global"] = np.where(raw["consent_global"] == 0, 0.0, 1.0)
    # Syntax, and the flag an import set on an address it kept although it is not one.
    cols["email_valid"] = email_valid(emails) * (raw.pop("address_flag") >= 0.5)
    cols["in_shop"] = (raw.pop("in_shop") >= 0.5).astype(float)
    cols["address_suppressed"] = _suppressed(emails, hashes, address_salt)
    for key, ctx in contexts.items():
        topic_col = "consent_global" if ctx.topic == "*" else f"topic:{ctx.topic}"
        raw[f"{key}.consent_topic"] = raw[topic_col] if ctx.topic is not None else np.full(n, np.nan)
        if ctx.global_consent and ctx.topic not in (None, "*"):
            # No record for the topic: a global opt-in stands in for it ([consent]).
            own = raw[f"{key}.consent_topic"]
            raw[f"{key}.consent_topic"] = np.where(np.isnan(own), np.where(raw["consent_global"] == 1, 1.0, np.nan), own)
        raw[f"{key}.already_sent"] = (raw[f"{key}.already_sent"] > 0).astype(float)
        if ctx.topic is not None:
            raw[f"{key}.topic_sends_7"] = raw[f"topic:{ctx.topic}:7"]
            raw[f"{key}.topic_sends_30"] = raw[f"topic:{ctx.topic}:30"]
        if f"{key}.owns_product" in raw:
            raw[f"{key}.owns_product"] = (raw[f"{key}.owns_product"] > 0).astype(float)
        for suffix, applies in (("topic_sends_7", ctx.topic is not None), ("topic_sends_30", ctx.topic is not None),
                                ("owns_product", True), ("feature_usage_30", ctx.feature is not None),
                                ("category_affinity", bool(ctx.categories or ctx.products))):
            if f"{key}.{suffix}" not in raw:
                raw[f"{key}.{suffix}"] = np.zeros(n) if applies else np.full(n, np.nan)
    derive(cols, settings)
    order = list(GENERIC_COLUMNS) + [f"{k}.{suffix}" for k in contexts for suffix in CONTEXT_COLUMNS]
    source = "columns" if copy is not None else "aggregates" if maintained else "events"
    return FeatureFrame(customer_ids=ids, as_of=as_of, columns={name: cols[name] for name in order}, contexts=contexts,
                        source=source, seconds=seconds, addresses=emails)


def _fetch_all(conn: Connection, scope: Scope, statements: dict[str, q.Query]) -> dict[str, tuple]:
    """Every statement's (keys, object matrix): two at a time on fresh connections when possible."""
    # A temporary audience table exists on this connection only; and an
    # in-memory SQLite database is private to its connection.
    if scope.table is not None or PARALLEL < 2 or not parallel_connections(conn):
        return {name: fetch_columns(conn, query.stmt) for name, query in statements.items()}
    engine = conn.engine

    def run(query: q.Query):
        with engine.connect() as own:
            analytic(own, parallel=False)
            if query.key_order and scope.range is not None:
                key_order(own)
            return fetch_columns(own, query.stmt)

    with ThreadPoolExecutor(PARALLEL, thread_name_prefix="relmail-features") as pool:
        futures = {name: pool.submit(run, query) for name, query in statements.items()}
        return {name: future.result() for name, future in futures.items()}


def _suppressed(emails: np.ndarray, hashes: set[str], address_salt: str) -> np.ndarray:
    if not hashes:
        return np.zeros(len(emails))
    return np.fromiter((1.0 if e and address_hash(e, address_salt) in hashes else 0.0 for e in emails), dtype=float,
                       count=len(emails))
