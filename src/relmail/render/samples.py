"""The customers ``templates check`` renders each variant for: from the store, or generated for an empty one.

For each variant, customers whose locale gets it: the one with the most
optional fields filled in and the one with the fewest (no name, no
attributes), found by :func:`fullest_and_emptiest` (the plan's render gate
finds them among a variant's recipients with it too). A variant no customer's locale reaches yet is rendered for
the same customers in that locale. Only when the store holds no customers
(or with ``generated=True``) are generated samples used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import String, case, cast, func, literal, select, true, union_all

from ..importers.fields import language_of
from ..store.models import Customer
from .catalog import Catalog
from .contexts import customer_contexts, load_catalog
from .inputs import CustomerContext
from .optional import optional

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from .compiler import Compiler

#: A locale suffix in a file name: ``welcome.nl.html``, ``footer.pt_BR.html``.
_SUFFIX = re.compile(r"^[^.]+\.([a-z]{2,3}(?:_[A-Za-z]{2,4})?)\.(?:html|txt)$")
C = Customer.__table__


@dataclass
class Sample:
    """A customer a variant is rendered for, and where it came from."""

    context: CustomerContext
    #: ``C0000042``, ``C0000042 as nl_NL`` (a store customer in the variant's locale), or ``generated C0000003``.
    label: str


def sample_contexts(locale: str = "en_GB") -> list[CustomerContext]:
    """Generated customers (for an empty store): with and without products and names, with awkward characters."""
    shop = "https://fietsenwinkel.example/p/"
    # The made-up price is as much in the customer's currency as in any other: each product has it as its
    # price_<language> too, as a shop selling in several currencies gives its products (render.currency).
    own_price = f"price_{language_of(locale)}"
    # Every key a catalogue product has (render.contexts.load_catalog), some of them empty; one on sale, so a
    # template's struck-through regular price is rendered too.
    products = [
        {"id": "EB-200", "name": "E-bike Stad 200", "price": 2499.0, "regular_price": 2499.0, "on_sale": False,
         "url": shop + "EB-200", "category": "e-bikes",
         "image_url": "https://fietsenwinkel.example/img/EB-200.jpg", "attributes": {"vendor": "Stadsfiets", own_price: 2499.0}},
        {"id": "LOCK-S1", "name": "SlimSlot S1 smart lock", "price": 129.0, "regular_price": 149.0, "on_sale": True,
         "url": shop + "LOCK-S1", "category": "accessories",
         "image_url": None, "attributes": {own_price: 149.0, f"sale_{own_price}": 129.0}},
        {"id": "SERVICE-PLUS", "name": "Onderhoudsbeurt Plus", "price": 89.0, "regular_price": 89.0, "on_sale": False,
         "url": None, "category": "maintenance",
         "image_url": None, "attributes": {own_price: 89.0}},
    ]
    # No database here: product("...") of any id gives a stand-in (the plan's render gate uses the real catalogue).
    catalog = Catalog({p["id"]: p for p in products}, stand_in=True)
    featured = products[:1]  # a message's own featured products replace it (SampleSource.samples)
    return [
        CustomerContext("C0000001", "jan.devries@example.nl", "Jan", "de Vries", locale, "Europe/Amsterdam",
                        {"loyalty_tier": "loyal", "city": "Utrecht"}, products[1:], {"owned_products": ["EB-100"]},
                        featured_products=featured, catalog=catalog),
        CustomerContext("C0000002", "amy@example.co.uk", None, None, locale, "Europe/London", {}, [], {"owned_products": []},
                        featured_products=featured, catalog=catalog),
        CustomerContext("C0000003", "zoe@example.org", "Zoë <b>&</b>", "O'Brien-Müller", locale, "Europe/Amsterdam",
                        {"loyalty_tier": "new"}, products[1:2], {"owned_products": []}, featured_products=featured, catalog=catalog),
    ]


def _stand_in(catalog: Catalog, product_id: str, locale: str):
    """The invented catalogue's product ``product_id``, or its stand-in with the made-up price as the locale's own."""
    product = catalog(product_id)
    if product_id in catalog:
        return product
    return optional({**product, "attributes": {f"price_{language_of(locale)}": product["price"]}}, f"product({product_id!r})")


class SampleSource:
    """Sample customers from the store (or generated ones when it is empty)."""

    def __init__(self, engine, as_of: datetime, generated: bool):
        self.engine, self.as_of = engine, as_of
        self.locales: dict[str, int] = {}
        self.catalog: dict[str, dict] = {}
        if engine is not None and not generated:
            with engine.connect() as conn:
                self.locales = {loc or "": n for loc, n in conn.execute(select(C.c.locale, func.count()).group_by(C.c.locale))}
                self.catalog = load_catalog(conn, as_of)
        self.kind = "store" if self.locales else "generated"

    def samples(self, locales: list[str], featured: tuple[str, ...]) -> list[Sample]:
        """The fullest and the emptiest customer of ``locales`` (the first locale's, re-localised, if none has one)."""
        if self.kind == "generated":
            loc = locales[0]
            out = []
            for ctx in sample_contexts(loc):
                # The message's featured products: stand-ins for ids a store without products cannot name,
                # priced in the customer's currency like the invented ones.
                shown = [_stand_in(ctx.catalog, p, loc) for p in featured]
                out.append(Sample(replace(ctx, featured_products=shown), f"generated {ctx.id}"))
            return out
        own = [loc for loc in locales if loc in self.locales]
        ids = self._pick(own or None)
        with self.engine.connect() as conn:
            contexts = customer_contexts(conn, ids, self.as_of, self.catalog, featured)
        out = []
        for cid in ids:
            ctx = contexts[cid]
            if own:
                out.append(Sample(ctx, cid))
            else:
                # No customer's locale reaches this variant yet: the store's customers, as if in that locale.
                out.append(Sample(replace(ctx, locale=locales[0]), f"{cid} as {locales[0]}"))
        return out

    def _pick(self, locales: list[str] | None) -> list[str]:
        """Ids of the fullest and the emptiest customer of ``locales`` (every customer's for None)."""
        cond = true()
        if locales is not None:
            real = [loc for loc in locales if loc]
            cond = C.c.locale.in_(real) if real else None
            if "" in locales:
                cond = C.c.locale.is_(None) if cond is None else (cond | C.c.locale.is_(None))
        with self.engine.connect() as conn:
            return fullest_and_emptiest(conn, cond)


def fullest_and_emptiest(conn: Connection, where) -> list[str]:
    """Ids of the customer matching ``where`` with the most optional fields filled in and of the one with the fewest.

    Fullness is the names given, then the size of the attributes; ties go to the lowest id, so the same
    store gives the same two. Mailable customers come first. One query; one id when both are the same
    customer, none when no customer matches.
    """
    fullness = sum(case((func.length(func.coalesce(col, "")) > 0, 1), else_=0) for col in (C.c.first_name, C.c.last_name))
    # Without blanks: a backend or an importer that writes JSON with ", " and ": " gives the same size as one without.
    size = func.length(func.replace(cast(C.c.attributes, String), " ", ""))
    # A customer whose address an import flagged is never mailed, and its address cannot be put in a To: header:
    # sampling it (a bare CRM row is often the emptiest) would fail every variant over the data, not the template.
    mailable = C.c.email_valid.desc()
    richest = select(C.c.id, literal(0).label("k")).where(where).order_by(mailable, fullness.desc(), size.desc(), C.c.id).limit(1)
    emptiest = select(C.c.id, literal(1).label("k")).where(where).order_by(mailable, fullness, size, C.c.id).limit(1)
    # Each side a subquery: SQLite takes no ORDER BY or LIMIT in a member of a UNION itself.
    both = union_all(*(select(s.c.id, s.c.k) for s in (richest.subquery(), emptiest.subquery()))).subquery()
    ids = conn.execute(select(both.c.id).order_by(both.c.k)).scalars().all()
    return list(dict.fromkeys(ids))


def candidate_locales(renderer: Compiler, store: SampleSource) -> list[str]:
    """Locales that between them reach every variant: the store's, the default, one per suffix in the folder, and a base one."""
    found = [loc or renderer.settings.default_locale for loc, _ in sorted(store.locales.items(), key=lambda kv: -kv[1])]
    found.append(renderer.settings.default_locale)
    suffixes = sorted({m.group(1) for p in renderer.templates_dir.rglob("*") if (m := _SUFFIX.match(p.name))})
    found += [full_locale(s) for s in suffixes]
    # A locale no file has a variant for reaches the base templates (a default locale with its own variant does not).
    languages = {x.lower() for s in suffixes for x in (s, s.split("_")[0])}
    found.append(next(loc for loc in ("en_GB", "en_US", "de_DE", "fr_FR", "es_ES", "it_IT", "sv_SE", "pl_PL")
                      if not ({loc.lower(), loc.split("_")[0]} & languages)))
    return list(dict.fromkeys(found))


def full_locale(lang: str) -> str:
    """``nl`` → ``nl_NL``: the likely full locale of a file's language suffix, for a sample customer."""
    if "_" in lang:
        return lang
    from babel import Locale
    from babel.core import get_global

    likely = get_global("likely_subtags").get(lang.lower())
    try:
        found = Locale.parse(likely) if likely else None
    except (ValueError, LookupError):
        found = None
    # An unknown suffix stays as it is: the variant is still chosen by name.
    return f"{found.language}_{found.territory}" if found is not None and found.territory else lang
