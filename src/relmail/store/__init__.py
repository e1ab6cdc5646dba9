"""The store: the tables relmail keeps, the database engines, run locks, erasure and summaries.

:mod:`.models` describes every table (customers, events, preferences, runs,
decisions, deliveries, locks); :mod:`.db` makes engines and applies the
schema's migrations; :mod:`.locks` keeps one planner or sender per run;
:mod:`.erasure` and :mod:`.summary` answer for a person and for the store.
"""
