"""The product catalogue as templates see it: ``product("SKU")``, ``catalog["SKU"]`` and ``featured``.

A template names a product once, by id, instead of typing its name, price
and URL again::

    {% set book = product("9789025471456") %}
    <a href="{{ book.url }}"><img src="{{ book.image_url }}" alt="{{ book.name }}"></a> {{ book.price|money }}

    {% if featured %}<h1>{{ featured.name }}</h1>{% endif %}   {# the message's first featured product #}
    {% for p in products %}...{% endfor %}                       {# recommendations, never a featured one #}

``product(id)`` of an id that is not in the catalogue fails the render for
that customer (nothing half-made is sent; the plan's render gate reports
it); ``catalog[id]`` of one is undefined, for ``{% if catalog[id] %}``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

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
            return optional({"id": str(product_id), "name": f"Product {product_id}", "price": 0.0, "url": None, "category": "",
                             "image_url": None, "attributes": {}}, f"product({product_id!r})")
        raise UnknownProduct(f"product({product_id!r}): no product with this id in the catalogue (import products first)")

    def __repr__(self) -> str:
        return f"<Catalog of {len(self)} products>"


EMPTY = Catalog()


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
