"""Plan warnings for a message that can reach nobody, or features a product the catalogue lacks.

A segment that names a category no product has (``Zubehör`` where the
catalogue has ``zubehor``) matches nobody, and the plan shows an audience of
0 with nothing failing; a featured product missing from the catalogue fails
only the renders, so with no recipient nothing says so either. In a CI dry
run that is a pull request that silently turns a message off. A message's
own ``categories`` the catalogue lacks fail nothing: the affinity part of
every customer's score is just 0, and sends drop below ``min_relevance``.
:func:`catalogue_warnings` says each, with the segment file's line.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from ..store.models import Product
from .consent_warning import PlanWarning

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..campaigns import Campaign
    from ..segments import Segment

P = Product.__table__


def catalogue_warnings(engine: Engine, campaign: Campaign, summaries, segments: dict[str, Segment],
                       topics: Iterable[str]) -> list[PlanWarning]:
    """Per message: featured products and categories the catalogue lacks, and an empty audience with its segments' unknown names.

    ``topics`` are the consent topics ``[topics]`` in ``relmail.toml`` declares.
    """
    from ..segments.describe import category_id, unknown_names

    out: list[PlanWarning] = []
    featured = {p for message in campaign.messages for p in message.products}
    stored = _stored(engine, featured) if featured else {}
    named = {c for message in campaign.messages for c in message.categories}
    categories = _categories(engine, named | {category_id(c) for c in named} - {None}) if named else set()
    for message, summary in zip(campaign.messages, summaries):
        for product in message.products:
            if product in stored.get(product.lower(), ()):
                continue
            other = sorted(stored.get(product.lower(), ()))
            hint = f"the catalogue has {other[0]!r}; ids are compared exactly" if other else "import products first"
            text = f"{message.id}: featured product {product!r} is not in the catalogue ({hint}); every e-mail of it would fail to render"
            out.append(PlanWarning(message.id, "FEATURED_PRODUCT", 0, summary.audience, text))
        for category in message.categories:
            if category in categories:
                continue
            slug = category_id(category)
            hint = (f"; it has {slug!r} (categories are stored as ids)" if slug in categories
                    else " (a typo, or products not imported yet?)")
            text = (f"{message.id}: no product in the catalogue has category {category!r}{hint}, "
                    "so no purchase or view in it can count toward the score's affinity")
            out.append(PlanWarning(message.id, "UNKNOWN_CATEGORY", 0, summary.audience, text))
        if summary.audience:
            continue
        why = [str(p) for name in message.segments if name in segments for p in unknown_names(engine, segments[name], topics)]
        cause = f": {'; '.join(why)}" if why else ""
        text = f"{message.id}: no customer is in its audience (segments: {', '.join(message.segments)}){cause}"
        out.append(PlanWarning(message.id, "EMPTY_AUDIENCE", 0, 0, text))
    return out


def _categories(engine: Engine, names: set[str]) -> set[str]:
    """Those of ``names`` that some product in the catalogue has as its category."""
    with engine.connect() as conn:
        return set(conn.execute(select(P.c.category).where(P.c.category.in_(sorted(names))).distinct()).scalars())


def _stored(engine: Engine, ids: set[str]) -> dict[str, set[str]]:
    """Stored product ids equal to any of ``ids`` case-insensitively, keyed by the lower-cased id."""
    found: dict[str, set[str]] = {}
    with engine.connect() as conn:
        for (stored,) in conn.execute(select(P.c.id).where(func.lower(P.c.id).in_(sorted({i.lower() for i in ids})))):
            found.setdefault(stored.lower(), set()).add(stored)
    return found
