"""The currency of a customer's prices: ``[brand] currency``, one for every language or one per language.

A shop selling in one currency writes ``currency = "EUR"``. A shop selling
in Germany and Poland sells in euros and in złoty::

    [brand]
    currency = { de = "EUR", pl = "PLN" }

The products file's ``price`` column is in the currency of the project's
``default_locale`` language (here ``de``: EUR); a column ``price_pl`` gives
the price in złoty, which Polish customers see (``{{ p.price|money }}`` →
``219,00 zł``). A product without a ``price_pl`` has no price for them: a
euro amount must never be printed as złoty, so printing it is a render
error naming the product and the column (and ``relmail templates check``
finds it), while ``{% if p.price %}`` tests false.

A key may name a locale instead of a language where one language pays in
two currencies: English-speaking customers in Israel pay in shekels and
those in the United Arab Emirates in dirhams::

    currency = { he = "ILS", ar = "AED", en = "ILS", en_AE = "AED" }

The locale's own entry wins over its language's, and its price column is
``price_en_AE`` (then ``price_en``), as for the names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from babel.numbers import is_currency
from jinja2 import Undefined

from ..errors import ConfigError
from ..importers.fields import language_of
from .optional import Missing

DEFAULT = "EUR"


@dataclass(frozen=True)
class Currencies:
    #: The currency of the products' own ``price``: the default language's.
    base: str = DEFAULT
    #: Language (``en``) or locale (``en_AE``) → currency, for a table.
    by_language: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings) -> Currencies:
        where = "relmail.toml [brand] currency"
        value = settings.raw.get("brand", {}).get("currency", DEFAULT)
        if isinstance(value, str):
            return cls(_code(value, where))
        if not isinstance(value, dict) or not value:
            raise ConfigError(f"{where}: use a currency code (\"EUR\") or a table by language ({{ de = \"EUR\", pl = \"PLN\" }})")
        table = {_key(k): _code(v, f"{where}.{k}") for k, v in value.items()}
        default = language_of(settings.default_locale)
        base = table.get(_key(settings.default_locale or "")) or table.get(default)
        if base is None:
            raise ConfigError(f"{where}: the table has no entry for '{default}', the language of default_locale "
                              f"({settings.default_locale}): the products' price column is in that currency")
        return cls(base, table)

    def for_locale(self, locale: str | None) -> str:
        """The currency a customer with ``locale`` sees prices in: the locale's entry, its language's, else the base one."""
        table = self.by_language
        if locale and len(table) > 1:
            own = table.get(_key(locale))
            if own is not None:
                return own
        return table.get(language_of(locale), self.base)

    def price_column(self, locale: str) -> str:
        """The products' column with the price a customer with ``locale`` pays: ``price_en_AE`` for a locale of its own, else ``price_en``."""
        key = _key(locale)
        return f"price_{key if key in self.by_language and key != language_of(locale) else language_of(locale)}"

    def own_price_needed(self, locale: str | None) -> bool:
        """Whether a customer with ``locale`` needs a ``price_<language>`` (their currency is not the price column's)."""
        return self.for_locale(locale) != self.base


def of_locale(locale: str) -> str:
    """The currency shops in ``locale``'s country price in today (CLDR), :data:`DEFAULT` when it names none.

    A locale without a country (``pl``) stands for the language's likeliest
    one (Poland), as CLDR's likely subtags say.
    """
    from babel import Locale
    from babel.core import UnknownLocaleError, get_global
    from babel.numbers import get_territory_currencies

    try:
        parsed = Locale.parse(locale.replace("-", "_"))
    except (ValueError, UnknownLocaleError):
        return DEFAULT
    territory = parsed.territory or get_global("likely_subtags").get(parsed.language, "").rpartition("_")[2]
    found = get_territory_currencies(territory, tender=True) if territory else []
    return found[0] if found else DEFAULT


def currency_code(value) -> str | None:
    """``value`` as an ISO 4217 code Babel knows (``eur`` → ``EUR``), or None: 'ZL' and 'EURO' are no currency."""
    if isinstance(value, str) and is_currency(value.strip().upper()):
        return value.strip().upper()
    return None


def _key(locale: str) -> str:
    """A table key as written (``en-ae``, ``en_AE``, ``EN``) in one form: ``en_AE``, ``en``."""
    language, _, rest = str(locale).replace("-", "_").partition("_")
    return f"{language.lower()}_{rest.upper()}" if rest else language.lower()


def _code(value, where: str) -> str:
    code = currency_code(value)
    if code is None:
        raise ConfigError(f"{where}: {value!r} is not an ISO 4217 currency code (EUR, PLN, CHF ...)")
    return code


class NoPrice(Missing):
    """A product's price for a customer whose currency has no ``price_<language>`` column value."""

    __slots__ = ()

    def __init__(self, *args, **kwargs):
        # Made with the catalogue's view, not by a template's lookup: nothing for templates check's observers.
        Undefined.__init__(self, *args, **kwargs)

    @property
    def _undefined_message(self) -> str:
        return self._undefined_hint or f"{self._undefined_name} has no price in the customer's currency"


def no_price(product_id, locale: str, currency: str, base: str, column: str | None = None) -> NoPrice:
    """The price of ``product_id`` for a ``locale`` customer whose currency has no price column value."""
    column = column or f"price_{language_of(locale)}"
    hint = (f"product({product_id!r}).price: no price in {currency} for {locale} customers (give the product a "
            f"{column} column value; its price column is in {base})")
    return NoPrice(hint=hint, name=f"product({product_id!r}).price")


def no_sale_price(product_id, locale: str, currency: str, base: str, column: str) -> NoPrice:
    """The price of ``product_id``, on sale, for a ``locale`` customer whose currency has no ``column`` value.

    The other currencies' price columns are regular prices: shown during a
    sale, they would overstate what the customer pays.
    """
    hint = (f"product({product_id!r}).price: on sale, and no sale price in {currency} for {locale} customers (give "
            f"the product a {column} column value; its sale price is in {base})")
    return NoPrice(hint=hint, name=f"product({product_id!r}).price")
