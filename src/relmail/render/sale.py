"""What a product costs at a moment: its sale price while the sale runs, else its regular price.

A product's ``sale_price`` applies from ``sale_starts_at`` (none: from any
time) up to, not including, ``sale_ends_at`` (none: no end). Templates see
three fields instead of the stored four:

* ``price``: what the customer pays at that moment;
* ``regular_price``: the price outside the sale; the same as ``price``
  unless the product is on sale;
* ``on_sale``: the sale runs and its price is below the regular price
  (what a template tests before striking the regular price through).

During its dates the sale price is what the customer pays even when it is
not below the regular price (Shopify charges the variant price whatever its
compare-at price says); such a product is not ``on_sale``.

:class:`Prices` keeps the catalogue's rows and prices them as of a moment,
anew only when a sale has started or ended since: a send that runs past the
end of a sale renders its later e-mails at the regular price.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from .catalog import Catalog

#: The stored fields of a sale, which templates see as ``price``, ``regular_price`` and ``on_sale``.
SALE_FIELDS = ("sale_price", "sale_starts_at", "sale_ends_at")


def running(product: Mapping[str, Any], at: datetime) -> bool:
    """Whether ``product`` has a sale price that applies at ``at``."""
    if product.get("sale_price") is None:
        return False
    starts, ends = product.get("sale_starts_at"), product.get("sale_ends_at")
    return (starts is None or starts <= at) and (ends is None or at < ends)


def priced(product: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    """``product`` (a stored row) as templates see it at ``at``: its sale fields become ``price``, ``regular_price``, ``on_sale``."""
    out = {k: v for k, v in product.items() if k not in SALE_FIELDS}
    regular = product["price"]
    pays = product["sale_price"] if running(product, at) else regular
    on_sale = pays < regular
    out.update(price=pays, regular_price=regular if on_sale else pays, on_sale=on_sale)
    return out


class Prices:
    """The catalogue's stored rows; :meth:`at` is the :class:`Catalog` of one moment."""

    def __init__(self, rows: Iterable[Mapping[str, Any]]):
        self.rows = list(rows)
        #: Every moment a sale starts or ends: between two of them, every product costs the same.
        self.changes = sorted({t for r in self.rows if r.get("sale_price") is not None
                               for t in (r.get("sale_starts_at"), r.get("sale_ends_at")) if t is not None})
        self._made: tuple[int, Catalog] | None = None

    def at(self, when: datetime) -> Catalog:
        """The catalogue priced as of ``when``; the one made last when no sale started or ended in between."""
        span = bisect_right(self.changes, when)
        if self._made is None or self._made[0] != span:
            self._made = (span, Catalog({r["id"]: priced(r, when) for r in self.rows}))
        return self._made[1]
