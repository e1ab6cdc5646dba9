"""The Hillstrom e-mail experiment, loaded into a relmail ledger the way a user would load it.

MineThatData's 64,000 customers were randomly sent a Mens e-mail, a Womens
e-mail or nothing (a third each), and their visits, conversions and spend
were recorded for two weeks. :func:`load` feeds the experiment to relmail
through its importers — customers through ``relmail import customers``, the
experiment as one historical run through ``relmail runs import`` (the
no-e-mail third as hold-outs of both messages), outcomes through ``relmail
import events`` — and returns the ledger's decisions with their outcomes,
read by the code behind ``relmail model train``. ``bench/uplift.py`` runs
the evaluation protocol on it.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from relmail.importers import import_file
from relmail.learn.history import import_history
from relmail.learn.outcomes import OutcomeTable, load_outcomes
from relmail.project import init_project
from relmail.store.db import make_engine, upgrade

_ROOT = Path(__file__).resolve().parents[1]
#: ``shared/data/hillstrom.csv`` beside the checkout (or beside the folder of worktrees).
_SHARED = [p for p in (_ROOT.parent / "shared", _ROOT.parent.parent / "shared") if p.is_dir()]
DEFAULT_DATA = (_SHARED[0] if _SHARED else _ROOT.parent / "shared") / "data" / "hillstrom.csv"
FEATURES = ("recency", "history_segment", "history", "mens", "womens", "zip_code", "newbie", "channel")
ARMS = {"Mens E-Mail": "mens", "Womens E-Mail": "womens", "No E-Mail": "none"}
MESSAGES = ("mens", "womens")
OUTCOMES = ("visit", "conversion")
AS_OF = datetime(2008, 3, 3, 9, 0, tzinfo=UTC)
#: Assignment probability of each arm in the experiment (a third each).
ARM_PROBABILITY = 1 / 3


def load_csv(path: Path, rows: int | None = None) -> list[dict]:
    with open(path, newline="") as fh:
        data = list(csv.DictReader(fh))
    if rows and rows < len(data):
        # A seeded sample, not the head: the file may be ordered.
        idx = np.sort(np.random.default_rng(12345).choice(len(data), rows, replace=False))
        data = [data[i] for i in idx]
    return data


def load(path: Path, folder: Path, rows: int | None = None) -> OutcomeTable:
    """Import the experiment into a new project in ``folder``; the decisions with their outcomes."""
    data = load_csv(path, rows)
    init_project(folder / "shop", name="Hillstrom")
    engine = make_engine(f"sqlite:///{folder / 'hillstrom.db'}")
    upgrade(engine)
    ids = [f"H{i + 1:05d}" for i in range(len(data))]
    customers, history, events = folder / "customers.csv", folder / "history.csv", folder / "events.csv"
    with open(customers, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "email", "locale", "timezone", "created_at", *FEATURES])
        for cid, row in zip(ids, data):
            # Hillstrom has no sign-up date; one year before the mailing is as good as any.
            w.writerow([cid, f"{cid.lower()}@hillstrom.example", "en_US", "America/New_York",
                        (AS_OF - timedelta(days=365)).isoformat(), *(row[f] for f in FEATURES)])
    with open(history, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["run_id", "campaign", "window", "as_of", "customer_id", "message_id", "action", *FEATURES])
        for cid, row in zip(ids, data):
            arm = ARMS[row["segment"]]
            feats = [row[f] for f in FEATURES]
            if arm == "none":
                # The no-e-mail third is the control group of both messages.
                for message in MESSAGES:
                    w.writerow(["hillstrom-2008", "hillstrom", "2008-W10", AS_OF.isoformat(), cid, message, "holdout", *feats])
            else:
                w.writerow(["hillstrom-2008", "hillstrom", "2008-W10", AS_OF.isoformat(), cid, arm, "send", *feats])
    with open(events, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["event_id", "customer_id", "type", "occurred_at", "value"])
        for i, (cid, row) in enumerate(zip(ids, data)):
            # Spread over the two weeks after the send; Hillstrom only says "within two weeks".
            when = (AS_OF + timedelta(days=1 + i % 13, hours=i % 11)).isoformat()
            if row["visit"] == "1":
                w.writerow([f"{cid}-visit", cid, "view", when, ""])
            if row["conversion"] == "1":
                w.writerow([f"{cid}-purchase", cid, "purchase", when, row["spend"]])
    import_file(engine, "customers", customers)
    import_history(engine, history)
    import_file(engine, "events", events)
    table = load_outcomes(engine, now=AS_OF + timedelta(days=30))
    engine.dispose()
    return table
