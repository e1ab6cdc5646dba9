"""Bulk features as of a time: one :class:`FeatureFrame` for a run's whole audience.

``compute_features(engine_or_conn, customer_ids, as_of, contexts)`` runs a
handful of SQL aggregate statements (GROUP BY customer over the events,
conditional sums per time window and per message context) and aligns the
results into NumPy arrays; it never loads customers one by one. Given a
columnar copy of the events (:mod:`relmail.store.columnar`) that covers the
store exactly, the windowed event features come from it with NumPy instead
(:mod:`relmail.features.columnar`).

Everything is as of ``as_of``: only events with ``occurred_at <= as_of``
count, tenure runs from ``created_at``. Consent and frequency wishes are the
exception on purpose: they are permissions, not behaviour, so the latest
state in the store always applies (an opt-out is never ignored because the
plan looks at an earlier time).

Columns: see :data:`GENERIC_COLUMNS` and, per message key ``k``,
``k.<suffix>`` for each suffix in :data:`CONTEXT_COLUMNS`.
"""

from .compute import compute_features
from .frame import CONTEXT_COLUMNS, GENERIC_COLUMNS, FeatureContext, FeatureFrame, FeatureSettings

__all__ = [
    "CONTEXT_COLUMNS",
    "GENERIC_COLUMNS",
    "FeatureContext",
    "FeatureFrame",
    "FeatureSettings",
    "compute_features",
]
