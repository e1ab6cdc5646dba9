"""``relmail model predict`` as a library call: a model's predictions for the decisions it learned from.

The rows are the decisions ``relmail model evaluate`` reads (the message's
decisions of closed runs, over the model's outcome window), optionally only
the model's test or training customers (:func:`~relmail.learn.dataset.split_mask`
with the seed and share in the model's sidecar). Per row: who and what, the
part of the split, whether it was sent, the observed outcome, the feature
values the model read, and its three predictions. Ranking the test rows by
``uplift`` reproduces ``model evaluate``'s figures exactly, which is what
makes the file a starting point for a data scientist's own analysis.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Engine

from ..errors import ModelError, NotFound
from ..store.spreadsheet_cells import writer as spreadsheet_writer
from . import store
from .dataset import split_mask
from .model import TrainedModel, from_payload
from .outcomes import OutcomeTable, load_outcomes
from .train import limited_threads

SPLITS = ("test", "train", "all")
#: Columns before the features, then the predictions after them.
ID_COLUMNS = ("decision_id", "run_id", "customer_id", "message_id", "split", "sent")
PREDICTION_COLUMNS = ("p_sent", "uplift", "irritation")


@dataclass
class Predictions:
    """One message's rows: ids, the observed ``outcome``, the logged feature values, the predictions."""

    message: str
    version: int
    outcome: str
    split: str
    columns: dict[str, np.ndarray]
    features: list[str]

    def __len__(self) -> int:
        return len(self.columns["decision_id"])

    @property
    def header(self) -> list[str]:
        return [*ID_COLUMNS, self.outcome, *self.features, *PREDICTION_COLUMNS]


def test_mask(model: TrainedModel, mailboxes) -> np.ndarray:
    """True for the model's test customers among ``mailboxes`` (:attr:`OutcomeTable.mailbox`; the split it was trained with)."""
    training = model.meta["training"]
    return split_mask(mailboxes, int(training["split_seed"]), float(training["test_share"]))


def predict_table(model: TrainedModel, table: OutcomeTable, outcome: str | None = None, split: str = "test") -> Predictions:
    """Predictions of ``model`` for the rows of ``table`` that are its message's and in ``split``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    try:
        name = model.primary_outcome(outcome)
    except KeyError as exc:
        # The model is sound; it was not trained for what was asked (exit 8, like any name not found).
        raise NotFound(exc.args[0]) from None
    if split == "test" and float(model.meta["training"]["test_share"]) <= 0:
        raise ModelError(f"model '{model.key}' v{model.version} was trained on all data (test share 0): it has no test customers")
    part = table.subset(table.message_id == model.key)
    test = test_mask(model, part.mailbox)
    if split != "all":
        part = part.subset(test if split == "test" else ~test)
        test = test[test] if split == "test" else test[~test]
    X = model.encode(part.features)
    with limited_threads(1):
        pred = model.predict(X, name)
    columns: dict[str, np.ndarray] = {
        "decision_id": part.decision_id,
        "run_id": part.run_id,
        "customer_id": part.customer_id,
        "message_id": part.message_id,
        "split": np.where(test, "test", "train").astype(object),
        "sent": part.treated.astype(np.int8),
        name: part.outcomes[name],
    }
    for col in model.columns:
        # The value as the decision logged it: what the model read (a category it never saw counts as "other").
        columns[col] = np.array([row.get(col) for row in part.features], dtype=object)
    columns.update({"p_sent": pred["p_positive_sent"], "uplift": pred["uplift"], "irritation": pred["p_irritation"]})
    return Predictions(model.key, model.version, name, split, columns, list(model.columns))


def predict(
    engine: Engine,
    root,
    messages: Sequence[str] | None = None,
    outcome: str | None = None,
    split: str = "test",
    version: int | None = None,
    now: datetime | None = None,
    table: OutcomeTable | None = None,
) -> list[Predictions]:
    """Predictions of the newest (or given ``version``) model of each message, on its ledger rows."""
    metas = store.newest_models(root, messages)
    out = []
    for meta in metas:
        if version is not None:
            meta = store.read_meta(root, meta["key"], version)
        model = from_payload(meta, store.load_payload(root, meta))
        rows = table if table is not None else load_outcomes(
            engine, timedelta(days=float(meta["training"]["window_days"])), messages=[model.key], now=now)
        out.append(predict_table(model, rows, outcome, split))
    return out


def write_csv(predictions: Sequence[Predictions], out: str | Path) -> int:
    """All rows in one CSV (``-`` is standard output); columns are the union of the models'. Returns the rows written."""
    if str(out) == "-":
        return _write(predictions, sys.stdout)
    from ..store.private import open_private

    with open_private(out, "w", newline="", encoding="utf-8") as fh:
        return _write(predictions, fh)


def _write(predictions: Sequence[Predictions], fh) -> int:
    header: list[str] = []
    for p in predictions:
        header += [c for c in p.header if c not in header]
    writer = spreadsheet_writer(fh)
    writer.writerow(header)
    for p in predictions:
        cols = [p.columns.get(c) for c in header]
        for i in range(len(p)):
            writer.writerow(["" if c is None else _cell(c[i]) for c in cols])
    return sum(len(p) for p in predictions)


def _cell(value) -> str | float | int:
    """A number as a number (the CSV writer gives a float's exact repr, so figures recomputed from the file
    match the command's), anything else as text."""
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else float(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return str(value)
