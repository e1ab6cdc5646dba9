"""A columnar copy of the events, kept in step with the store, for the windowed features.

The windowed features (purchases, views and usage in their windows, sends,
opens and clicks in 7/30/90 days) cost SQLite and PostgreSQL a conditional
aggregate per event row; NumPy computes the same sums over arrays in a
fraction of the time. This module keeps those arrays: the events of the
types in :data:`TYPES` as ``.npy`` files in a directory beside the store
(:func:`location`), memory-mapped by every reader, so a plan's worker
processes share one copy in the page cache.

Layout. A copy is a list of immutable *segments* named by ``current.json``.
A segment holds its rows grouped by type and, within a type, sorted by
time (``occurred_at`` in integer microseconds since 1970, UTC), so the rows
of one type inside a window are one ``searchsorted`` slice: reading a
window costs the events inside it, not the years before it. Strings
(customer, product, message, topic, feature, run) are integer codes into the
segment's own dictionaries; its customer dictionary is sorted, so a range
of customer ids is a range of codes.

Kept in step, exactly. ``current.json`` records the store's identity (the
``columns_token`` meta row), the highest event id the copy covers and the
last row of ``event_changes`` it has seen. Migration 0008's triggers add a
row to ``event_changes`` for every event updated or deleted (a re-import
that changed an event, an order voided by a re-export, an erasure, any
statement behind relmail's back; on PostgreSQL a TRUNCATE too), compacted
to the latest row per customer (:mod:`relmail.store.changes`), which is all
a copy of any age needs to know which customers to read again. :func:`update`
appends the events after the covered id as a new segment, and for every
changed customer drops her rows from the segments that hold them and reads
her events again; segments it replaced are deleted, so an erased customer's
events do not outlive the update that follows the erasure (``relmail
customers forget`` runs it). Every write goes to a new segment directory and
a new ``current.json`` put in place with one rename: a reader sees the old
copy or the new one, never half of either. ``current.json`` also records
what its last event and last change row were, so a backup restored over
the store (the same identity, and ids the copy holds given to other rows)
is told apart from the store having grown, and the copy is written anew.

:func:`open_copy` gives a reader the copy only when it covers the store
exactly (same identity, same highest event id, same last change);
otherwise the features read the store with SQL, which stays the reference.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import secrets
import shutil
import threading
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import func, literal_column, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from . import aggregates, changes
from .models import Event, Meta
from .private import private_folder

E, M = Event.__table__, Meta.__table__

#: The event types the copy holds: those the windowed features read.
TYPES = ("purchase", "view", "usage", "email_sent", "email_opened", "email_clicked")

#: String columns, stored as int32 codes into the segment's dictionary (-1 = NULL).
CODED = ("customer", "product", "message", "topic", "feature", "run")

#: The layout ``current.json`` records; a copy of another layout (one without the runs, of an older relmail)
#: is never read, and the next update writes it anew.
FORMAT = 2

#: The meta key of the store's identity: a copy of another store (a database rebuilt at the same path) is never read.
TOKEN_KEY = "columns_token"

#: Event ids per segment of a build (a segment is built in memory: a few hundred bytes a row).
BUILD_ROWS = 1_000_000

#: Event ids from which a build reads its ranges in :data:`BUILD_WORKERS` processes (below, starting them costs more).
PARALLEL_BUILD_ROWS = 2_000_000

#: Processes of a large build (None: one per core).
BUILD_WORKERS: int | None = None

#: Small segments (appends) before :func:`update` merges them into one.
MAX_SEGMENTS = 6

#: Rows of changed customers, as a share of the copy (and at least :data:`REBUILD_MIN`), above which
#: :func:`update` rebuilds instead of patching: reading most events back customer by customer costs more
#: than one pass over them in id order.
REBUILD_SHARE, REBUILD_MIN = 0.2, 10_000

#: Customers per ``IN`` list when re-reading changed customers.
BATCH = 500

#: Rows fetched from the driver at a time while reading events.
CHUNK = 200_000


def location(engine: Engine, project_root: str | os.PathLike | None = None) -> Path | None:
    """Where the copy of ``engine``'s store lives, or None (then features read the store only).

    A SQLite file: ``<file>.columns`` beside it. PostgreSQL (or any server):
    ``.relmail/columns/<database>-<hash of the URL>`` in the project folder,
    when there is one. An in-memory SQLite database has none.
    """
    url = engine.url
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            return None
        return Path(url.database).with_name(Path(url.database).name + ".columns")
    if project_root is None:
        return None
    where = url.render_as_string(hide_password=True)
    return Path(project_root) / ".relmail" / "columns" / f"{url.database}-{hashlib.sha256(where.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class StoreState:
    """What a copy must match to be read: the store's identity, its highest event id, its last change.

    A backup restored over the store brings back an older state under the
    same identity, and the events and changes written after it take ids the
    copy already holds for others. So the state also says what those two
    ids stand for (:func:`event_mark`, :func:`change_mark`): the same ids
    with other rows behind them are another store.
    """

    token: str
    max_event_id: int
    change_id: int
    last_event: str = ""
    last_change: str | None = ""


def event_mark(conn: Connection, event_id: int) -> str:
    """Whose event ``event_id`` is, of which type and when, tab-separated ('' when there is none)."""
    row = conn.execute(select(E.c.customer_id, E.c.type, E.c.occurred_at).where(E.c.id == event_id)).first()
    return "" if row is None else f"{row.customer_id}\t{row.type}\t{row.occurred_at.isoformat()}"


def change_mark(conn: Connection, change_id: int) -> str | None:
    """The customer the change-log row ``change_id`` names: None for a ``TRUNCATE``'s row, '' when there is none."""
    row = conn.execute(text("SELECT customer_id FROM event_changes WHERE id = :id"), {"id": change_id}).first()
    return "" if row is None else row[0]


def store_state(conn: Connection) -> StoreState | None:
    """The store's :class:`StoreState`; None for a store without the change log (a schema before 0008)."""
    token = conn.execute(select(M.c.value).where(M.c.key == TOKEN_KEY)).scalar()
    if token is None:
        return None
    max_event_id, change_id = int(aggregates.max_event_id(conn)), int(changes.latest(conn))
    return StoreState(token, max_event_id, change_id, event_mark(conn, max_event_id), change_mark(conn, change_id))


class Segment:
    """One immutable directory of the copy: arrays memory-mapped, dictionaries loaded."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.at = np.load(path / "at.npy", mmap_mode="r")
            self.id = np.load(path / "id.npy", mmap_mode="r")
            self.value = np.load(path / "value.npy", mmap_mode="r")
            self.codes = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in CODED}
            self.words = {name: np.load(path / f"{name}.words.npy", mmap_mode="r") for name in CODED}
            #: Row offsets of each type of :data:`TYPES` (the rows of type j are offsets[j]:offsets[j + 1]).
            self.offsets = np.load(path / "offsets.npy")
        except EOFError:
            # np.load's answer to a file cut to nothing (a disk error, a partial copy of the folder): as damaged
            # as any other, so the readers' fallback to SQL and the update's rebuild apply.
            raise ValueError(f"segment {path} has an empty file") from None
        if not (len(self.offsets) == len(TYPES) + 1 and self.offsets[-1] == len(self.at) == len(self.id) == len(self.value)
                and all(len(c) == len(self.at) for c in self.codes.values())):
            raise ValueError(f"segment {path} is inconsistent")

    def __len__(self) -> int:
        return len(self.at)

    def window(self, event_type: str, after_us: int, until_us: int) -> slice:
        """The rows of ``event_type`` with ``after_us < at <= until_us``."""
        j = TYPES.index(event_type)
        lo, hi = int(self.offsets[j]), int(self.offsets[j + 1])
        at = self.at[lo:hi]
        return slice(lo + int(np.searchsorted(at, after_us, "right")), lo + int(np.searchsorted(at, until_us, "right")))

    def code_of(self, name: str) -> dict[str, int]:
        """Word → code of the dictionary ``name``."""
        return {str(w): i for i, w in enumerate(self.words[name])}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(t: datetime) -> int:
    """``t`` in integer microseconds since 1970 (UTC): the copy's ``at``, compared exactly as the SQL windows compare."""
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class Rows:
    """Row of each of a segment's customer codes in the sorted ``ids`` (-1: not in them), over the codes ids can have."""

    def __init__(self, seg: Segment, ids: np.ndarray):
        words = seg.words["customer"]
        self.lo = int(np.searchsorted(words, ids[0])) if len(ids) else 0
        self.hi = int(np.searchsorted(words, ids[-1], "right")) if len(ids) else 0
        inside = words[self.lo:self.hi]
        pos = np.searchsorted(ids, inside)
        found = ids[np.minimum(pos, len(ids) - 1)] == inside if len(ids) else np.zeros(0, dtype=bool)
        self.rows = np.where(found, pos, -1)

    def select(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in ``codes`` of customers in ``ids``, their rows in ``ids``)."""
        keep = np.flatnonzero((codes >= self.lo) & (codes < self.hi))
        rows = self.rows[codes[keep] - self.lo]
        mine = rows >= 0
        return keep[mine], rows[mine]


@dataclass
class Copy:
    """A readable copy: its segments, and the store state it covers."""

    root: Path
    state: StoreState
    segments: list[Segment]

    @property
    def events(self) -> int:
        return sum(len(s) for s in self.segments)


def _read_current(root: Path) -> dict | None:
    try:
        return json.loads((root / "current.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _state_of(current: dict) -> StoreState:
    return StoreState(current["token"], int(current["max_event_id"]), int(current["change_id"]),
                      current.get("last_event", ""), current.get("last_change", ""))


def _matches(current: dict, state: StoreState) -> bool:
    """Whether the copy ``current.json`` describes covers exactly the store in ``state``."""
    try:
        return _state_of(current) == state
    except (KeyError, TypeError, ValueError):
        return False


def _load(root: Path, current: dict) -> Copy | None:
    """The copy ``current`` describes, or None when it is of another :data:`FORMAT` or a segment it names does not
    open (removed or replaced under us, or damaged since it was written): readers then use the store, and the next
    update writes the copy anew."""
    if current.get("format") != FORMAT:
        return None
    try:
        return Copy(root, _state_of(current), _segments(root, list(current["segments"])))
    except (OSError, ValueError, KeyError):
        return None


#: Copies (roots) whose segments a process keeps open between reads: a plan's worker reads the same copy once per range.
OPEN_COPIES = 4
_open: OrderedDict[Path, dict[str, tuple[tuple[int, int], Segment]]] = OrderedDict()
_open_lock = threading.Lock()


def _segments(root: Path, names: list[str]) -> list[Segment]:
    """The segments ``names`` of the copy at ``root``, each opened once per process.

    A segment never changes once written (an update writes new ones under
    new names), so its directory's identity names its contents. Only the
    segments the copy names now stay open: one an update replaced (an erased
    customer's, say) is let go at the next read, not kept mapped.
    """
    with _open_lock:
        before = _open.pop(root, {})
        kept: dict[str, tuple[tuple[int, int], Segment]] = {}
        for name in names:
            st = (root / name).stat()
            identity = (st.st_ino, st.st_mtime_ns)
            known = before.get(name)
            kept[name] = known if known is not None and known[0] == identity else (identity, Segment(root / name))
        _open[root] = kept
        while len(_open) > OPEN_COPIES:
            _open.popitem(last=False)
        return [kept[name][1] for name in names]


def open_copy(root: str | os.PathLike | None, conn: Connection) -> Copy | None:
    """The copy at ``root`` when it covers exactly the store ``conn`` reads; otherwise None."""
    if root is None:
        return None
    current = _read_current(Path(root))
    if current is None:
        return None
    state = store_state(conn)
    if state is None or not _matches(current, state):
        return None
    return _load(Path(root), current)


@dataclass
class Updated:
    """What :func:`update` did: ``built``, ``appended``, ``patched`` (changed customers re-read), ``current`` or ``none``."""

    action: str
    #: Event rows read from the store.
    read: int = 0
    #: Rows in the copy afterwards.
    events: int = 0
    segments: int = 0
    customers_changed: int = 0
    seconds: float = 0.0
    root: Path | None = None


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One writer at a time per copy (two plans starting together)."""
    private_folder(root)  # the copy holds every customer's events
    with open(root / "lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def update(engine: Engine, root: str | os.PathLike | None, build: bool = True, rebuild: bool = False) -> Updated:
    """Bring the copy at ``root`` in step with the store: build it, append new events, re-read changed customers.

    ``build=False`` only updates a copy that exists (erasure must purge one,
    never create one). ``rebuild=True`` writes it anew from the store.
    Returns what it did.
    """
    started = time.perf_counter()
    if root is None:
        return Updated("none")
    root = Path(root)
    if not build and _read_current(root) is None:
        return Updated("none", root=root)
    with _locked(root):
        if not rebuild:
            with engine.connect() as conn:
                state = store_state(conn)
            current = _read_current(root)
            if state is not None and current is not None and _matches(current, state) and _load(root, current) is not None:
                return Updated("current", events=current.get("events", 0), segments=len(current["segments"]), root=root,
                               seconds=time.perf_counter() - started)
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # One snapshot for the state and the rows read: a commit in between must not slip past both.
                conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                # Event ids are drawn before their transactions commit, so a writer still in flight may
                # hold ids below the highest committed one: wait for every writer to finish (and hold
                # new ones back) before reading, or the copy would skip those ids for good.
                conn.exec_driver_sql("LOCK TABLE events IN SHARE MODE")
            state = store_state(conn)
            if state is None:
                return Updated("none", root=root)
            current = _read_current(root)
            old = _load(root, current) if current is not None and not rebuild else None
            if old is not None and old.state.token != state.token:
                old = None
            out = _build(conn, root, state) if old is None else _patch(conn, root, old, state)
            conn.rollback()
    out.root = root
    out.seconds = time.perf_counter() - started
    return out


def _build(conn: Connection, root: Path, state: StoreState) -> Updated:
    """Write the copy anew: one segment per :data:`BUILD_ROWS` event ids, so memory stays bounded whatever the store.

    A large store's ranges are read and written by one process per core
    (reading rows into Python objects is most of a build, and one core
    does it). Their connections see what ``conn`` sees: on PostgreSQL the
    caller's ``SHARE`` lock holds every writer back until the copy is
    committed; on SQLite a row written meanwhile is in the change log or
    above the copy's highest id, so the next update reads it.
    """
    first = int(conn.execute(select(func.coalesce(func.min(E.c.id), 1))).scalar_one()) - 1
    ranges = [(lo, min(lo + BUILD_ROWS, state.max_event_id)) for lo in range(first, state.max_event_id, BUILD_ROWS)]
    url = conn.engine.url
    if len(ranges) > 1 and state.max_event_id - first >= PARALLEL_BUILD_ROWS and url.database not in (None, "", ":memory:"):
        from ..executors.local import LocalExecutor

        tasks = [(url.render_as_string(hide_password=False), str(root), lo, hi) for lo, hi in ranges]
        built = LocalExecutor(BUILD_WORKERS).map(_build_task, tasks)
    else:
        built = [_build_range(conn, root, lo, hi) for lo, hi in ranges]
    names = [name for name, _ in built if name is not None]
    read = sum(n for _, n in built)
    _commit(root, state, names)
    return Updated("built", read=read, events=read, segments=len(names))


def _build_range(conn: Connection, root: Path, lo: int, hi: int) -> tuple[str | None, int]:
    """The segment of the events with ids in ``(lo, hi]`` (None when there are none) and its rows."""
    rows = _read(conn, (E.c.id > lo) & (E.c.id <= hi))
    return (_write_segment(root, rows) if len(rows["at"]) else None), len(rows["at"])


def _build_task(url: str, root: str, lo: int, hi: int) -> tuple[str | None, int]:
    """:func:`_build_range` in a worker process, on its own engine."""
    from .db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return _build_range(conn, Path(root), lo, hi)
    finally:
        engine.dispose()


def _patch(conn: Connection, root: Path, old: Copy, state: StoreState) -> Updated:
    named = changes.since(conn, old.state.change_id, state.change_id)
    if any(c is None for c in named):
        return _build(conn, root, state)  # a TRUNCATE
    if not _grew_from(conn, old.state, state, set(named)):
        return _build(conn, root, state)  # a backup restored over the store since the copy was made
    changed = sorted(set(named))
    gone = np.array(changed, dtype=str)
    drops = [_dropped(seg, gone) for seg in old.segments]
    if sum(int(np.count_nonzero(d)) for d in drops if d is not None) > max(REBUILD_SHARE * old.events, REBUILD_MIN):
        return _build(conn, root, state)  # a change too large to patch
    # Rows inserted since the last update have ids above every row that existed all along (SQLite
    # gives a new row the highest id + 1, which after a deletion may be an id the copy had): read
    # everything above the highest id the copy keeps, and the changed customers' rows below it.
    lower = max([int(np.max(seg.id if drop is None else seg.id[~drop], initial=0)) for seg, drop in zip(old.segments, drops)],
                default=0)
    parts = [_read(conn, (E.c.id > lower) & (E.c.id <= state.max_event_id))]
    for start in range(0, len(changed), BATCH):
        parts.append(_read(conn, (E.c.id <= lower) & E.c.customer_id.in_(changed[start:start + BATCH])))
    fresh = _concat(parts)
    names = []
    for seg, drop in zip(old.segments, drops):
        if drop is None:
            names.append(seg.path.name)
            continue
        kept = {k: v[~drop] for k, v in _rows_of(seg).items()}
        if len(kept["at"]):
            names.append(_write_segment(root, kept))
    if len(fresh["at"]):
        names.append(_write_segment(root, fresh))
    small = [name for name in names if _rows_in(root / name) < BUILD_ROWS // 2]
    if len(small) > MAX_SEGMENTS:  # weekly appends: merged, so a reader opens few segments
        merged = _concat([_rows_of(Segment(root / name)) for name in small])
        names = [name for name in names if name not in small] + [_write_segment(root, merged)]
    _commit(root, state, names)
    events = sum(_rows_in(root / name) for name in names)
    action = "patched" if changed else "appended"
    return Updated(action, read=len(fresh["at"]), events=events, segments=len(names), customers_changed=len(changed))


def _grew_from(conn: Connection, old: StoreState, state: StoreState, named: set[str]) -> bool:
    """Whether the store in ``state`` is the one a copy of ``old`` was made of, grown since, and not an older backup.

    The copy's last event and last change-log row must still be what the
    copy knew, unless the change log names their customer since: her
    events changed or were deleted (and the patch reads them again), or a
    later row of hers made the old one redundant (:func:`changes.compact`).
    A change log shorter than the copy's position is a restored one.
    """
    if state.change_id < old.change_id:
        return False
    if event_mark(conn, old.max_event_id) != old.last_event and old.last_event.split("\t")[0] not in named:
        return False
    if old.change_id == 0:
        return True
    found = change_mark(conn, old.change_id)
    return found == old.last_change or (found == "" and old.last_change in named)


def _rows_in(path: Path) -> int:
    return len(np.load(path / "id.npy", mmap_mode="r"))


def _dropped(seg: Segment, gone: np.ndarray) -> np.ndarray | None:
    """Which rows of ``seg`` belong to the customers ``gone``; None when none do."""
    words = seg.words["customer"]
    if not len(words) or not len(gone):
        return None
    pos = np.searchsorted(words, gone)
    hit = pos[(pos < len(words)) & (words[np.minimum(pos, len(words) - 1)] == gone)]
    if not hit.size:
        return None
    return np.isin(seg.codes["customer"], hit)


def _rows_of(seg: Segment) -> dict:
    """A segment's rows with words instead of codes (None for NULL), to merge or filter."""
    rows = {"id": np.asarray(seg.id), "at": np.asarray(seg.at), "value": np.asarray(seg.value),
            "type": np.repeat(np.arange(len(TYPES), dtype=np.int8), np.diff(seg.offsets))}
    for name in CODED:
        words = np.append(seg.words[name].astype(object), None)
        rows[name] = words[np.asarray(seg.codes[name])]  # code -1 picks the appended None
    return rows


def _concat(parts: list[dict]) -> dict:
    parts = [p for p in parts if len(p["at"])] or parts[:1]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _at_us(conn: Connection):
    """``occurred_at`` in integer microseconds since 1970 (UTC), exactly as the SQL windows compare it."""
    if conn.dialect.name == "sqlite":
        # Stored as text 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC.
        return text("CAST(strftime('%s', occurred_at) AS INTEGER) * 1000000 + CAST(substr(occurred_at, 21, 6) AS INTEGER)")
    return text("CAST(EXTRACT(EPOCH FROM occurred_at) * 1000000 AS BIGINT)")


def _type(conn: Connection):
    """``events.type``, on SQLite kept from the (type, time) index: reading most of the table, a scan in row order
    costs half what the index's lookups of every row do."""
    return literal_column("+events.type") if conn.dialect.name == "sqlite" else E.c.type


def _read(conn: Connection, where) -> dict:
    """The events of :data:`TYPES` that ``where`` keeps, as arrays (strings as object arrays)."""
    stmt = select(E.c.id, E.c.type, _at_us(conn), E.c.value, E.c.customer_id, E.c.product_id, E.c.message_id, E.c.topic,
                  E.c.feature, E.c.run_id).where(where, _type(conn).in_(TYPES))
    type_code = {t: i for i, t in enumerate(TYPES)}
    chunks: list[list[np.ndarray]] = []
    result = conn.execute(stmt)
    try:
        while rows := result.cursor.fetchmany(CHUNK):
            cols = list(zip(*rows))
            chunks.append([np.array(cols[0], dtype=np.int64),
                           np.fromiter(map(type_code.__getitem__, cols[1]), dtype=np.int8, count=len(rows)),
                           np.array(cols[2], dtype=np.int64), np.array(cols[3], dtype=np.float64),
                           *[np.array(c, dtype=object) for c in cols[4:]]])
    finally:
        result.close()
    keys = ("id", "type", "at", "value", *CODED)
    if not chunks:
        return {k: np.empty(0, dtype=dt) for k, dt in zip(keys, (np.int64, np.int8, np.int64, np.float64, *[object] * len(CODED)))}
    return {k: np.concatenate([c[j] for c in chunks]) for j, k in enumerate(keys)}


def _encode(values: np.ndarray, sort: bool) -> tuple[np.ndarray, np.ndarray]:
    """(int32 codes with -1 for None, dictionary as a str array); ``sort`` orders the dictionary."""
    table: defaultdict = defaultdict(itertools.count().__next__)
    codes = np.fromiter(map(table.__getitem__, values), dtype=np.int64, count=len(values))
    words = list(table)
    none = table.get(None)
    remap = np.arange(len(words), dtype=np.int64)
    if none is not None:
        words.pop(none)
        remap[none] = -1
        remap[none + 1:] -= 1
    words_arr = np.array([str(w) for w in words], dtype=str) if words else np.array([], dtype="<U1")
    if sort and len(words_arr):
        order = np.argsort(words_arr, kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        remap = np.where(remap >= 0, rank[np.maximum(remap, 0)], -1)
        words_arr = words_arr[order]
    return remap[codes].astype(np.int32), words_arr


def _write_segment(root: Path, rows: dict) -> str:
    """Write ``rows`` as a new segment directory (grouped by type, time-sorted within); returns its name."""
    order = np.lexsort((rows["id"], rows["at"], rows["type"]))
    name = f"seg-{uuid.uuid4().hex[:16]}"
    tmp = root / f"{name}.tmp"
    tmp.mkdir(parents=True)
    typ = rows["type"][order]
    np.save(tmp / "offsets.npy", np.searchsorted(typ, np.arange(len(TYPES) + 1)).astype(np.int64))
    for key in ("id", "at", "value"):
        np.save(tmp / f"{key}.npy", np.ascontiguousarray(rows[key][order]))
    for key in CODED:
        # Encoded in the order read (the strings lie in memory in that order), then put in time order.
        codes, words = _encode(rows[key], sort=key == "customer")
        np.save(tmp / f"{key}.npy", codes[order])
        np.save(tmp / f"{key}.words.npy", words)
    _fsync_dir(tmp)
    os.rename(tmp, root / name)
    return name


def _commit(root: Path, state: StoreState, names: list[str]) -> None:
    """Point ``current.json`` at ``names`` with one rename, then delete what no copy names any more."""
    events = sum(_rows_in(root / name) for name in names)
    doc = {"format": FORMAT, "token": state.token, "max_event_id": state.max_event_id, "change_id": state.change_id,
           "last_event": state.last_event, "last_change": state.last_change, "segments": names, "events": events}
    tmp = root / f"current.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, root / "current.json")
    _fsync_dir(root)
    keep = set(names)
    for entry in root.iterdir():
        if entry.is_dir() and entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)  # replaced segments, and leftovers of an interrupted write


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: PostgreSQL's SQLSTATE for a statement the role lacks the privilege for.
INSUFFICIENT_PRIVILEGE = "42501"


def for_plan(engine: Engine, project_root: str | os.PathLike | None, as_of: datetime) -> Updated:
    """Bring the store's copy in step for a plan as of ``as_of``; ``Updated("none")`` when the plan would not read it.

    A plan reads the copy only with current aggregates (no event after
    ``as_of``); otherwise, or when the copy cannot be written (a read-only
    folder, a full disk), or when the database role may only read (a CI dry
    run's: on PostgreSQL, bringing the copy in step takes a ``SHARE`` lock on
    ``events``, which needs more than ``SELECT``), the plan reads the store
    with SQL.
    """
    with engine.connect() as conn:
        if not aggregates.current(conn, as_of):
            return Updated("none")
    try:
        return update(engine, location(engine, project_root))
    except OSError:
        return Updated("none")
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == INSUFFICIENT_PRIVILEGE:
            return Updated("none")
        raise


def new_identity(conn: Connection) -> None:
    """Give an emptied store (the demo's ``--replace``) a new identity and an empty change log: every copy is void."""
    if conn.execute(select(M.c.value).where(M.c.key == TOKEN_KEY)).first() is None:
        return
    conn.execute(text("DELETE FROM event_changes"))
    conn.execute(M.update().where(M.c.key == TOKEN_KEY).values(value=secrets.token_hex(8)))


def remove(root: str | os.PathLike | None) -> bool:
    """Delete the copy at ``root`` (features then read the store until the next :func:`update`); True if there was one."""
    if root is None or not Path(root).exists():
        return False
    shutil.rmtree(root)
    return True
