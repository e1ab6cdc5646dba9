"""Segments over the columnar copy of the events: behaviour leaves with NumPy, the rest with SQL.

A behaviour leaf (``purchased``, ``viewed``, ``owns``, ``uses``,
``received_email``, ``opened_email``, ``clicked_email``) asks whether a
customer has events of one type, with products, a topic, a feature, a
message or a campaign's runs, inside a window. In SQL that
is a subquery over every such event of the window (millions of index
entries for "viewed a bike in the last year"); over the columnar copy
(:mod:`relmail.store.columnar`) it is a ``searchsorted`` slice of one
type's time-sorted rows and one ``np.bincount``.

The tree is evaluated over the *universe*, the customers who exist as of
``as_of`` (read once with SQL), as one mask per node: where the condition
is true. Conditions are two-valued, as :mod:`~relmail.segments.compile`
compiles them (a missing attribute fails its test), so ``not`` is the
complement. Every other leaf (tenure, locale, consent, attributes, open
tickets, ``sql:``) is read from the database as the ids where it is true.
A segment with no behaviour leaf is left to SQL entirely.

The bounds are SQL's: an event counts when ``occurred_at <= as_of`` (and
``> as_of - within_days``), compared in integer microseconds, so
memberships are identical. Usage sums may differ from the database's in
the last bits of a float (another order of addition).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Connection

from ..features.sql import align
from ..store.columnar import Copy, Rows, micros
from ..store.models import Customer, Product
from .compile import compile_node, run_prefix
from .grammar import Node, ids_of, walk

customers, products = Customer.__table__, Product.__table__

#: Leaves answered from the copy, and the event type each reads.
BEHAVIOUR = {"purchased": "purchase", "viewed": "view", "owns": "purchase", "uses": "usage",
             "received_email": "email_sent", "opened_email": "email_opened", "clicked_email": "email_clicked"}

_BEFORE_ALL = -(2**62)


def uses_copy(root: Node | None, registry: dict) -> bool:
    """Whether the tree (with the segments it refers to) has a behaviour leaf the copy can answer."""
    seen: set[str] = set()
    stack = [root]
    while stack:
        for node in walk(stack.pop()):
            if node.kind in BEHAVIOUR:
                return True
            if node.kind == "segment" and node.args not in seen:
                seen.add(node.args)
                stack.append(registry[node.args].root)
    return False


class Evaluator:
    """Memberships of segments as of one time, over one copy; the universe is read once and shared."""

    def __init__(self, conn: Connection, copy: Copy, as_of: datetime, universe: np.ndarray,
                 sql_ids: Callable[[object, object], np.ndarray]):
        self.conn, self.copy, self.as_of = conn, copy, as_of
        #: Sorted ids of the customers who exist as of ``as_of``.
        self.universe = universe
        self.sql_ids = sql_ids
        self.until = micros(as_of)
        self._by_segment: dict[int, Rows] = {}
        self._segments: dict[str, np.ndarray] = {}

    def members(self, segment) -> np.ndarray:
        """Where ``segment`` is true, as a mask over :attr:`universe`."""
        if segment.name not in self._segments:
            if segment.root is None:
                self._segments[segment.name] = np.ones(len(self.universe), dtype=bool)
            else:
                self._segments[segment.name] = self.node(segment.root, segment)
        return self._segments[segment.name]

    def node(self, node: Node, segment) -> np.ndarray:
        """Where ``node`` (of ``segment``'s tree) is true, as a mask over :attr:`universe`."""
        kind = node.kind
        if kind in ("all", "any"):
            out = np.full(len(self.universe), kind == "all")
            for child in node.children:
                if kind == "all":
                    out &= self.node(child, segment)
                else:
                    out |= self.node(child, segment)
            return out
        if kind == "not":
            return ~self.node(node.children[0], segment)
        if kind == "segment":
            return self.members(segment._registry[node.args])
        if kind in BEHAVIOUR:
            return self._behaviour(kind, node.args)
        # Any other leaf: where the database finds it true.
        return self._mask(self.sql_ids(compile_node(node, self.as_of, segment._resolve), segment))

    def _mask(self, ids: np.ndarray) -> np.ndarray:
        out = np.zeros(len(self.universe), dtype=bool)
        out[align(self.universe, ids)[1]] = True
        return out

    def _behaviour(self, kind: str, a: dict) -> np.ndarray:
        typ = BEHAVIOUR[kind]
        if kind == "owns":
            return self._count(typ, _BEFORE_ALL, {"product": self._products(a["product"], None)}) > 0
        if kind == "uses":
            after = micros(self.as_of - timedelta(days=a.get("within_days", 30)))
            want = {"feature": {a["feature"]}}
            if "product" in a:
                want["product"] = self._products(a["product"], None)
            used = self._count(typ, after, want, weighted=True)
            return used < a["fewer_than"] if "fewer_than" in a else used >= a["at_least"]
        want = {}
        if "product" in a or "category" in a:
            want["product"] = self._products(a.get("product"), a.get("category"))
        if "topic" in a:
            want["topic"] = {a["topic"]}
        if "message" in a:
            want["message"] = set(ids_of(a["message"]))
        if "campaign" in a:
            want["run"] = {run_prefix(name) for name in ids_of(a["campaign"])}
        if "not_within_days" in a:
            recent = micros(self.as_of - timedelta(days=a["not_within_days"]))
            return (self._count(typ, _BEFORE_ALL, want) > 0) & ~(self._count(typ, recent, want) > 0)
        after = micros(self.as_of - timedelta(days=a["within_days"])) if "within_days" in a else _BEFORE_ALL
        return self._count(typ, after, want) >= max(a.get("at_least", 1), 1)

    def _products(self, product, category) -> set[str]:
        """The product ids a leaf names, directly or by category (either matches, as in SQL)."""
        wanted = set(ids_of(product) or []) if product is not None else set()
        if category is not None:
            stmt = select(products.c.id).where(products.c.category.in_(ids_of(category)))
            wanted.update(str(p) for p in self.conn.execute(stmt).scalars())
        return wanted

    def _count(self, typ: str, after_us: int, want: dict[str, set[str]], weighted: bool = False) -> np.ndarray:
        """Per universe customer: events of ``typ`` in (after, as_of] whose every coded column in ``want`` is one
        of its words (``run``: begins with one of them), or their ``coalesce(value, 1)`` sum."""
        total = np.zeros(len(self.universe))
        for seg in self.copy.segments:
            rows = seg.window(typ, after_us, self.until)
            if rows.stop <= rows.start:
                continue
            keep = np.ones(rows.stop - rows.start, dtype=bool)
            for name, wanted in want.items():
                keep &= np.isin(seg.codes[name][rows], _codes(seg, name, wanted))
            picked = np.flatnonzero(keep)
            at, who = self._rows(seg).select(np.asarray(seg.codes["customer"][rows])[picked])
            weights = None
            if weighted:
                value = np.asarray(seg.value[rows])[picked[at]]
                weights = np.where(np.isnan(value), 1.0, value)
            total += np.bincount(who, weights=weights, minlength=len(self.universe))
        return total

    def _rows(self, seg) -> Rows:
        """Where each of ``seg``'s customers is in the universe (customers created after ``as_of`` are not)."""
        if id(seg) not in self._by_segment:
            self._by_segment[id(seg)] = Rows(seg, self.universe)
        return self._by_segment[id(seg)]


def _codes(seg, name: str, wanted: set[str]) -> np.ndarray:
    """The codes of ``wanted`` in ``seg``'s dictionary ``name``; for ``run``, of the words beginning with one of them."""
    if name == "run":
        prefixes = tuple(wanted)
        return np.array([i for i, w in enumerate(seg.words[name]) if str(w).startswith(prefixes)], dtype=np.int64)
    lookup = seg.code_of(name)
    return np.array(sorted(lookup[w] for w in wanted if w in lookup), dtype=np.int64)
