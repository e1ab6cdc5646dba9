"""Decisions in bulk: a columnar table, its compact JSON features, and the ledger write.

A plan produces millions of (customer, message) decisions; they live in NumPy
columns from the first rule to the last insert, never as Python objects per
row. The logged features are JSON objects built column by column:

* zero values are left out (a missing key means 0), ``null`` means unknown;
* numbers are rounded to 4 decimals;
* message facts (``topic``, ``products``) are constants on every row.

The write uses multi-row INSERT statements on SQLite and ``COPY`` on
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from psycopg.copy import QueuedLibpqWriter

from ..store.models import Decision

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

#: Text columns are object arrays of Python str: cheap to build and to hand to the driver.
S = object
DEC = Decision.__table__
CHUNK = 50_000
#: Rows per INSERT statement on SQLite (7 parameters each: far below its limit of 32,766).
ROWS_PER_INSERT = 100


def _num_values(values: np.ndarray) -> np.ndarray:
    """Numbers ready for :func:`_num_texts`: rounded to 4 decimals, NaN where not finite."""
    values = np.round(np.asarray(values, dtype=np.float64), 4)
    return np.where(np.isfinite(values), values, np.nan)


def _num_texts(values: np.ndarray, prefix: str = "") -> list[str]:
    """JSON text of each number of a :func:`_num_values` array (NaN → null), after ``prefix``.

    A whole number prints as one (``3``), any other as a float (``0.5``),
    value by value: the text of a row must not depend on the other rows it
    happens to be computed with (one range of customers or another).
    """
    whole = np.isfinite(values) & (values == np.floor(values)) & (np.abs(values) < 2**53)
    if whole.all():
        return _texts(values.astype(np.int64), prefix)
    if not whole.any():
        return _texts(values, prefix)
    out = np.empty(len(values), dtype=object)
    out[whole] = _texts(values[whole].astype(np.int64), prefix)
    out[~whole] = _texts(values[~whole], prefix)
    return out.tolist()


#: Widest span of whole numbers whose texts :func:`_piece_texts` makes once each and shares.
SHARED_SPAN = 4096


def _piece_texts(values: np.ndarray, prefix: str) -> list[str] | np.ndarray:
    """``prefix`` + the JSON text of each value of a :func:`_num_values` array: :func:`_num_texts`, or
    when the values are whole numbers in a narrow span (counts, flags, days; NaN allowed) each
    distinct text made once and shared by every row that has it."""
    known = values[~np.isnan(values)]
    if len(known) and not (known == np.floor(known)).all():
        return _num_texts(values, prefix)
    lo, hi = (int(known.min()), int(known.max())) if len(known) else (0, 0)
    # A table no longer than the values it serves; past 2**53 a number prints as a float (_num_texts).
    if hi - lo >= min(SHARED_SPAN, len(values)) or max(-lo, hi) >= 2**53:
        return _num_texts(values, prefix)
    table = np.array([*_texts(np.arange(lo, hi + 1, dtype=np.int64), prefix), prefix + "null"], dtype=object)
    codes = np.where(np.isnan(values), hi - lo + 1, np.nan_to_num(values) - lo).astype(np.int64)
    return table[codes]


def _texts(values: np.ndarray, prefix: str = "") -> list[str]:
    """``prefix`` + the JSON text of each number, made by C string calls (no Python per value)."""
    text = orjson.dumps(np.ascontiguousarray(values), option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].decode()
    if not text:
        return []
    if not prefix:
        return text.split(",")
    # \x01 is in neither a number nor a JSON-encoded key (JSON escapes control characters).
    return (prefix + text.replace(",", "\x01" + prefix)).split("\x01")


class JsonRows:
    """Builds one JSON object per row, one key at a time.

    Each :meth:`add` keeps the rows it touches and their values as NumPy
    arrays (16 bytes a value). :meth:`finish` turns them into ``,"key":value``
    pieces one block of rows at a time, puts them in row order and joins
    them in one C call: no per-row Python, no repeated string
    concatenation, and no Python string per (row, key) alive beyond the
    block being joined.
    """

    def __init__(self, n: int, constants: dict[str, Any]):
        if not constants:
            raise ValueError("JsonRows needs at least one constant (it opens every object)")
        self.n = n
        self.head = orjson.dumps(constants).decode()[:-1]
        #: (sorted rows, key prefix, values or None for a text in the prefix).
        self.cols: list[tuple[np.ndarray, str, np.ndarray | None]] = []

    def add(self, key: str, values, rows: np.ndarray | None = None, keep_zero: bool = False) -> None:
        """Add ``key`` to ``rows`` (sorted; all if None) with ``values`` aligned to them, or one text for all."""
        idx = np.arange(self.n) if rows is None else np.asarray(rows, dtype=np.int64)
        prefix = "," + orjson.dumps(key).decode() + ":"
        if isinstance(values, str):
            if len(idx):
                self.cols.append((idx, prefix + orjson.dumps(values).decode(), None))
            return
        vals = np.broadcast_to(np.asarray(values, dtype=np.float64), idx.shape)
        if not keep_zero:
            nz = vals != 0  # NaN != 0, so unknowns are kept (as null)
            idx, vals = idx[nz], vals[nz]
        if not len(idx):
            return
        vals = _num_values(vals)
        first = vals[:1]
        if (vals == first).all() or np.isnan(vals).all():
            # One value for every row (a rule's limit, a policy's share, unknown): one text, made once.
            self.cols.append((idx, _num_texts(first, prefix)[0], None))
        else:
            self.cols.append((idx, prefix, vals))

    def finish(self, block: int = 65_536) -> np.ndarray:
        """The JSON texts, one per row (object array).

        Per block of rows, only the pieces that exist (a row has a dozen of
        the message's keys, not all of them) are placed: each row's slots
        are counted, and each key's pieces go to the next free slot of their
        rows, key by key (so within a row in the order the keys were added),
        then all are joined in one C call. Blocks keep the transient pieces
        of one block (a string per row and key) to some MB.
        """
        out = np.empty(self.n, dtype=object)
        for a in range(0, self.n, block):
            b = min(self.n, a + block)
            present = []
            slots = np.full(b - a, 2, dtype=np.int64)  # the head and the end
            for idx, prefix, values in self.cols:
                lo, hi = np.searchsorted(idx, (a, b))
                if hi > lo:
                    rows = idx[lo:hi] - a
                    slots[rows] += 1
                    present.append((rows, prefix, None if values is None else values[lo:hi]))
            ends = np.cumsum(slots)
            pieces = np.empty(int(ends[-1]), dtype=object)
            starts = ends - slots
            pieces[starts] = self.head
            # Assigned into an object array, the text stays as it is (made into a NumPy str
            # array first, as np.full would, it would lose its trailing NUL).
            pieces[ends - 1] = "}\x00"
            free = starts + 1
            for rows, prefix, values in present:
                at = free[rows]
                pieces[at] = prefix if values is None else _piece_texts(values, prefix)
                free[rows] = at + 1
            out[a:b] = "".join(pieces.tolist()).split("\x00")[:-1]
        return out


#: The columns of Decisions, in order.
FIELDS = ("customer_id", "message_id", "action", "score", "expected_value", "reasons", "features")
#: How each text column travels between processes (a plan's workers hand their decisions to the
#: planner through pickle): mostly distinct strings (a customer's id, a row's logged features) as one
#: NUL-joined text, a few repeated ones (message, action, reasons) as codes into their distinct
#: values. Pickle would write and read an object array string by string.
WIRE = {"customer_id": "joined", "features": "joined", "message_id": "codes", "action": "codes", "reasons": "codes"}


def _to_wire(values: np.ndarray, how: str) -> np.ndarray | tuple:
    """``values`` (an object array) in the form ``how`` names; the array itself if a value is no str (or holds a NUL)."""
    strings = values.tolist()
    if how == "codes":
        index: dict[str, int] = {}
        try:
            codes = np.fromiter(map(lambda v: index.setdefault(v, len(index)), strings), dtype=np.int64, count=len(strings))
        except TypeError:  # unhashable
            return values
        return ("codes", list(index), codes) if all(type(v) is str for v in index) else values
    try:
        joined = "\x00".join(strings)
    except TypeError:
        return values
    return ("joined", joined, len(strings)) if joined.count("\x00") == max(len(strings) - 1, 0) else values


def _from_wire(packed: np.ndarray | tuple) -> np.ndarray:
    if isinstance(packed, np.ndarray):
        return packed
    how, values, third = packed
    if how == "codes":
        return np.array(values, dtype=object)[third]
    out = np.empty(third, dtype=object)
    if third:
        out[:] = values.split("\x00")
    return out


def _rebuild(columns: tuple, extra: dict[str, np.ndarray]) -> Decisions:
    return Decisions(*(_from_wire(c) for c in columns), extra=extra)


@dataclass
class Decisions:
    """One row per (customer, message): the plan's output, columnar."""

    customer_id: np.ndarray
    message_id: np.ndarray
    action: np.ndarray
    score: np.ndarray
    expected_value: np.ndarray
    reasons: np.ndarray
    features: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.customer_id)

    def __reduce__(self):
        # How a plan's worker hands its decisions to the planner (a process pool or Dask pickles them).
        return _rebuild, (tuple(_to_wire(getattr(self, n), WIRE[n]) if n in WIRE else getattr(self, n) for n in FIELDS), self.extra)

    @classmethod
    def empty(cls) -> Decisions:
        z = np.array([], dtype=S)
        return cls(z, z, z, np.zeros(0), np.zeros(0), z, z)

    @classmethod
    def concat(cls, parts: list[Decisions]) -> Decisions:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, n) for p in parts]) for n in FIELDS))

    def take(self, idx: np.ndarray) -> Decisions:
        return Decisions(*(getattr(self, n)[idx] for n in FIELDS))

    def without_features(self) -> Decisions:
        """The same rows with empty logged features (``{}``), sharing every other column."""
        return Decisions(self.customer_id, self.message_id, self.action, self.score, self.expected_value, self.reasons,
                         np.full(len(self), "{}", dtype=S))

    def sorted(self) -> Decisions:
        """By customer, each customer's messages in the order they were decided (the campaign's):
        the order of plan files, and of the ledger's rows."""
        return self.take(np.argsort(self.customer_id.astype(str), kind="stable"))

    def records(self, features: bool = True) -> Iterator[dict[str, Any]]:
        """Plain dicts, for files and tests (not for the hot path)."""
        cols = [self.customer_id.tolist(), self.message_id.tolist(), self.action.tolist(),
                self.score.tolist(), self.expected_value.tolist(), self.reasons.tolist(), self.features.tolist()]
        for c, m, a, s, ev, r, f in zip(*cols):
            # Rounded from the ledger's 6 decimals (see _columns), so a plan file says what an export of the written
            # run says: 0.123449996 is 0.12345 in the ledger, 0.1235 in both, not 0.1234 in one of them.
            row = {"customer_id": c, "message_id": m, "action": a, "score": round(round(s, 6), 4),
                   "expected_value": round(round(ev, 6), 4), "reasons": r.split() if r else []}
            if features:
                row["features"] = orjson.loads(f)
            yield row


def write(conn: Connection, run_id: str, decisions: Decisions, created_at: datetime, order: np.ndarray | None = None) -> int:
    """Insert every decision of ``decisions`` for ``run_id`` inside the caller's transaction.

    ``order`` (a permutation of the rows) is the order they are inserted in,
    which is the order of their ids.
    """
    n = len(decisions)
    if n == 0:
        return 0
    names = ["run_id", "customer_id", "message_id", "action", "score", "expected_value", "reasons", "features", "created_at"]
    # Python lists (and a float object per score) for one chunk at a time, not the whole run.
    chunks = (_columns(decisions, slice(a, min(n, a + CHUNK)) if order is None else order[a:a + CHUNK])
              for a in range(0, n, CHUNK))
    if conn.dialect.name == "postgresql":
        _copy(conn, names, run_id, chunks, created_at)
        return n
    # Same text the UTCDateTime column type would write, computed once.
    stamp = DEC.c.created_at.type._cached_bind_processor(conn.dialect)
    stamp_value = stamp(created_at) if stamp else created_at
    # The run and the time are the same on every row: bound once per statement as ?1 and ?2, which
    # every row names, and only the columns that differ are bound per row.
    width = len(names) - 2
    head = f"INSERT INTO decisions ({', '.join(names)}) VALUES "

    def values(rows: int) -> str:
        return ", ".join("(?1, " + ", ".join(f"?{3 + r * width + j}" for j in range(width)) + ", ?2)" for r in range(rows))

    every = values(ROWS_PER_INSERT)
    constants = [run_id, stamp_value]
    cursor = conn.connection.driver_connection.cursor()
    try:
        for columns in chunks:
            size = len(columns[0])
            # Parameters flat, one column at a time by strided assignment (C loops, no tuple per row).
            flat: list = [None] * (size * width)
            for j, column in enumerate(columns):
                flat[j::width] = column
            # ROWS_PER_INSERT rows per statement: SQLite's per-statement work (step, reset, the
            # driver's per-call overhead) is paid once per group instead of once per row.
            step = ROWS_PER_INSERT * width
            whole = len(flat) // step * step
            if whole:
                cursor.executemany(head + every, (constants + flat[a:a + step] for a in range(0, whole, step)))
            if whole < len(flat):
                cursor.execute(head + values((len(flat) - whole) // width), constants + flat[whole:])
    finally:
        cursor.close()
    return n


def _columns(decisions: Decisions, rows: slice | np.ndarray) -> list[list]:
    """The ``rows`` as Python lists in the ledger's column order (run id and time aside)."""
    # A model may answer NaN; the ledger's columns are NOT NULL (and LOW_RELEVANCE already fired).
    score = np.round(np.nan_to_num(decisions.score[rows], nan=0.0), 6).tolist()
    ev = np.round(np.nan_to_num(decisions.expected_value[rows], nan=0.0), 6).tolist()
    return [decisions.customer_id[rows].tolist(), decisions.message_id[rows].tolist(), decisions.action[rows].tolist(),
            score, ev, decisions.reasons[rows].tolist(), decisions.features[rows].tolist()]


_UNSAFE = ("\t", "\n", "\r")


def _copy(conn, names: list[str], run_id: str, chunks: Iterator[list[list]], created_at: datetime) -> None:
    """PostgreSQL ``COPY ... FROM STDIN`` in text format, a block of rows per write."""
    raw = conn.connection.driver_connection
    stamp = created_at.isoformat()
    # A writer thread hands the blocks to the server while this one formats the next: formatting and
    # the server's work on the previous block overlap instead of taking turns.
    with raw.cursor() as cur, cur.copy(f"COPY decisions ({', '.join(names)}) FROM STDIN",
                                       writer=QueuedLibpqWriter(cur)) as copy:
        for columns in chunks:
            joined = "".join(columns[0])
            if any(ch in joined for ch in _UNSAFE):
                # Odd customer ids (tabs, newlines): let psycopg escape row by row.
                for row in zip(*columns):
                    copy.write_row((run_id, *row, created_at))
                continue
            c, m, a, s, e, r, f = columns
            # Numbers to text in one C call per column, rows joined by str.join: no Python
            # formatting per row (a third of the planning process's CPU for this write).
            s, e = _texts(np.array(s, dtype=np.float64)), _texts(np.array(e, dtype=np.float64))
            lines = "\n".join(map("\t".join, zip(repeat(run_id), c, m, a, s, e, r, f, repeat(stamp))))
            # Backslash is COPY's escape character; JSON text may hold some.
            copy.write(lines.replace("\\", "\\\\") + "\n")
