"""The windowed event features from the columnar copy of the events, with NumPy.

Computes what the commerce, e-mail and usage statements of
:mod:`relmail.features.queries` compute when the per-customer aggregates
are used (``maintained``): purchases and money in 365 days, category
affinity over its decay steps, feature usage in 30 days, sends, opens and
clicks in 7/30/90 days and sends per topic. Every window is a
``searchsorted`` slice of one type's time-sorted rows
(:class:`relmail.store.columnar.Segment`), so the work is the events inside
the windows; each count is one ``np.bincount`` over the slice's rows that
belong to the audience.

The bounds are the SQL statements' own: a row counts in a window of ``d``
days when ``as_of - d < occurred_at <= as_of``, and in a cap's window of
``d`` calendar days when ``start <= occurred_at <= as_of`` (``start`` the
local midnight :func:`relmail.windows.days_start` gives), compared in
integer microseconds, so the counts are identical; sums may differ from
the database's in the last bits (another order of addition).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from ..store.columnar import Copy, Rows, micros
from ..windows import days_start
from .frame import FeatureContext, FeatureSettings
from .queries import CAP_DAYS, EMAIL_WINDOW, affinity_horizon, affinity_weights

DAY_US = 86_400_000_000
def window_features(copy: Copy, ids: np.ndarray, as_of: datetime, contexts: dict[str, FeatureContext],
                    settings: FeatureSettings, category_products: dict[str, set[str]]) -> dict[str, np.ndarray]:
    """The windowed features of the sorted customer ``ids`` as of ``as_of``, named as the SQL statements name them."""
    n = len(ids)
    until = micros(as_of)
    day_starts = {days: micros(days_start(as_of, days, settings.timezone)) for days in CAP_DAYS}
    out: dict[str, np.ndarray] = {}

    def add(name: str, rows: np.ndarray, weights: np.ndarray | None = None) -> None:
        counts = np.bincount(rows, weights=weights, minlength=n).astype(float)
        out[name] = out[name] + counts if name in out else counts

    def zeros(name: str) -> None:
        out.setdefault(name, np.zeros(n))

    horizon = affinity_horizon(settings.affinity_half_life_days)
    steps = [(edge, w) for edge, w in affinity_weights(settings.affinity_half_life_days) if edge <= horizon]
    edges_us = np.array([int(edge) * DAY_US for edge, _ in steps], dtype=np.int64)
    step_weight = np.array([w for _, w in steps])
    affinity = {key: sorted(set(ctx.products) | category_products.get(key, set())) for key, ctx in contexts.items()}
    affinity = {key: items for key, items in affinity.items() if items}
    users = {key: ctx for key, ctx in contexts.items() if ctx.feature is not None}
    topics = sorted({ctx.topic for ctx in contexts.values() if ctx.topic is not None})
    for name in ("frequency_365", "monetary_365", "opens_30", "opens_90", "clicks_30", "clicks_90", "sends_7", "sends_30",
                 "sends_90", *[f"{k}.category_affinity" for k in affinity], *[f"{k}.feature_usage_30" for k in users],
                 *[f"topic:{tp}:{d}" for tp in topics for d in CAP_DAYS]):
        zeros(name)
    if n == 0:
        return out

    for seg in copy.segments:
        audience = Rows(seg, ids)
        if audience.hi <= audience.lo:
            continue

        def rows_of(event_type: str, days: int, seg=seg, audience=audience):
            window = seg.window(event_type, until - days * DAY_US, until)
            keep, rows = audience.select(np.asarray(seg.codes["customer"][window]))
            return window.start + keep, rows

        # Purchases: a year for frequency and money, affinity's horizon for the decay steps.
        idx, rows = rows_of("purchase", max(365, horizon))
        age = until - np.asarray(seg.at[idx])
        year = age < 365 * DAY_US
        add("frequency_365", rows[year])
        add("monetary_365", rows[year], np.nan_to_num(np.asarray(seg.value[idx][year]), nan=0.0))
        if affinity:
            views, view_rows = rows_of("view", horizon)
            for kind_idx, kind_rows, kind_weight in ((idx, rows, settings.purchase_weight),
                                                      (views, view_rows, settings.view_weight)):
                kind_age = until - np.asarray(seg.at[kind_idx])
                inside = kind_age < horizon * DAY_US
                weight = step_weight[np.minimum(np.searchsorted(edges_us, kind_age, "right"), len(steps) - 1)] * kind_weight
                products = np.asarray(seg.codes["product"][kind_idx])
                codes = seg.code_of("product")
                for key, items in affinity.items():
                    wanted = np.zeros(len(codes) + 1, dtype=bool)  # the last slot: NULL (code -1)
                    wanted[[codes[p] for p in items if p in codes]] = True
                    hit = inside & wanted[products]
                    add(f"{key}.category_affinity", kind_rows[hit], weight[hit])
        if users:
            idx, rows = rows_of("usage", 30)
            features = np.asarray(seg.codes["feature"][idx])
            products = np.asarray(seg.codes["product"][idx])
            value = np.asarray(seg.value[idx])
            uses = np.where(np.isnan(value), 1.0, value)
            feature_code, product_code = seg.code_of("feature"), seg.code_of("product")
            for key, ctx in users.items():
                hit = features == feature_code.get(ctx.feature, -2)
                if ctx.products:
                    own = [product_code[p] for p in ctx.products if p in product_code]
                    hit &= (products == -1) | np.isin(products, own)
                add(f"{key}.feature_usage_30", rows[hit], uses[hit])

        for event_type, name in (("email_opened", "opens"), ("email_clicked", "clicks")):
            idx, rows = rows_of(event_type, 90)
            add(f"{name}_90", rows)
            add(f"{name}_30", rows[until - np.asarray(seg.at[idx]) < 30 * DAY_US])
        idx, rows = rows_of("email_sent", EMAIL_WINDOW)
        at = np.asarray(seg.at[idx])
        # The caps' windows are calendar days (and lie inside the 90 rolling ones read here).
        inside = {days: at >= start for days, start in day_starts.items()}
        for days in CAP_DAYS:
            add(f"sends_{days}", rows[inside[days]])
        add(f"sends_{EMAIL_WINDOW}", rows)
        if topics:
            topic = np.asarray(seg.codes["topic"][idx])
            topic_code = seg.code_of("topic")
            for tp in topics:
                on = topic == topic_code.get(tp, -2)
                for days in CAP_DAYS:
                    add(f"topic:{tp}:{days}", rows[on & inside[days]])
    return out
