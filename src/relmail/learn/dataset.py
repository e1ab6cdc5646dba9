"""Training matrices from the features each decision logged, and nothing else.

A decision's ``features`` JSON is what the plan knew at decision time; the
model trains on exactly that, so a feature can never see the future (no
re-computation from today's store). :class:`FeatureSpec` turns those dicts
into a float matrix: numeric features as they are (missing → NaN, imputed
later), text features as category codes (unknown → -1, one-hot encoded
later), in a fixed column order stored with the model so prediction
encodes the same way.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..score.outputs import is_model_output
from .bases import Layout

#: At most this many categories per text feature; rarer values share code -1.
MAX_CATEGORIES = 50


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, bool)) and not (isinstance(value, float) and math.isnan(value))


@dataclass
class FeatureSpec:
    """Column order and category vocabularies of a training matrix."""

    numeric: list[str] = field(default_factory=list)
    categorical: dict[str, list[str]] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return self.numeric + list(self.categorical)

    @property
    def layout(self) -> Layout:
        return Layout(len(self.numeric), len(self.categorical))

    def layout_of(self, X: np.ndarray, y: np.ndarray | None = None) -> Layout:
        """The layout for learning ``y`` from ``X``: as :attr:`layout`, with the numeric columns that can bend."""
        return Layout.of(X, len(self.numeric), len(self.categorical), y)

    @classmethod
    def infer(cls, rows: Sequence[Mapping[str, Any]]) -> FeatureSpec:
        """Numeric if every present value is a number, text otherwise.

        Nested values (lists, objects) are left out: they have no fixed
        width; the plan logs counts or flags for those instead. Features that
        never vary carry no information and are left out too, and so are a
        previous model's logged predictions.
        """
        values: dict[str, list[Any]] = {}
        for row in rows:
            for key, value in row.items():
                if value is None or isinstance(value, (list, dict)):
                    continue
                # A model-backed plan logs its own predictions and their
                # contributions: outputs of the last model, never inputs of the next.
                if is_model_output(key):
                    continue
                values.setdefault(key, []).append(value)
        numeric, categorical = [], {}
        for key in sorted(values):
            vals = values[key]
            if all(_is_number(v) for v in vals):
                if len({float(v) for v in vals}) > 1:
                    numeric.append(key)
                continue
            counts: dict[str, int] = {}
            for v in vals:
                counts[str(v)] = counts.get(str(v), 0) + 1
            if len(counts) > 1:
                top = sorted(counts, key=lambda c: (-counts[c], c))[:MAX_CATEGORIES]
                categorical[key] = sorted(top)
        return cls(numeric, categorical)

    def encode(self, rows: Iterable[Mapping[str, Any]]) -> np.ndarray:
        """The float matrix for feature dicts (one row each)."""
        lookup = {key: {c: i for i, c in enumerate(cats)} for key, cats in self.categorical.items()}
        out = []
        for row in rows:
            line = []
            for key in self.numeric:
                v = row.get(key)
                line.append(float(v) if _is_number(v) else np.nan)
            for key, codes in lookup.items():
                v = row.get(key)
                line.append(float(codes.get(str(v), -1)) if v is not None else -1.0)
            out.append(line)
        return np.asarray(out, dtype=float).reshape(len(out), len(self.columns))

    def encode_columns(self, columns: Mapping[str, Any]) -> np.ndarray:
        """The float matrix from one array per feature (the plan's bulk form)."""
        n = None
        for value in columns.values():
            n = len(value)
            break
        if n is None:
            raise ValueError("no feature columns given")
        out = np.empty((n, len(self.columns)))
        for j, key in enumerate(self.numeric):
            if key in columns:
                col = np.asarray(columns[key], dtype=object)
                out[:, j] = [float(v) if _is_number(v) else np.nan for v in col]
            else:
                out[:, j] = np.nan
        for j, (key, cats) in enumerate(self.categorical.items(), start=len(self.numeric)):
            codes = {c: i for i, c in enumerate(cats)}
            if key in columns:
                out[:, j] = [float(codes.get(str(v), -1)) if v is not None else -1.0 for v in columns[key]]
            else:
                out[:, j] = -1.0
        return out

    def decode_value(self, column: int, value: float) -> Any:
        """The human-readable value of an encoded cell (for explanations)."""
        if column < len(self.numeric):
            return None if np.isnan(value) else float(value)
        cats = list(self.categorical.values())[column - len(self.numeric)]
        return cats[int(value)] if 0 <= value < len(cats) else None

    def as_dict(self) -> dict:
        return {"numeric": list(self.numeric), "categorical": {k: list(v) for k, v in self.categorical.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        return cls(list(data["numeric"]), {k: list(v) for k, v in data["categorical"].items()})


def split_mask(customer_ids: Sequence[str], seed: int, test_share: float, salt: str = "test") -> np.ndarray:
    """True for the customers in the held-back part, decided by a seeded hash.

    ``relmail model train --split-seed S --test-share F`` holds back exactly
    the customers ``split_mask(ids, S, F)`` marks (the seed and share are in
    the model's sidecar under ``training``), and ``relmail model evaluate``
    scores them. A customer is in the test part when the first 8 bytes of
    ``blake2b(f"{salt}:{seed}:{customer_id}")``, read as a fraction of
    2**64, fall below ``test_share``: the same customer is on the same side
    for every message and every run, with nothing stored. Splitting by
    customer (not by decision) keeps a customer's decisions on one side; the
    training and evaluation pass each row's mailbox
    (:attr:`relmail.learn.outcomes.OutcomeTable.mailbox`, the lowest customer
    id of an address several ids share), so one person's rows under any of
    those ids are on the same side too.
    Other salts make independent splits (selection's cross-fitting folds use
    ``"validation"``).

    >>> split_mask(["C1", "C2", "C3", "C4"], seed=0, test_share=0.5).tolist()
    [True, True, False, True]
    """
    if not 0.0 <= test_share < 1.0:
        raise ValueError("test share must be in [0, 1)")
    prefix = f"{salt}:{seed}:".encode()
    draws = np.fromiter(
        (int.from_bytes(hashlib.blake2b(prefix + str(c).encode(), digest_size=8).digest(), "big") for c in customer_ids),
        dtype=np.float64,
        count=len(customer_ids),
    )
    return draws / 2.0**64 < test_share
