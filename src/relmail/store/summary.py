"""What the store holds, in one dict: the end of ``relmail demo`` and ``relmail summary``.

Everything is a SQL aggregate, so the summary of a store with twenty million
events takes seconds and the same store gives the same numbers on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import json

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from .models import (
    EVENT_TYPES,
    Customer,
    Decision,
    Delivery,
    Event,
    Meta,
    Preference,
    Product,
    Run,
    Suppression,
)

#: How many of the most recent runs the summary lists one by one.
RECENT_RUNS = 10


def store_summary(engine: Engine) -> dict:
    """Counts of customers, products, consent, events and runs, plus the demo's special customers.

    Keys: ``customers`` (``total``, ``by_locale``), ``products`` (``total``,
    ``by_category``), ``preferences`` (``opted_out`` per topic, where topic
    ``*`` is "unsubscribed from all"; ``frequency_wishes``), ``events``
    (``total``, ``by_type`` in :data:`~relmail.store.models.EVENT_TYPES` order,
    ``open_tickets``),
    ``runs`` (``total``, ``by_status``, ``recent``), ``decisions``,
    ``deliveries``, ``suppressions``, and ``demo`` (seed, size, ``as_of`` and
    the special customers still in the store, ``featured_owners``: customers
    who bought each featured product) when the store was made by
    ``relmail demo``, else ``None``.
    """
    C, P, PR, E, R = Customer.__table__, Product.__table__, Preference.__table__, Event.__table__, Run.__table__
    with engine.connect() as conn:

        def grouped(column, *where) -> dict[str, int]:
            stmt = select(column, func.count()).group_by(column).order_by(column)
            for clause in where:
                stmt = stmt.where(clause)
            return {str(key): int(n) for key, n in conn.execute(stmt)}

        def count(table) -> int:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

        by_locale = grouped(C.c.locale)
        by_category = grouped(P.c.category)
        by_type_raw = grouped(E.c.type)
        order = {t: i for i, t in enumerate(EVENT_TYPES)}
        by_type = dict(sorted(by_type_raw.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
        opted_out = grouped(PR.c.topic, PR.c.opted_in.is_(False))
        wishes = int(conn.execute(select(func.count()).where(PR.c.max_per_week.is_not(None))).scalar_one())
        # A ticket is open while it has no ticket_closed event (ticket id in ``feature``).
        closed = select(E.c.feature).where(E.c.type == "ticket_closed", E.c.feature.is_not(None))
        open_tickets = int(
            conn.execute(
                select(func.count(func.distinct(E.c.feature))).where(E.c.type == "ticket_opened", E.c.feature.not_in(closed))
            ).scalar_one()
        )
        recent = [
            {"id": r.id, "campaign": r.campaign, "window": r.window, "status": r.status, "as_of": r.as_of.isoformat()}
            for r in conn.execute(select(R).order_by(R.c.as_of.desc(), R.c.id.desc()).limit(RECENT_RUNS))
        ]
        demo_info = conn.execute(select(Meta.__table__.c.value).where(Meta.__table__.c.key == "demo")).scalar_one_or_none()
        demo = None
        if demo_info is not None:
            demo = json.loads(demo_info)
            roles = demo.get("special_customers", {})
            present = {i for (i,) in conn.execute(select(C.c.id).where(C.c.id.in_(list(roles.values()))))}
            # A special customer erased since (``customers forget``) is no longer named.
            demo["special_customers"] = {role: cid for role, cid in roles.items() if cid in present}
            from ..demo.catalog import FEATURED

            buyers = (
                select(E.c.product_id, func.count(func.distinct(E.c.customer_id)))
                .where(E.c.type == "purchase", E.c.product_id.in_(FEATURED))
                .group_by(E.c.product_id)
            )
            owners = {str(p): int(n) for p, n in conn.execute(buyers)}
            demo["featured_owners"] = {p: owners.get(p, 0) for p in FEATURED}
        return {
            "customers": {"total": sum(by_locale.values()), "by_locale": by_locale},
            "products": {"total": sum(by_category.values()), "by_category": by_category},
            "preferences": {
                "total": count(PR),
                "opted_out": opted_out,
                "unsubscribed_all": opted_out.get("*", 0),
                "frequency_wishes": wishes,
            },
            "events": {"total": sum(by_type.values()), "by_type": by_type, "open_tickets": open_tickets},
            "runs": {"total": count(R), "by_status": grouped(R.c.status), "recent": list(reversed(recent))},
            "decisions": count(Decision.__table__),
            "deliveries": count(Delivery.__table__),
            "suppressions": count(Suppression.__table__),
            "demo": demo,
        }
