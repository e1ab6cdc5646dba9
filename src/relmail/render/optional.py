"""Optional data: a missing value tests as false or empty, printing it is still an error.

Shops leave cells empty, and an empty cell is left out of a customer's
``attributes``; a product may have no ``image_url``; a message's ``data`` has
only what its campaign entry gives. Templates test such values all the time
(``{% if customer.attributes.tags == "vip" %}``), so for these three kinds of
data (``customer.attributes``, every product mapping of ``products`` and
``recommended_products``, and ``message.data``, nested mappings and lists
included) a missing key is :class:`Missing`:

* **testing it** is false or empty: ``{% if x %}``, ``x == "vip"`` (false),
  ``x != "vip"`` (true), ``"vip" in x`` (false), ``x in ["a"]`` (false),
  ``x > 3`` (false), ``{% for t in x %}`` (no iterations), ``x|length`` (0),
  ``x is defined`` (false), ``x | default("...")`` (the default), and an
  attribute of it (``x.city``) is missing too;
* **printing it** fails, as a typo must: ``{{ customer.attributes.tagz }}``
  raises with the name and how to fix it.

Every other variable keeps :class:`jinja2.StrictUndefined`: ``{{ custmer }}``
and ``{% if custmer %}`` both fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import Undefined

#: Called with every :class:`Missing` made: ``templates check`` names the optional values no sample has.
observers: list = []
#: Keys of a mapping an error about one of its missing keys lists.
KEYS_SHOWN = 12


class Missing(Undefined):
    """A key that optional data does not have (see the module docstring)."""

    __slots__ = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for observe in observers:
            observe(self)

    @property
    def _undefined_message(self) -> str:
        where = self._undefined_name
        message = (f"{where} is missing (an optional value: test it with {{% if {where} %}}, "
                   f"or print it with {{{{ {where} | default('...') }}}})")
        owner = self._undefined_obj
        if isinstance(owner, OptionalDict) and owner:
            # A typo of a field the mapping has (featured.nme) is found at a glance.
            keys = sorted(str(k) for k in owner)
            shown = ", ".join(keys[:KEYS_SHOWN]) + (", ..." if len(keys) > KEYS_SHOWN else "")
            message += f"; {owner._where} has: {shown}"
        return message

    def __str__(self) -> str:
        self._fail_with_undefined_error()

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0

    def __bool__(self) -> bool:
        return False

    def __contains__(self, item) -> bool:
        return False

    def __eq__(self, other) -> bool:
        return isinstance(other, Undefined)

    def __ne__(self, other) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(Missing)

    def __lt__(self, other) -> bool:
        return False

    __le__ = __gt__ = __ge__ = __lt__

    def __getattr__(self, name: str):
        if name[:2] == "__":
            raise AttributeError(name)
        return Missing(name=f"{self._undefined_name}.{name}")

    def __getitem__(self, key):
        return Missing(name=f"{self._undefined_name}[{key!r}]")

    def __repr__(self) -> str:
        return f"Missing({self._undefined_name})"


class OptionalDict(dict):
    """A dict whose missing keys read as :class:`Missing` (``in`` and ``.get`` behave as a dict's)."""

    __slots__ = ("_where",)

    def __missing__(self, key):
        return Missing(obj=self, name=f"{self._where}.{key}" if isinstance(key, str) and key.isidentifier() else f"{self._where}[{key!r}]")


def named(value: Mapping[str, Any], where: str) -> OptionalDict:
    """An optional mapping under the name a template knows it by (a catalogue product shown as ``featured``)."""
    out = optional(dict(value), where) if not isinstance(value, OptionalDict) else OptionalDict(value)
    out._where = where
    return out


def optional(value: Any, where: str) -> Any:
    """``value`` with every mapping in it (itself, nested, in lists) an :class:`OptionalDict`."""
    if isinstance(value, OptionalDict):
        return value
    if isinstance(value, dict) or (not isinstance(value, _SCALARS) and isinstance(value, Mapping)):
        out = OptionalDict(value)  # one C-level copy; only nested containers are visited
        out._where = where
        for key, item in out.items():
            if isinstance(item, _CONTAINERS) or (not isinstance(item, _SCALARS) and isinstance(item, Mapping)):
                out[key] = optional(item, f"{where}.{key}" if isinstance(key, str) and key.isidentifier() else f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)) and any(isinstance(v, (*_CONTAINERS, Mapping)) for v in value):
        return [optional(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


_SCALARS = (str, int, float, type(None))
_CONTAINERS = (dict, list, tuple)


def optional_context(variables: dict[str, Any]) -> dict[str, Any]:
    """A template context given as plain data (``relmail render --context``) with the same policy as a send's."""
    out = dict(variables)
    customer = out.get("customer")
    if isinstance(customer, Mapping):
        out["customer"] = {**customer, "attributes": optional(customer.get("attributes") or {}, "customer.attributes")}
    for key in ("products", "recommended_products", "featured_products"):
        if isinstance(out.get(key), list):
            out[key] = [optional(p, "product") for p in out[key]]
    message = out.get("message")
    if isinstance(message, Mapping):
        out["message"] = {**message, "data": optional(message.get("data") or {}, "message.data")}
    return out
