"""Features computed from other features in NumPy: fatigue, loyalty, CLV, address syntax.

Everything here is arithmetic on whole arrays (one value per customer),
fed by the SQL aggregates of :mod:`relmail.features.compute`.
"""

from __future__ import annotations

import re

import numpy as np

from .frame import FeatureSettings

# Syntax only (no DNS): an ASCII local part without spaces or specials (a
# non-ASCII one needs SMTPUTF8, which relmail's e-mails never use), a dotted
# domain whose last label has two or more letters. A non-ASCII domain is allowed.
_EMAIL_RE = re.compile(
    r"^(?!\.)(?!.*\.\.)[^\s@\"(),:;<>\[\\\]\x80-\U0010ffff]{1,64}(?<!\.)@"
    r"(?=.{1,253}$)(?:[^\s@.\"(),:;<>\[\\\]_-][^\s@.\"(),:;<>\[\\\]_]*\.)+[^\W\d_]{2,}$"
)


def email_valid(addresses: np.ndarray) -> np.ndarray:
    """1.0 where the address is syntactically valid, else 0.0."""
    match = _EMAIL_RE.match
    return np.fromiter((1.0 if a and match(a.strip()) else 0.0 for a in addresses), dtype=float, count=len(addresses))


def derive(cols: dict[str, np.ndarray], s: FeatureSettings) -> None:
    """Turn the raw aggregates in ``cols['_raw']`` into the published columns, in place."""
    raw = cols.pop("_raw")
    for name in ("frequency_365", "monetary_365", "orders_total", "monetary_total", "opens_30", "opens_90",
                 "clicks_30", "clicks_90", "days_since_open", "days_since_click", "sends_7", "sends_30",
                 "sends_90", "complaints_90"):
        cols[name] = raw[name]
    for name, value in raw.items():
        if "." in name:
            cols[name] = value
    cols["recency_days"] = raw["last_purchase"]
    cols["complained_ever"] = complained(raw["complaints_total"])
    bounce, delivery = raw["last_hard_bounce"], raw["last_delivery"]
    cols["hard_bounced"] = hard_bounced(bounce, delivery)
    with np.errstate(invalid="ignore"):
        unsub, opt_in = raw["last_unsubscribe"], raw["global_opt_in"]
        cols["unsubscribed_event"] = (~np.isnan(unsub) & (np.isnan(opt_in) | (opt_in > unsub))).astype(float)
    cols["soft_bounces"] = raw["soft_bounces"]
    cols["days_since_delivery"] = delivery
    cols["fatigue"] = fatigue(raw["sends_30"], raw["sends_90"], raw["opens_30"], raw["opens_90"])
    tenure, orders = cols["tenure_days"], raw["orders_total"]
    with np.errstate(invalid="ignore"):
        cols["loyal"] = ((tenure > 365) & (orders >= 3)).astype(float)
        first = raw["first_purchase"]
        cols["is_new"] = ((tenure < 90) & (np.isnan(first) | (first < 90))).astype(float)
    cols["clv"] = clv(orders, raw["monetary_total"], tenure, first, raw["last_purchase"], s)


def complained(complaints: np.ndarray) -> np.ndarray:
    """``complained_ever`` (1.0/0.0), what COMPLAINED blocks: any spam complaint, however long ago.

    The one definition: a plan's rule reads this column, and a send checks the
    events recorded since the plan with it (:mod:`relmail.sending.loop`).
    """
    return (np.asarray(complaints, dtype=float) > 0).astype(float)


def hard_bounced(last_bounce: np.ndarray, last_delivery: np.ndarray) -> np.ndarray:
    """``hard_bounced`` (1.0/0.0), what HARD_BOUNCE blocks: a hard bounce with no delivery, open or click after it.

    Both are ages (smaller is later; NaN: never), as the features hold them.
    The one definition: a plan's rule reads this column, and a send checks the
    events recorded since the plan with it (:mod:`relmail.sending.loop`).
    """
    bounce, delivery = np.asarray(last_bounce, dtype=float), np.asarray(last_delivery, dtype=float)
    with np.errstate(invalid="ignore"):
        return (~np.isnan(bounce) & (np.isnan(delivery) | (bounce < delivery))).astype(float)


def fatigue(sends_30, sends_90, opens_30, opens_90) -> np.ndarray:
    """0..1: the relative fall of the open rate, last 30 days against the 60 before,
    scaled down when sends fell (min(1, recent sends / earlier sends per 30 days)).

    0 when there is no earlier engagement to fall from: never opening is a
    sunset matter, not fatigue.
    """
    prev_sends = (sends_90 - sends_30) / 2.0
    prev_opens = (opens_90 - opens_30) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        rate_now = np.minimum(np.where(sends_30 > 0, opens_30 / sends_30, np.nan), 1.0)
        rate_before = np.minimum(np.where(prev_sends > 0, prev_opens / prev_sends, np.nan), 1.0)
        drop = np.clip(1.0 - rate_now / rate_before, 0.0, 1.0)
        pressure = np.minimum(1.0, sends_30 / prev_sends)
        out = drop * pressure
    return np.where(np.isnan(out), 0.0, out)


def clv(orders, monetary_total, tenure, first_purchase_age, recency, s: FeatureSettings) -> np.ndarray:
    """Expected margin over the horizon: AOV x orders/year x margin x years x P(still buying).

    Orders per year are observed over the customer's history (at least one
    year, so one recent order does not read as a habit); P(still buying)
    halves every ``retention_half_life_days`` of silence. 0 for non-buyers.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        aov = np.where(orders > 0, monetary_total / orders, 0.0)
        span = np.fmax(np.nan_to_num(tenure, nan=0.0), np.nan_to_num(first_purchase_age, nan=0.0))
        per_year = orders / np.maximum(span / 365.0, 1.0)
        alive = np.where(np.isnan(recency), 0.0, 0.5 ** (np.nan_to_num(recency) / s.retention_half_life_days))
    return aov * per_year * s.margin * s.clv_horizon_years * alive
