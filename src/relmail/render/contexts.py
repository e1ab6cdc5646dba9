"""Customer contexts for rendering, built in bulk for a batch of customers.

A context is the customer's own fields, the message's featured products
(``featured``), the catalogue (``product("SKU")``) and up to three
recommended products (``products``): from the categories the customer
bought or viewed most in the year before the run, never one they already
own, never one not available (``attributes.available`` false) and never a
featured one, so a template that shows the featured product and then "also
for you" shows it once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from ..features.sql import unindexed
from ..store.models import Customer, Event, Product
from .catalog import Catalog
from .inputs import CustomerContext
from .sale import SALE_FIELDS, Prices

C, E, P = Customer.__table__, Event.__table__, Product.__table__
RECOMMENDED = 3


def load_prices(conn: Connection) -> Prices:
    """Every product as a plain dict with its sale, to be priced as of a moment (:mod:`relmail.render.sale`).

    The catalogue is small next to the audience: read once per run.
    """
    rows = conn.execute(select(P.c.id, P.c.name, P.c.price, *(P.c[f] for f in SALE_FIELDS), P.c.url, P.c.category,
                               P.c.image_url, P.c.attributes).order_by(P.c.id)).mappings()
    products = []
    for r in rows:
        product = dict(r)
        if isinstance(product["attributes"], str):
            product["attributes"] = json.loads(product["attributes"])
        product["attributes"] = product["attributes"] or {}
        products.append(product)
    return Prices(products)


def load_catalog(conn: Connection, at: datetime) -> Catalog:
    """Every product by id, as templates see it at ``at``: ``price`` is what the customer pays then."""
    return load_prices(conn).at(at)


def available(product: Mapping[str, Any]) -> bool:
    """False for a product the catalogue says is not available (``attributes.available`` false): never recommended.

    A product the shop disabled (PrestaShop's ``active`` 0) has no page: a
    recommendation of it is a link to "product not available". Featuring one
    stays the campaign's explicit choice.
    """
    return (product.get("attributes") or {}).get("available") is not False


def customer_contexts(
    conn: Connection,
    customer_ids: Sequence[str],
    as_of: datetime,
    catalog: Mapping[str, Mapping],
    featured: Sequence[str] = (),
) -> dict[str, CustomerContext]:
    """Contexts for ``customer_ids`` (missing customers are left out), three queries per batch."""
    ids = list(dict.fromkeys(customer_ids))
    if not ids:
        return {}
    rows = conn.execute(
        select(C.c.id, C.c.email, C.c.first_name, C.c.last_name, C.c.locale, C.c.timezone, C.c.attributes).where(C.c.id.in_(ids))
    ).mappings().all()
    affinity: dict[str, list[tuple[int, str]]] = {}
    for cid, category, n in conn.execute(
        select(E.c.customer_id, P.c.category, func.count())
        .select_from(E.join(P, P.c.id == E.c.product_id))
        # +type: walk each customer's events through the customer index. Offered the
        # covering (type, time, customer, product) index, SQLite without fresh
        # statistics reads a year of views for a batch of 500 customers instead.
        .where(E.c.customer_id.in_(ids), unindexed(E.c.type).in_(("purchase", "view")))
        .where(E.c.occurred_at <= as_of, E.c.occurred_at > as_of - timedelta(days=365))
        .group_by(E.c.customer_id, P.c.category)
    ):
        affinity.setdefault(cid, []).append((-n, category))
    owned: dict[str, set[str]] = {}
    for cid, pid in conn.execute(
        select(E.c.customer_id, E.c.product_id).distinct().where(
            E.c.customer_id.in_(ids), unindexed(E.c.type) == "purchase", E.c.product_id.is_not(None), E.c.occurred_at <= as_of
        )
    ):
        owned.setdefault(cid, set()).add(pid)
    by_category: dict[str, list[str]] = {}
    for pid, product in catalog.items():
        if not available(product):
            continue
        by_category.setdefault(product["category"], []).append(pid)

    shown = [catalog[p] for p in featured if p in catalog]
    absent = tuple(p for p in featured if p not in catalog)
    lookup = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    out = {}
    for row in rows:
        cid = row["id"]
        mine = owned.get(cid, set())
        skip = mine | set(featured)
        picks: list[str] = []
        for _, category in sorted(affinity.get(cid, [])):
            picks += [p for p in by_category.get(category, ()) if p not in skip and p not in picks]
            if len(picks) >= RECOMMENDED:
                break
        attributes = row["attributes"]
        if isinstance(attributes, str):
            attributes = json.loads(attributes)
        out[cid] = CustomerContext(
            id=cid,
            email=row["email"],
            first_name=row["first_name"],
            last_name=row["last_name"],
            locale=row["locale"],
            timezone=row["timezone"],
            attributes=attributes or {},
            recommended_products=[catalog[p] for p in picks[:RECOMMENDED]],
            data={"owned_products": sorted(mine)},
            featured_products=shown,
            absent_featured=absent,
            catalog=lookup,
        )
    return out
