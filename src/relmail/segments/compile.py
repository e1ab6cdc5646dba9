"""Segment trees compiled to SQL over the ``customers`` table.

"Has such an event" conditions compile per database (:class:`has_events`):
PostgreSQL gets a correlated ``EXISTS``, which it plans as a (anti-)semi-join
in either polarity; SQLite gets ``customers.id IN (SELECT customer_id ...)``,
read once through the covering ``(type, occurred_at, customer_id,
product_id)`` index, where a correlated ``EXISTS`` would walk every
customer's events. Counts and sums stay correlated subqueries. Every event
test is bounded by ``occurred_at <= as_of``: nothing after the run's time
decides membership.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Boolean, String, and_, bindparam, column, exists, false, func, not_, or_, select, text, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement

from ..features.sql import json_bool, json_number, json_text
from ..store.models import Customer, Event, Preference, Product, UTCDateTime
from .grammar import Node, ids_of

customers, events, preferences, products = (Customer.__table__, Event.__table__, Preference.__table__, Product.__table__)
_EVENT_OF = {"purchased": "purchase", "viewed": "view", "received_email": "email_sent", "opened_email": "email_opened",
             "clicked_email": "email_clicked"}


def compile_node(node: Node, as_of: datetime, resolve: Callable[[str, datetime], object]):
    """The SQL boolean for ``node``; ``resolve(name, as_of)`` gives a referenced segment's."""
    kind, a = node.kind, node.args
    if kind == "all":
        return and_(true(), *[compile_node(c, as_of, resolve) for c in node.children])
    if kind == "any":
        return or_(false(), *[compile_node(c, as_of, resolve) for c in node.children])
    if kind == "not":
        return not_(compile_node(node.children[0], as_of, resolve))
    if kind == "segment":
        return resolve(a, as_of)
    if kind == "sql":
        raw = text(a)
        if ":as_of" in a:
            raw = raw.bindparams(bindparam("as_of", as_of, type_=UTCDateTime))
        sub = raw.columns(column("customer_id", String)).subquery()
        # A NULL among the ids would make NOT IN unknown for every customer the query does not return.
        return customers.c.id.in_(select(sub.c.customer_id).where(sub.c.customer_id.is_not(None)))
    if kind in _EVENT_OF:
        return _event_condition(kind, a, as_of)
    if kind == "owns":
        return _exists(as_of, events.c.type == "purchase", events.c.product_id.in_(ids_of(a["product"])))
    if kind == "uses":
        conds = [events.c.type == "usage", events.c.feature == a["feature"]]
        if "product" in a:
            conds.append(events.c.product_id.in_(ids_of(a["product"])))
        conds.append(events.c.occurred_at > _ago(as_of, a.get("within_days", 30)))
        used = (select(func.coalesce(func.sum(func.coalesce(events.c.value, 1.0)), 0.0))
                .where(events.c.customer_id == customers.c.id, events.c.occurred_at <= _ago(as_of, 0), *conds)
                .scalar_subquery())
        return used < a["fewer_than"] if "fewer_than" in a else used >= a["at_least"]
    if kind == "tenure_days":
        return _tenure(a, as_of)
    if kind == "locale":
        return _locale(ids_of(a["in"]))
    if kind == "consent":
        p = preferences
        mine = p.c.customer_id == customers.c.id
        if "opted_in" in a:
            return exists().where(mine, p.c.topic == a["topic"], p.c.opted_in == a["opted_in"])
        return not_(exists().where(mine, p.c.topic.in_((a["topic"], "*")), p.c.opted_in == false()))
    if kind == "open_ticket":
        return _open_ticket(as_of)
    if kind == "attribute":
        return _attribute(a)
    raise AssertionError(kind)


def _locale(wanted: list[str]):
    """The customer's locale is one of ``wanted``; a language alone (``de``) is that language in any country.

    Templates fall back from ``de_DE`` to ``.de`` variants; a segment on ``de`` means the same
    German speakers, not only the customers stored with the bare language.
    """
    exact = [w for w in wanted if "_" in w]
    languages = [w for w in wanted if "_" not in w]
    loc = customers.c.locale
    return or_(false(), *([loc.in_(exact + languages)] if wanted else []),
               *[loc.startswith(f"{lang}_", autoescape=True) for lang in languages])


def _tenure(a: dict, as_of: datetime):
    """Tenure as the features count it: from the sign-up date, or without one from the first purchase.

    A customer with neither (a shop export without sign-up dates, no order)
    has no known tenure and matches no tenure condition: never new, never long-standing
    (and so a member of ``not`` of either).
    """
    c = customers.c.created_at

    def started(before: bool, days: float):
        at = _ago(as_of, days)
        bought = _exists(as_of, events.c.type == "purchase", events.c.occurred_at < at if before else events.c.occurred_at <= at)
        # Spelled out for NULL: "c < at" of an unknown date is NULL, which NOT() would keep NULL.
        return or_(and_(c.is_not(None), c < at if before else c <= at), and_(c.is_(None), bought))

    known = or_(c.is_not(None), _exists(as_of, events.c.type == "purchase"))
    ops = {"gt": lambda d: started(True, d), "gte": lambda d: started(False, d),
           "lt": lambda d: and_(known, not_(started(False, d))), "lte": lambda d: and_(known, not_(started(True, d)))}
    return and_(*[ops[k](v) for k, v in a.items()])


def _ago(as_of: datetime, days: float):
    return bindparam(None, as_of - timedelta(days=days), type_=UTCDateTime)


class has_events(ColumnElement):
    """True for customers with at least one event matching ``conds`` (SQL boolean)."""

    type = Boolean()
    inherit_cache = False  # holds plain expressions, compiled once per plan

    def __init__(self, *conds):
        self.conds = conds


@compiles(has_events)
def _has_events_exists(element, compiler, **kw):
    return compiler.process(exists().where(events.c.customer_id == customers.c.id, *element.conds), **kw)


@compiles(has_events, "sqlite")
def _has_events_in(element, compiler, **kw):
    # events.customer_id is NOT NULL, so NOT IN means the same as NOT EXISTS.
    return compiler.process(customers.c.id.in_(select(events.c.customer_id).where(*element.conds)), **kw)


def _exists(as_of: datetime, *conds):
    return has_events(events.c.occurred_at <= _ago(as_of, 0), *conds)


def _event_condition(kind: str, a: dict, as_of: datetime):
    conds = [events.c.type == _EVENT_OF[kind]]
    wanted = []
    if "product" in a:
        wanted.append(events.c.product_id.in_(ids_of(a["product"])))
    if "category" in a:
        in_category = select(products.c.id).where(products.c.category.in_(ids_of(a["category"])))
        wanted.append(events.c.product_id.in_(in_category))
    if wanted:
        conds.append(or_(*wanted))
    if "topic" in a:
        conds.append(events.c.topic == a["topic"])
    if "message" in a:
        conds.append(events.c.message_id.in_(ids_of(a["message"])))
    if "campaign" in a:
        conds.append(or_(*[of_campaign(name) for name in ids_of(a["campaign"])]))
    at_least = a.get("at_least", 1)
    if "not_within_days" in a:
        # Did it before, but not in the last N days (a lapsed buyer, not a never-buyer).
        recent = events.c.occurred_at > _ago(as_of, a["not_within_days"])
        return and_(_exists(as_of, *conds), not_(_exists(as_of, *conds, recent)))
    if "within_days" in a:
        conds.append(events.c.occurred_at > _ago(as_of, a["within_days"]))
    if at_least <= 1:
        return _exists(as_of, *conds)
    n = (select(func.count()).select_from(events)
         .where(events.c.customer_id == customers.c.id, events.c.occurred_at <= _ago(as_of, 0), *conds)
         .scalar_subquery())
    return n >= at_least


def run_prefix(campaign: str) -> str:
    """What the ids of ``campaign``'s runs begin with (:func:`relmail.planning.result.run_id_for`: ``<campaign>:<window>``)."""
    return f"{campaign}:"


def of_campaign(campaign: str):
    """SQL: the event is of a run of ``campaign``."""
    # A comparison, not LIKE: '_' in a campaign name is no wildcard, and SQLite's LIKE ignores case.
    prefix = run_prefix(campaign)
    return func.substr(events.c.run_id, 1, len(prefix)) == prefix


def _open_ticket(as_of: datetime):
    closed = events.alias("closed")
    later_close = (exists().where(closed.c.customer_id == events.c.customer_id, closed.c.type == "ticket_closed",
                                  closed.c.feature == events.c.feature, closed.c.occurred_at >= events.c.occurred_at,
                                  closed.c.occurred_at <= _ago(as_of, 0)))
    return _exists(as_of, events.c.type == "ticket_opened", events.c.feature.is_not(None), not_(later_close))


def attribute_present(key: str):
    """SQL: the customer's attributes hold ``key`` with a text, number or true/false value."""
    col = customers.c.attributes
    return json_text(col, key).is_not(None) | json_number(col, key).is_not(None) | json_bool(col, key).is_not(None)


def _known(condition):
    """``condition``, false where SQL would find it unknown (a comparison with a missing value)."""
    return func.coalesce(condition, false())


def _attribute(a: dict):
    """The attribute tests, each false for a customer without the key or with a value of another JSON type."""
    col, key = customers.c.attributes, a["key"]
    out = []
    for test, v in a.items():
        if test == "key":
            continue
        if test == "exists":
            present = attribute_present(key)
            out.append(present if v else not_(present))
        elif test == "equals":
            if isinstance(v, bool):
                out.append(json_bool(col, key) == (1 if v else 0))
            elif isinstance(v, str):
                out.append(json_text(col, key) == v)
            else:
                out.append(json_number(col, key) == float(v))
        elif test == "in":
            if all(isinstance(x, str) for x in v):
                out.append(json_text(col, key).in_(v))
            else:
                out.append(json_number(col, key).in_([float(x) for x in v]))
        else:
            num = json_number(col, key)
            out.append({"gt": num > v, "lt": num < v, "gte": num >= v, "lte": num <= v}[test])
    return and_(*(_known(test) for test in out))
