"""The product catalogue as templates see it: ``product("SKU")``, ``catalog["SKU"]`` and ``featured``.

A template names a product once, by id, instead of typing its name, price
and URL again::

    {% set book = product("9789025471456") %}
    <a href="{{ book.url }}"><img src="{{ book.image_url }}" alt="{{ book.name }}"></a> {{ book.price|money }}
    {% if book.on_sale %}<s>{{ book.regular_price|money }}</s>{% endif %}   {# price: what the customer pays now #}

    {% if featured %}<h1>{{ featured.name }}</h1>{% endif %}   {# the message's first featured product #}
    {% for p in products %}...{% endfor %}                       {# recommendations, never a featured one #}

``product(id)`` of an id that is not in the catalogue fails the render for
that customer (nothing half-made is sent; the plan's render gate reports
it); ``catalog[id]`` of one is undefined, for ``{% if catalog[id] %}``.

A shop selling in several languages names its products in each: an
attribute ``name_de`` (or ``name_de_DE``) is the ``name`` a customer whose
locale is ``de_DE`` sees, and the same goes for ``url``, ``image_url`` and
every attribute (``description_de`` for ``attributes.description``). The
most specific suffix wins (``de_AT``, then ``de``); without one the
product's own value stays. :meth:`Catalog.for_locale` makes that view once
per locale, not per e-mail.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .currency import Currencies, no_price, no_sale_price
from .optional import Missing, optional


class UnknownProduct(LookupError):
    """A template asked for a product the catalogue does not have."""


class Catalog(Mapping):
    """Products by id, read-only. Calling it looks one up: ``product("SKU")``.

    ``stand_in``: an unknown id gives a made-up product instead of an error
    (``relmail templates check`` has no database to look ids up in).
    """

    def __init__(self, products: Mapping[str, Mapping[str, Any]] | None = None, *, stand_in: bool = False):
        # Wrapped once: a product's optional fields follow the templates' undefined policy wherever it is shown.
        self._products = {pid: optional(p, f"product({pid!r})") for pid, p in (products or {}).items()}
        self._stand_in = stand_in
        self._locales: dict[tuple[str, bool], Catalog] = {}
        self._localized = any(has_localized(p) for p in self._products.values())

    def for_locale(self, locale: str | None, currencies: Currencies | None = None) -> Catalog:
        """The catalogue as a customer with ``locale`` sees it (see the module docstring); made once per locale.

        With ``currencies`` whose currency for ``locale`` is not the price
        column's, each product's price is its ``price_<language>`` (or none).
        """
        own_price = currencies is not None and currencies.own_price_needed(locale)
        if not locale or not (self._localized or own_price):
            return self
        key = (_normal(locale), own_price)
        view = self._locales.get(key)
        if view is None:
            view = Catalog({pid: localized(p, locale, currencies) for pid, p in self._products.items()}, stand_in=self._stand_in)
            view._localized = False  # already a view: asked again, it answers itself
            self._locales[key] = view
        return view

    def __getitem__(self, product_id: str) -> Mapping[str, Any]:
        return self._products[product_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._products)

    def __len__(self) -> int:
        return len(self._products)

    def __call__(self, product_id: Any) -> Mapping[str, Any]:
        found = self._products.get(str(product_id))
        if found is not None:
            return found
        if self._stand_in:
            return optional({"id": str(product_id), "name": f"Product {product_id}", "price": 0.0, "regular_price": 0.0,
                             "on_sale": False, "url": None, "category": "", "image_url": None, "attributes": {}},
                            f"product({product_id!r})")
        raise UnknownProduct(f"product({product_id!r}): no product with this id in the catalogue (import products first)")

    def __repr__(self) -> str:
        return f"<Catalog of {len(self)} products>"


EMPTY = Catalog()

#: Product fields besides the attributes that a localized attribute can replace. The price is replaced
#: only where the customer pays in another currency than the price column's (:func:`localized`).
LOCALIZED_FIELDS = ("name", "url", "image_url")
_SUFFIX = re.compile(r"_[a-z]{2,3}(?:_[a-z0-9]{2,4})?$")


def _normal(key: str) -> str:
    return key.replace("-", "_").lower()


def has_localized(product: Mapping[str, Any]) -> bool:
    """Whether ``product`` has an attribute with a locale suffix (``name_de``, ``description_en_GB``)."""
    attributes = product.get("attributes")
    return isinstance(attributes, Mapping) and any(isinstance(k, str) and _SUFFIX.search(_normal(k)) for k in attributes)


def localized(product: Mapping[str, Any], locale: str, currencies: Currencies | None = None) -> dict[str, Any]:
    """``product`` with each field replaced by its attribute for ``locale`` (``name_de_AT``, then ``name_de``).

    Suffixes match without regard to case or ``-``/``_`` (``name_en-GB`` is
    ``name_en_GB``). The localized attributes themselves stay as they are.
    With ``currencies`` whose currency for ``locale`` is not the price
    column's, a product without ``price_<locale>`` has no price
    (:func:`~relmail.render.currency.no_price`): never the other currency's amount.
    That column is the regular price; a product on sale costs its
    ``sale_price_<locale>`` attribute, and without one it has no ``price``
    (:func:`~relmail.render.currency.no_sale_price`), only a ``regular_price``.
    """
    attributes = product.get("attributes")
    if not isinstance(attributes, Mapping):
        attributes = {}
    found = {_normal(k): v for k, v in attributes.items() if isinstance(k, str) and v not in (None, "")}
    loc = _normal(locale)
    suffixes = [loc] if "_" not in loc else [loc, loc.split("_")[0]]

    def pick(name: str, value: Any) -> Any:
        for suffix in suffixes:
            hit = found.get(f"{_normal(name)}_{suffix}")
            if hit is not None:
                return hit
        return value

    out = {k: pick(k, v) if k in LOCALIZED_FIELDS else v for k, v in product.items()}
    if currencies is not None and currencies.own_price_needed(locale) and "price" in product:
        column, language = currencies.price_column(locale), loc.split("_")[0]

        def own(prefix: str) -> Any:
            if column == f"price_{language}":
                return pick(f"{prefix}price", None)
            # A locale with a currency of its own (en_AE): its column, or its language's when that is the same currency.
            found_own = found.get(_normal(prefix + column))
            if found_own is None and currencies.for_locale(language) == currencies.for_locale(locale):
                found_own = found.get(f"{prefix}price_{language}")
            return found_own

        regular = own("")
        if regular is None:
            regular = no_price(product.get("id"), locale, currencies.for_locale(locale), currencies.base, column)
        out["price"] = regular
        if "regular_price" in product:
            out["regular_price"] = regular
        if product.get("on_sale"):
            sale = own("sale_")
            out["price"] = sale if sale is not None else no_sale_price(product.get("id"), locale, currencies.for_locale(locale),
                                                                      currencies.base, f"sale_{column}")
    if not attributes:
        return out
    localized_attributes = {k: pick(k, v) if isinstance(k, str) else v for k, v in attributes.items()}
    # A shop that sells only in other languages fills description_de and description_pl, never description:
    # the German customer still reads attributes.description.
    known = {_normal(k) for k in attributes if isinstance(k, str)} | {*LOCALIZED_FIELDS, "price", "sale_price"}
    for suffix in suffixes:
        for key, value in attributes.items():
            if not isinstance(key, str) or value in (None, "") or not _normal(key).endswith(f"_{suffix}"):
                continue
            base = key[: len(key) - len(suffix) - 1]
            if base and _normal(base) not in known:
                localized_attributes[base] = value
                known.add(_normal(base))
    out["attributes"] = localized_attributes
    return out


class AbsentProduct(Missing):
    """``featured`` when the message's featured product is not in the catalogue: false in a test, an error printed."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        return f"the message's featured product {self._undefined_name!r} is not in the catalogue (import products first)"

    def __getattr__(self, name: str):
        if name[:2] == "__":
            raise AttributeError(name)
        return self

    def __getitem__(self, key):
        return self


def catalog_variables(catalog: Catalog | None, featured: list[Mapping[str, Any]], absent: Sequence[str] = ()) -> dict[str, Any]:
    """The template variables about products besides ``products``: the catalogue and the featured ones.

    ``absent``: featured ids the catalogue does not have; when none is shown,
    ``featured`` tests false and printing it names the missing product.
    """
    catalog = EMPTY if catalog is None else catalog
    first = featured[0] if featured else None
    if first is None and absent:
        first = AbsentProduct(name=absent[0])
    return {"catalog": catalog, "product": catalog, "featured": first, "featured_products": featured}
