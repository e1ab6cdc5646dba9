"""Columnar event batches: the generator's working format.

Events are built as NumPy columns (customer index, type code, time in epoch
seconds, ...) so a chunk of 20,000 customers' half a million events costs a
few vectorized operations, not half a million Python objects.  Strings are
made only at the very end, when a batch is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..store.models import EVENT_TYPES

TYPE_CODE = {name: i for i, name in enumerate(EVENT_TYPES)}

DAY = 86_400
HOUR = 3_600


@dataclass
class EventFrame:
    """Events as parallel columns; ``-1`` / NaN / ``None`` mean "no value"."""

    cust: np.ndarray  # int64: global customer index (0 = C0000001)
    type: np.ndarray  # int8: index into EVENT_TYPES
    t: np.ndarray  # int64: epoch seconds, UTC
    product: np.ndarray  # int16: index into catalog.PRODUCTS
    feature: np.ndarray  # object: feature name or ticket id
    value: np.ndarray  # float64
    message: np.ndarray  # int16: index into the message-name table
    run: np.ndarray  # int16: index into the run-id table
    topic: np.ndarray  # int8: index into catalog.TOPICS

    def __len__(self) -> int:
        return len(self.cust)

    @classmethod
    def make(cls, cust, type_name: str, t, *, product=None, feature=None, value=None, message=None, run=None, topic=None):
        """A frame of ``len(cust)`` events of one type; scalars broadcast."""
        n = len(cust)

        def col(v, dtype, fill):
            if v is None:
                return np.full(n, fill, dtype=dtype)
            return np.broadcast_to(np.asarray(v, dtype=dtype), (n,)).copy()

        feat = np.full(n, None, dtype=object)
        if feature is not None:
            feat[:] = feature
        return cls(
            cust=np.asarray(cust, dtype=np.int64),
            type=np.full(n, TYPE_CODE[type_name], dtype=np.int8),
            t=np.asarray(t, dtype=np.int64),
            product=col(product, np.int16, -1),
            feature=feat,
            value=col(value, np.float64, np.nan),
            message=col(message, np.int16, -1),
            run=col(run, np.int16, -1),
            topic=col(topic, np.int8, -1),
        )

    @classmethod
    def concat(cls, frames: list[EventFrame]) -> EventFrame:
        frames = [f for f in frames if len(f)]
        if not frames:
            return cls.make(np.empty(0, np.int64), "view", np.empty(0, np.int64))
        return cls(**{k: np.concatenate([getattr(f, k) for f in frames]) for k in cls.__dataclass_fields__})

    def take(self, index: np.ndarray) -> EventFrame:
        return EventFrame(**{k: getattr(self, k)[index] for k in self.__dataclass_fields__})

    def sorted(self) -> EventFrame:
        """Ordered by customer, time, type: ids then follow each customer's story."""
        return self.take(np.lexsort((self.type, self.t, self.cust)))


def time_strings(secs: np.ndarray, dialect: str) -> list[str]:
    """Epoch seconds as the text each backend stores for a UTC timestamp.

    SQLite gets SQLAlchemy's own storage format (``YYYY-MM-DD HH:MM:SS.ffffff``,
    naive UTC), so values written here compare correctly with values bound
    by SQLAlchemy; PostgreSQL gets ``... +00`` for COPY.  Built by editing
    the UCS-4 code points of NumPy's ISO strings in place: no per-row Python.
    """
    n = len(secs)
    iso = np.datetime_as_string(np.asarray(secs, dtype="datetime64[s]"), unit="s")
    suffix = "+00" if dialect == "postgresql" else ".000000"
    width = 19 + len(suffix)
    codes = np.empty((n, width), dtype=np.uint32)
    codes[:, :19] = iso.astype("<U19").view(np.uint32).reshape(n, 19)
    codes[:, 10] = ord(" ")
    codes[:, 19:] = [ord(c) for c in suffix]
    return codes.view(f"<U{width}").ravel().tolist()


def lookup(table: list, codes: np.ndarray) -> np.ndarray:
    """Map integer codes to strings; ``-1`` becomes ``None``."""
    arr = np.array(list(table) + [None], dtype=object)
    return arr[np.asarray(codes)]


def nullable_floats(values: np.ndarray) -> list:
    out = values.astype(object)
    out[np.isnan(values)] = None
    return out.tolist()
