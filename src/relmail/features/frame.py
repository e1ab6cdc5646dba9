"""The shapes features travel in: what a message is about, and the frame of arrays.

A :class:`FeatureFrame` holds one float64 array per feature, all aligned on
the same sorted array of customer ids. ``NaN`` means "unknown" (for example
``recency_days`` of a customer who never bought); a missing signal that has
a natural zero (no opens) is ``0``, not ``NaN``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from ..errors import ConfigError

#: Generic columns, one per customer, with what each means. The README and
#: ``relmail why`` read these descriptions.
GENERIC_COLUMNS: dict[str, str] = {
    "recency_days": "days since the last purchase (NaN if never bought)",
    "frequency_365": "purchases in the last 365 days",
    "monetary_365": "money spent in the last 365 days",
    "orders_total": "purchases ever (up to as_of)",
    "monetary_total": "money spent ever (up to as_of)",
    "tenure_days": "days since the customer signed up; without a sign-up date since the first purchase (NaN if neither)",
    "opens_30": "e-mail opens in the last 30 days",
    "opens_90": "e-mail opens in the last 90 days",
    "clicks_30": "e-mail clicks in the last 30 days",
    "clicks_90": "e-mail clicks in the last 90 days",
    "days_since_open": "days since the last e-mail open (NaN if never)",
    "days_since_click": "days since the last e-mail click (NaN if never)",
    "sends_7": "e-mails sent on the as-of day and the 6 days before (email_sent events up to as_of; calendar days in the "
               "project's time zone)",
    "sends_30": "e-mails sent on the as-of day and the 29 days before",
    "sends_90": "e-mails sent in the last 90 days",
    "fatigue": "0..1: falling open rate while sends rise (last 30 days vs the 60 before); 0 when no evidence",
    "open_tickets": "service tickets opened and not closed (as of as_of)",
    "complaints_90": "spam complaints in the last 90 days",
    "complained_ever": "1 if the customer ever complained (spam report), else 0",
    "hard_bounced": "1 if a hard bounce came after the last sign of delivery (delivered/opened/clicked), else 0",
    "soft_bounces": "e-mails that soft-bounced in the last 90 days after the last sign of delivery (delivered/opened/clicked)",
    "days_since_delivery": "days since the last sign of delivery (delivered/opened/clicked) of a customer who ever hard-bounced "
                           "or soft-bounced in the last 90 days (NaN for the others, and if never)",
    "unsubscribed_event": "1 if an email_unsubscribed event came after the last global opt-in, else 0; an event on a "
                          "topic whose preference records it (an opt-out, or set at the event or later) is that "
                          "topic's opt-out (consent_topic), not counted",
    "consent_global": "1 opted in or no record for topic '*', 0 opted out (latest state in the store)",
    "frequency_wish": "the customer's max e-mails per week (NaN if none stated)",
    "email_valid": "1 if the address is syntactically valid and no import flagged it, else 0",
    "in_shop": "0 if the last complete customers export (import customers --complete) did not list the customer, else 1 "
               "(latest state in the store)",
    "address_suppressed": "1 if the address hash is in the suppressions table, else 0",
    "loyal": "1 if tenure > 365 days and at least 3 purchases, else 0",
    "is_new": "1 if tenure < 90 days and no purchase older than 90 days, else 0",
    "clv": "expected margin over the CLV horizon: AOV x orders/year x margin x years x retention",
}

#: Columns per message context ``k``, named ``k.<suffix>``.
CONTEXT_COLUMNS: dict[str, str] = {
    "consent_topic": "1 opted in, 0 opted out, NaN no record for the message topic (latest state); without one, "
                     "a global opt-in where [consent] lets it count",
    "category_affinity": "time-decayed purchases (weight 3) and views (weight 1) in the message categories",
    "owns_product": "1 if the customer bought any of the featured products, else 0",
    "feature_usage_30": "uses of the message's product feature in the last 30 days",
    "topic_sends_7": "e-mails on the message topic sent on the as-of day and the 6 days before",
    "topic_sends_30": "e-mails on the message topic sent on the as-of day and the 29 days before",
    "already_sent": "1 if this message (message_id == k) was ever sent to the customer (a recurring one: on the as-of day "
                    "or the repeat_after_days - 1 days before), else 0",
}


@dataclass(frozen=True)
class FeatureContext:
    """What one message is about; features named ``<key>.<suffix>`` are computed for it."""

    topic: str | None = None
    categories: tuple[str, ...] = ()
    products: tuple[str, ...] = ()
    #: A product feature, for usage tips (matched against ``usage`` events).
    feature: str | None = None
    #: A recurring message (a newsletter): ``already_sent`` counts only the as-of day and the N - 1 days before.
    repeat_after_days: int | None = None
    #: A global opt-in counts as consent for ``topic`` when the customer has no record for it
    #: (``[consent]`` in relmail.toml; see :class:`relmail.project.ConsentSettings`).
    global_consent: bool = False


@dataclass(frozen=True)
class FeatureSettings:
    """Tunable constants of the feature definitions (``[features]`` in relmail.toml)."""

    #: Half-life of category interest, in days.
    affinity_half_life_days: float = 90.0
    purchase_weight: float = 3.0
    view_weight: float = 1.0
    #: Gross margin on revenue, for the CLV estimate.
    margin: float = 0.3
    clv_horizon_years: float = 3.0
    #: Days of silence after which the chance a buyer is still "alive" halves.
    retention_half_life_days: float = 365.0
    #: The project's time zone (``[project] timezone``, not a ``[features]`` key): the send counts
    #: of the frequency caps and of ``repeat_after_days`` are whole calendar days in it.
    timezone: str = "UTC"

    @classmethod
    def from_project(cls, project: Any) -> FeatureSettings:
        """Read ``[features]`` from the project's relmail.toml; unknown keys are errors."""
        raw = project.settings.section("features")
        known = {f for f in cls.__dataclass_fields__} - {"timezone"}
        values: dict[str, float] = {}
        for key, value in raw.items():
            if key not in known:
                raise ConfigError(f"relmail.toml [features]: unknown key '{key}' (known: {', '.join(sorted(known))})")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"relmail.toml [features]: '{key}' must be a non-negative number")
            values[key] = float(value)
        if values.get("affinity_half_life_days", 1.0) == 0 or values.get("retention_half_life_days", 1.0) == 0:
            raise ConfigError("relmail.toml [features]: half-lives must be greater than 0")
        return cls(**values, timezone=project.settings.timezone)


@dataclass
class FeatureFrame:
    """Features of many customers as of one time: column arrays aligned on ``customer_ids``."""

    #: Sorted unique customer ids (NumPy str array); row i of every column.
    customer_ids: np.ndarray
    as_of: datetime
    #: float64 arrays, one value per customer; NaN = unknown.
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    #: What each message is about (message id -> context), as the frame was computed for it.
    contexts: dict[str, FeatureContext] = field(default_factory=dict)
    #: Where the event features came from: ``columns`` (the columnar copy and the aggregates),
    #: ``aggregates`` (the aggregates and windowed SQL) or ``events`` (SQL over all raw events).
    source: str = "events"
    #: Seconds spent on parts of the computation worth reporting apart (``columns``: the NumPy pass).
    seconds: dict[str, float] = field(default_factory=dict)
    #: Each customer's address as stored (object array aligned with ``customer_ids``; "" for none), which
    #: the plan's one-e-mail-per-address step groups sends by; None when the frame was built without it.
    addresses: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.customer_ids)

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.columns[name]
        except KeyError:
            raise KeyError(f"no feature column '{name}' (have: {', '.join(sorted(self.columns))})") from None

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def index(self, customer_id: str) -> int:
        """Row of ``customer_id``; KeyError if it is not in the frame."""
        i = int(np.searchsorted(self.customer_ids, customer_id))
        if i >= len(self.customer_ids) or self.customer_ids[i] != customer_id:
            raise KeyError(customer_id)
        return i

    def _keys(self, prefix: str | None) -> tuple[list[str], list[str]]:
        """(column names, dict keys) of the generic columns plus ``prefix.*`` without the prefix."""
        head = f"{prefix}." if prefix is not None else None
        names, keys = [], []
        for name in self.columns:
            if "." not in name:
                names.append(name)
                keys.append(name)
            elif head is not None and name.startswith(head):
                names.append(name)
                keys.append(name[len(head):])
        return names, keys

    def row(self, i: int, prefix: str | None = None) -> dict[str, float | None]:
        """Row ``i`` as a compact dict, for logging with a decision.

        Generic columns always; with ``prefix`` (a message id) also that
        message's ``prefix.*`` columns, keyed without the prefix. NaN becomes
        ``None`` so the dict is valid JSON; floats are rounded to 4 decimals.
        """
        names, keys = self._keys(prefix)
        out: dict[str, float | None] = {}
        for name, key in zip(names, keys):
            value = float(np.round(self.columns[name][i], 4))  # as records() rounds
            out[key] = None if math.isnan(value) else value
        return out

    def records(self, prefix: str | None = None, rows=None) -> list[dict[str, float | None]]:
        """``row(i, prefix)`` for many rows at once (all, or the indices in ``rows``).

        Column-wise NumPy rounding and one ``tolist`` per column: use this
        when logging features for a whole run, not ``row`` in a loop.
        """
        names, keys = self._keys(prefix)
        take = slice(None) if rows is None else np.asarray(rows, dtype=np.int64)
        lists = []
        for name in names:
            col = np.round(self.columns[name][take], 4)
            values = col.astype(object)
            values[np.isnan(col)] = None
            lists.append(values.tolist())
        return [dict(zip(keys, vals)) for vals in zip(*lists)] if lists else [{} for _ in range(len(self.customer_ids[take]))]
