"""Locale-aware filters for money, numbers, percentages and dates (Babel).

Every filter formats for the locale of the e-mail being rendered (the
``locale`` variable of the context, the customer's locale), unless a locale
is passed explicitly: ``{{ p.price|money }}``, ``{{ 0.15|percent }}``,
``{{ order_date|date("long") }}``, ``{{ 1234.5|number }}``,
``{{ p.price|money("GBP", locale="en_GB") }}``, and a word's plural form by
the language's CLDR rules: ``{{ n|plural(one="produkt", few="produkty", many="produktów") }}``.

A currency code printed as the symbol (``AED``, ``CHF`` in English) is kept
apart from the digits by a no-break space, as CLDR's currency spacing says
and Babel leaves out: ``AED 89.00``, not ``AED89.00``.

``{{ p.name|isolate }}`` keeps a value of the other writing direction (a
Latin product name in a Hebrew sentence) from reordering its neighbours.

Numbers are grouped by the locale's CLDR minimum grouping digits, which
Babel leaves out (:mod:`relmail.render.grouping`): ``1234`` but ``12 345``
in Polish.

Formatting a price in Babel is slow next to a dictionary lookup and the
same few prices recur in every e-mail of a batch, so results are memoised
per (value, currency, locale, format) (figures: docs/benchmarks.md).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from functools import lru_cache, partial

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime, format_time
from babel.numbers import format_currency, format_decimal, format_percent, get_currency_symbol, parse_pattern
from jinja2 import pass_context
from markupsafe import Markup

from ..errors import TemplateError
from .currency import currency_code
from .grouping import grouped

DEFAULT_CURRENCY = "EUR"
DEFAULT_LOCALE = "en_GB"


@lru_cache(maxsize=64)
def parse_locale(name: str | None) -> Locale:
    """A Babel locale from ``nl_NL`` / ``nl-NL`` / ``nl``; unknown names are an error."""
    try:
        return Locale.parse((name or DEFAULT_LOCALE).replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        raise TemplateError(f"unknown locale '{name}'") from None


def _locale(ctx, explicit: str | None) -> Locale:
    return parse_locale(explicit or ctx.get("locale") or DEFAULT_LOCALE)


def _number(value, what: str):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TemplateError(f"{what}: expected a number, got {value!r}") from None
    return value


@lru_cache(maxsize=8192)
def _money(value, currency: str, locale: Locale, fmt: str | None) -> str:
    pattern = parse_pattern(fmt) if fmt else locale.currency_formats["standard"]
    text = grouped(partial(format_currency, value, currency, format=fmt, locale=locale), locale, pattern)
    return _spaced(text, get_currency_symbol(currency, locale))


def _spaced(text: str, symbol: str) -> str:
    """A no-break space between a symbol that starts or ends with a letter and the digits it touches (CLDR currencySpacing)."""
    if symbol[-1:].isalpha():
        text = re.sub(re.escape(symbol) + r"(?=[-\u200e\u200f]?\d)", lambda m: m.group() + "\xa0", text)
    if symbol[:1].isalpha():
        text = re.sub(r"(?<=\d)" + re.escape(symbol), lambda m: "\xa0" + m.group(), text)
    return text


@pass_context
def money(ctx, value, currency: str | None = None, format: str | None = None, locale: str | None = None) -> str:
    """``2499`` → ``€ 2.499,00`` (nl) / ``€2,499.00`` (en)."""
    cur = _currency(currency or ctx.get("currency") or DEFAULT_CURRENCY)
    return _money(_number(value, "money"), cur, _locale(ctx, locale), format)


@lru_cache(maxsize=64)
def _currency(code) -> str:
    """``code`` as Babel knows it; an unknown one ('ZL', 'EURO') is an error, not a label printed after the amount."""
    known = currency_code(code)
    if known is None:
        raise TemplateError(f"money: {code!r} is not an ISO 4217 currency code (EUR, PLN, GBP ...)")
    return known


@lru_cache(maxsize=8192)
def _decimal(value, locale: Locale, fmt: str | None) -> str:
    pattern = parse_pattern(fmt) if fmt else locale.decimal_formats[None]
    return grouped(partial(format_decimal, value, format=fmt, locale=locale), locale, pattern)


@pass_context
def number(ctx, value, format: str | None = None, locale: str | None = None) -> str:
    """``1234.5`` → ``1.234,5`` (nl) / ``1,234.5`` (en)."""
    return _decimal(_number(value, "number"), _locale(ctx, locale), format)


@pass_context
def percent(ctx, value, format: str | None = None, locale: str | None = None) -> str:
    """``0.15`` → ``15%`` with the locale's sign placement."""
    loc = _locale(ctx, locale)
    pattern = parse_pattern(format) if format else loc.percent_formats[None]
    return grouped(partial(format_percent, _number(value, "percent"), format=format, locale=loc), loc, pattern)


def _as_date(value, what: str):
    if isinstance(value, (date, datetime)):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
    raise TemplateError(f"{what}: expected a date or ISO 8601 string, got {value!r}")


@pass_context
def date_filter(ctx, value, format: str = "medium", locale: str | None = None) -> str:
    """``2026-11-23`` → ``23 nov 2026`` (nl, medium) / ``23 Nov 2026`` (en)."""
    value = _as_date(value, "date")
    if isinstance(value, datetime):
        value = value.date()
    return format_date(value, format=format, locale=_locale(ctx, locale))


@pass_context
def datetime_filter(ctx, value, format: str = "medium", locale: str | None = None, tz: str | None = None) -> str:
    """A date and time in the customer's time zone (``timezone`` in the context) and locale."""
    value = _as_date(value, "datetime")
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return format_datetime(value, format=format, tzinfo=tz or ctx.get("timezone"), locale=_locale(ctx, locale))


@pass_context
def time_filter(ctx, value, format: str = "short", locale: str | None = None, tz: str | None = None) -> str:
    value = _as_date(value, "time")
    return format_time(value, format=format, tzinfo=tz or ctx.get("timezone"), locale=_locale(ctx, locale))


#: CLDR's plural categories, in the order they are named in errors.
PLURAL_CATEGORIES = ("zero", "one", "two", "few", "many", "other")


@lru_cache(maxsize=64)
def _integer_categories(locale: Locale) -> tuple[str, ...]:
    """The plural categories whole numbers reach in ``locale`` (Polish: one, few, many; German: one, other)."""
    reached = {locale.plural_form(n) for n in range(0, 1001)}
    return tuple(c for c in PLURAL_CATEGORIES if c in reached)


@pass_context
def plural(ctx, count, zero: str | None = None, one: str | None = None, two: str | None = None, few: str | None = None,
           many: str | None = None, other: str | None = None, locale: str | None = None) -> str:
    """The word for ``count`` by the language's plural rules (CLDR, via Babel).

    ``{{ n }} {{ n|plural(one="produkt", few="produkty", many="produktów") }}`` gives 1 produkt, 2 produkty,
    5 produktów, 22 produkty; ``{{ n|plural(one="Artikel", other="Artikel") }}`` in German. Every category a
    whole number reaches in the language must be given (``other`` is the word for the rest), so a missing
    form fails every render of the template, not just the one whose count needs it.
    """
    loc = _locale(ctx, locale)
    forms = {"zero": zero, "one": one, "two": two, "few": few, "many": many, "other": other}
    number = _number(count, "plural")
    category = loc.plural_form(abs(number))
    missing = [c for c in dict.fromkeys((*_integer_categories(loc), category)) if forms[c] is None]
    if missing:
        needed = ", ".join(f"{c}=" for c in dict.fromkeys((*_integer_categories(loc), category)))
        raise TemplateError(f"plural: {loc.get_language_name('en')} ({loc}) needs the forms {needed} (missing: {', '.join(missing)})")
    return forms[category]


def add_days(value, days):
    """``{{ now|add_days(14)|date('long') }}``: a date some days later."""
    from datetime import timedelta

    return _as_date(value, "add_days") + timedelta(days=_number(days, "add_days"))


#: Unicode's FIRST STRONG ISOLATE and POP DIRECTIONAL ISOLATE (UAX #9).
_FSI, _PDI = "\u2068", "\u2069"


def isolate(value):
    """``{{ p.name|isolate }}``: the value as a unit of its own writing direction inside text of another.

    A Latin name ending in a bracket or a number inside a Hebrew or Arabic
    sentence (``Za'atar (100 g)``) otherwise lends its neighbours its
    direction: the bracket and the price next to it move. The value goes
    between FIRST STRONG ISOLATE and POP DIRECTIONAL ISOLATE, invisible
    characters that browsers and mail programs honour, in the HTML part and
    in the text part alike (an HTML ``<bdi>`` would not reach the text part).
    """
    if isinstance(value, Markup):
        return Markup(_FSI) + value + Markup(_PDI)
    return f"{_FSI}{value}{_PDI}"


FILTERS = {
    "isolate": isolate,
    "add_days": add_days,
    "plural": plural,
    "money": money,
    "number": number,
    "percent": percent,
    "date": date_filter,
    "datetime": datetime_filter,
    "time": time_filter,
}


def install(env) -> None:
    """Add the locale filters to a Jinja environment."""
    env.filters.update(FILTERS)
