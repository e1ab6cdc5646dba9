"""CLDR's minimum grouping digits, which Babel does not apply: Polish writes 1234 but 12 345.

A locale's ``minimumGroupingDigits`` (LDML, Number Patterns) is how many
digits must stand before the first group separator: with 2, a number is
grouped only from (primary group size + 2) integer digits on, five with the
usual groups of three. Polish, Spanish, Italian, Hungarian, European
Portuguese and a few other languages have 2; the rest 1.

Babel (2.19) neither applies the rule (``format_decimal``
gives ``1 234`` in Polish) nor carries the value in its locale data (its
CLDR import leaves ``minimumGroupingDigits`` out), so the values are listed
here, taken from CLDR 48 through ICU 78 (every locale ICU has, formatting
1234 and 12345). When Babel gains the field, read it from there instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from babel import Locale
from babel.numbers import NumberPattern

#: Languages whose minimumGroupingDigits is 2 (CLDR 48).
_LANGUAGES = frozenset({"be", "bg", "es", "et", "hu", "hy", "ia", "ie", "it", "ka", "lv", "pl", "sl", "sq"})
#: Locales whose value differs from their language's: Spanish of Latin America and the US groups from four digits,
#: European Portuguese (and Portuguese outside Brazil and Angola) and Russian of Ukraine from five.
_LOCALES = {
    **dict.fromkeys(("es_419", "es_AR", "es_BO", "es_BR", "es_BZ", "es_CL", "es_CO", "es_CR", "es_CU", "es_DO", "es_EC", "es_GT",
                     "es_HN", "es_MX", "es_NI", "es_PA", "es_PE", "es_PR", "es_PY", "es_SV", "es_US", "es_UY", "es_VE"), 1),
    **dict.fromkeys(("pt_CH", "pt_CV", "pt_GQ", "pt_GW", "pt_LU", "pt_MO", "pt_MZ", "pt_PT", "pt_ST", "pt_TL", "ru_UA"), 2),
}
_DIGITS = re.compile(r"\d+")


@lru_cache(maxsize=256)
def minimum_grouping_digits(locale: Locale) -> int:
    """CLDR's minimumGroupingDigits of ``locale``: its own value, else its language's (``es_AR`` 1, ``es_ES`` 2, ``pl`` 2)."""
    for key in (str(locale), f"{locale.language}_{locale.territory}" if locale.territory else None):
        if key in _LOCALES:
            return _LOCALES[key]
    return 2 if locale.language in _LANGUAGES else 1


def grouped(format_number: Callable[..., str], locale: Locale, pattern: NumberPattern) -> str:
    """``format_number(group_separator=True)``, unless the number has too few integer digits to be grouped in ``locale``.

    ``format_number`` is a Babel formatter with everything but ``group_separator`` bound, ``pattern``
    the number pattern it uses (its first group size counts). The digits are counted in the ungrouped
    text, after Babel rounded the number (9999.999 as money has five).
    """
    text = format_number(group_separator=True)
    least = minimum_grouping_digits(locale)
    if least <= 1:
        return text
    plain = format_number(group_separator=False)
    integer = _DIGITS.search(plain)
    return plain if integer is not None and len(integer.group()) < pattern.grouping[0] + least else text
