"""Segments: ``segments/*.yml`` files compiled to SQL that runs in the database.

A segment file holds a name, a description and one condition (none means
every customer). Conditions combine with ``all`` / ``any`` / ``not``; leaves
are the behaviour, consent and attribute tests in :data:`CONDITIONS`, a
reference to another segment, or a raw ``sql:`` query returning
``customer_id`` (``:as_of`` is bound). See ``docs/readme/segments.md``.

Every condition is evaluated as of a time: only events up to ``as_of``
count, and customers created after it are never members. Conditions become
correlated ``EXISTS`` subqueries on ``events(customer_id, occurred_at)``,
which both SQLite and PostgreSQL run as index lookups or semi-joins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from sqlalchemy import bindparam, func, or_, select, true, union
from sqlalchemy.exc import DBAPIError, StatementError

from ..errors import Problem, ValidationError
from ..features.sql import code_point_order, connection, sorted_ids
from ..store.faults import database_fault
from ..store.models import Customer, UTCDateTime
from .columnar import Evaluator, uses_copy
from .compile import compile_node
from .grammar import COMBINATORS, CONDITIONS, SPECIAL, Node, parse_file, walk
from .sql_guard import read_only, refused

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, CursorResult, Engine

    from ..store.columnar import Copy

__all__ = ["COMBINATORS", "CONDITIONS", "SPECIAL", "Node", "Segment", "audience", "evaluator", "load_segments"]

customers = Customer.__table__
T = TypeVar("T")


@dataclass
class Segment:
    """One segment file: ``select(as_of)`` gives the SQL of its members' ids."""

    name: str
    description: str
    file: Path
    root: Node | None
    _registry: dict[str, Segment] = field(default_factory=dict, repr=False)

    def condition(self, as_of: datetime):
        """The membership test as a SQL boolean over the ``customers`` table."""
        if as_of.tzinfo is None:
            raise ValueError("as_of must be timezone-aware")
        return true() if self.root is None else compile_node(self.root, as_of, self._resolve)

    def select(self, as_of: datetime):
        """``SELECT customers.id`` of the members as of ``as_of``."""
        return select(customers.c.id).where(customer_by(as_of), self.condition(as_of))

    def count(self, conn: Connection, as_of: datetime) -> int:
        """How many customers are members as of ``as_of``."""
        stmt = select(func.count()).select_from(self.select(as_of).subquery())
        return int(_run(conn, stmt, [self], lambda result: result.scalar_one()))

    def ids(self, conn: Connection, as_of: datetime) -> np.ndarray:
        """The members' ids, sorted."""
        return audience(conn, [self], as_of)

    def _resolve(self, name: str, as_of: datetime):
        return self._registry[name].condition(as_of)

    @property
    def references(self) -> set[str]:
        """Names of the segments this one refers to directly."""
        return {node.args for node in walk(self.root) if node.kind == "segment"}

    @property
    def has_sql(self) -> bool:
        """Whether a ``sql:`` condition decides membership, here or in a segment this one refers to."""
        seen: set[str] = set()
        stack = [self]
        while stack:
            segment = stack.pop()
            for node in walk(segment.root):
                if node.kind == "sql":
                    return True
                if node.kind == "segment" and node.args not in seen:
                    seen.add(node.args)
                    stack.append(self._registry[node.args])
        return False


def customer_by(as_of: datetime):
    """SQL: the customer existed at ``as_of`` (signed up by then, or sign-up date unknown)."""
    created = customers.c.created_at
    return or_(created.is_(None), created <= bindparam("seg_as_of", as_of, type_=UTCDateTime))


def audience(engine_or_conn: Engine | Connection, segments: list[Segment], as_of: datetime,
             over: Evaluator | None = None) -> np.ndarray:
    """Sorted unique ids of the customers in any of ``segments`` as of ``as_of``.

    ``over`` (from :func:`evaluator`, for the same ``as_of``) answers the
    behaviour conditions from the columnar copy of the events when every
    segment has one (or none at all); the members are the same.
    """
    if not segments:
        return np.array([], dtype="<U1")
    if over is not None and all(s.root is None or uses_copy(s.root, s._registry) for s in segments):
        mask = np.zeros(len(over.universe), dtype=bool)
        for segment in segments:
            mask |= over.members(segment)
        return over.universe[mask]
    stmt = segments[0].select(as_of) if len(segments) == 1 else union(*(s.select(as_of) for s in segments))
    with connection(engine_or_conn) as conn:
        return _ids(conn, stmt, segments)


def evaluator(conn: Connection, copy: Copy, as_of: datetime) -> Evaluator:
    """An :class:`~relmail.segments.columnar.Evaluator` over ``copy`` as of ``as_of``, for :func:`audience` (``over``)."""
    def ids(condition, segment: Segment | None) -> np.ndarray:
        # The segment whose leaf it is: named by an error, and read-only when it has a sql: condition.
        return _ids(conn, select(customers.c.id).where(customer_by(as_of), condition), [segment] if segment else [])

    return Evaluator(conn, copy, as_of, ids(true(), None), ids)


def _ids(conn, stmt, segments: list[Segment]) -> np.ndarray:
    members = stmt.subquery()
    # Sorted by code point in SQL (SQLite's BINARY, PostgreSQL's "C"), the
    # order NumPy uses: sorted_ids then only checks the order instead of sorting a large audience again.
    # A database whose own collation is code point order reads the ids in its primary key's order;
    # asking for "C" there would sort every customer again.
    key = members.c.id if code_point_order(conn) else members.c.id.collate("C")

    def fetch(result) -> list[str]:
        # The driver's tuples, not SQLAlchemy rows: an id needs no result processing, and building
        # a Row per member costs as much as the statement's own fetch for a large audience.
        try:
            return [i for (i,) in result.cursor.fetchall()]
        finally:
            result.close()

    return sorted_ids(_run(conn, select(members.c.id).order_by(key), segments, fetch))


def _run(conn, stmt, segments: list[Segment], read: Callable[[CursorResult], T]) -> T:
    """``read`` of ``stmt``'s result; read-only when a ``sql:`` condition is in it (:mod:`.sql_guard`)."""
    try:
        if not any(s.has_sql for s in segments):
            return read(conn.execute(stmt))
        with read_only(conn):
            return read(conn.execute(stmt))
    except (DBAPIError, StatementError) as exc:
        files = ", ".join(str(s.file) for s in segments)
        what = refused(getattr(exc, "orig", None))
        if what is not None:
            raise ValidationError(f"segment query failed ({files}): {what}") from None
        fault = database_fault(exc)
        if fault is not None:
            # A timeout, a lost connection, a lock: the database's trouble, not the segment files'.
            raise fault from None
        # The statement's own error, mostly a broken ``sql:`` escape hatch: say which files could be at fault.
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if "customer_id" in first:
            # The sql: query's result is read by its customer_id column, which the database names as missing.
            first += "; a sql: condition must return a column named customer_id (e.g. SELECT id AS customer_id FROM customers WHERE ...)"
        raise ValidationError(f"segment query failed ({files}): {first}") from None


def load_segments(project_or_dir) -> dict[str, Segment]:
    """Every ``*.yml``/``*.yaml`` under the project's ``segments/``, validated.

    All problems of all files are collected into one :class:`ValidationError`
    naming file, line and key path; references must exist and not loop.
    """
    folder = Path(getattr(project_or_dir, "segments_dir", project_or_dir))
    files = sorted(list(folder.glob("*.yml")) + list(folder.glob("*.yaml"))) if folder.is_dir() else []
    problems: list[Problem] = []
    registry: dict[str, Segment] = {}
    invalid: set[str] = set()
    for path in files:
        parsed = parse_file(path, problems)
        if parsed is None:
            # Its own problems are reported: a reference to it is not also an unknown segment.
            invalid.add(path.stem)
            continue
        seg = Segment(name=parsed[0], description=parsed[1], file=path, root=parsed[2])
        if seg.name in registry:
            problems.append(Problem(str(path), None, "name", f"segment '{seg.name}' is also defined in {registry[seg.name].file}"))
            continue
        registry[seg.name] = seg
    for seg in registry.values():
        seg._registry = registry
        for node in walk(seg.root):
            if node.kind == "segment" and node.args not in registry and node.args not in invalid:
                known = ", ".join(sorted(registry)) or "none"
                problems.append(Problem(str(seg.file), node.line, node.path, f"unknown segment '{node.args}' (known: {known})"))
    problems.extend(_cycles(registry))
    if problems:
        raise ValidationError(f"{len(problems)} problem(s) in segment files", problems)
    return registry


def _cycles(registry: dict[str, Segment]) -> list[Problem]:
    """A problem per reference loop, at the reference that closes it (file, line and key path).

    Every loop is reported, not only the first: a marketer fixing one should
    not find the next on the following run.
    """
    state: dict[str, int] = {}  # 1 visiting, 2 done
    problems: list[Problem] = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        # A reference to a missing or invalid file is a problem of its own, and leads nowhere.
        for ref in sorted(registry[name].references & registry.keys()):
            if state.get(ref) == 1:
                path = trail + [name]
                loop = path[path.index(ref):] + [ref]
                node = next(n for n in walk(registry[name].root) if n.kind == "segment" and n.args == ref)
                problems.append(Problem(str(registry[name].file), node.line, node.path,
                                        "segment references loop: " + " -> ".join(loop)))
            elif state.get(ref) is None:
                visit(ref, trail + [name])
        state[name] = 2

    for name in sorted(registry):
        if state.get(name) is None:
            visit(name, [])
    return problems
