"""Value parsers a column mapping names: times in a shop's format, yes/no, money, lists, slugs.

Each ``make_*`` returns a parser: a function of one non-empty cell (``str``)
that returns the value to store or raises :class:`~relmail.importers.fields.FieldError`
with a message for the user. Empty cells never reach a parser (the mapping
treats them as missing), so a parser may assume text with content.

>>> make_time("%Y-%m-%d %H:%M:%S %z", None)("2026-11-23 09:30:00 +0100").isoformat()
'2026-11-23T08:30:00+00:00'
>>> make_money("EUR", ".")("€ 1,234.50")
1234.5
"""

from __future__ import annotations

import csv
import hashlib
import re
import unicodedata
import zoneinfo
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from html import unescape
from typing import Any

from ..timestamps import EARLIEST, implausible, wholly_past
from .fields import FALSE_WORDS, TRUE_WORDS, FieldError, boolean, csv_scalar, integer, number

Parser = Callable[[str], Any]

#: strftime formats whose values ``datetime.fromisoformat`` reads the same way
#: (much faster than ``strptime``; figures in docs/benchmarks.md): checked against the value's shape first.
_ISO_SHAPES = {
    "%Y-%m-%d %H:%M:%S %z": re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d\d:?\d\d"),
    "%Y-%m-%d %H:%M:%S%z": re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:?\d\d"),
    "%Y-%m-%dT%H:%M:%S%z": re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[+-]\d\d:?\d\d|Z)"),
    "%Y-%m-%d %H:%M:%S": re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"),
    "%Y-%m-%dT%H:%M:%S": re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"),
    "%Y-%m-%d %H:%M": re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d"),
    "%Y-%m-%d": re.compile(r"\d{4}-\d\d-\d\d"),
}
#: Distinct cells remembered per time or money parser: the lines of one order share its time, and
#: an export repeats its prices.
_TIME_CACHE = 4096
_MISSING = object()


def remembered(parse: Parser, size: int) -> Parser:
    """``parse`` remembered per distinct argument (a cell), up to ``size`` of them (then it starts afresh); failures are not.

    A plain dict rather than ``functools.lru_cache``: every full garbage
    collection visits each entry of an LRU cache, while a dict of text to
    numbers, times and text is not tracked at all, and a large import runs
    many collections while it holds its chunk of rows.
    """
    memo: dict[str, Any] = {}
    get = memo.get

    def cached(value: str) -> Any:
        result = get(value, _MISSING)
        if result is _MISSING:
            result = parse(value)
            if len(memo) >= size:
                memo.clear()
            memo[value] = result
        return result

    cached.__wrapped__ = parse  # type: ignore[attr-defined]
    cached.forget = memo.clear  # type: ignore[attr-defined]
    return cached


def make_time(fmt: str | list[str] | None, timezone: str | None, suggest: bool = False, blank: Any = (),
              ahead: bool = False, end_of_day: bool = False) -> Parser:
    """A date-time in ``fmt`` (strftime codes; None: ISO 8601), in ``timezone`` when the value has no offset; returned in UTC.

    ``fmt`` may be a list of formats, tried in order: a shop system whose
    exports write raw database times in one place and times formatted for
    the employee's language in another (PrestaShop: ``2026-12-07 14:03:22``
    and ``07/12/2026 14:03:22``). ``blank``: words that stand for no time
    (MySQL's zero date ``0000-00-00 00:00:00``); such a cell is no value.
    ``ahead``: the time may lie in the future (when a sale ends), not only
    before 1900 is refused. ``end_of_day``: the cell names the last day of
    something (a sale that runs "to 30 November", inclusive), and the value is
    the moment that day is over: 00:00 of the next day in ``timezone`` (or in
    the cell's offset), whatever the cell's time of day. Where the clocks
    change at midnight, that is the moment the next day begins.

    A value without an offset and a mapping without ``timezone`` is an error:
    a guessed zone shifts every comparison by hours. With ``suggest`` (the
    column's format is the mapping's, which ``relmail import --time-format``
    replaces), a cell written the way a spreadsheet re-saves a time
    (``14-03-2026 10:12``) names the option that reads it.
    """
    zone = _zone(timezone) if timezone else None
    if not isinstance(end_of_day, bool):
        raise ValueError("end_of_day must be true or false")
    formats = _formats(fmt)
    blanks = frozenset(_words(blank))
    shapes = [(f, _ISO_SHAPES.get(f) if f else None) for f in formats]
    expected = " or ".join(f"in the format {f!r} (e.g. {_EXAMPLE_TIME.strftime(f)})" if f else "an ISO 8601 date-time"
                           for f in formats)

    def read(text: str) -> datetime:
        error: ValueError | None = None
        for form, shape in shapes:
            try:
                if form is None or (shape is not None and shape.fullmatch(text)):
                    return datetime.fromisoformat(text)
                return datetime.strptime(text, form)
            except ValueError as exc:
                error = error or exc
        assert error is not None
        raise error

    def parse(value: str) -> datetime | None:
        text = value.strip()
        if text in blanks:
            return None
        try:
            parsed = read(text)
        except ValueError as exc:
            hint = _resaved_hint(text) if suggest else ""
            raise FieldError(_time_problem(text, expected, exc) + hint) from None
        if end_of_day:
            # Midnight of the next day on the wall clock, then localized: a day across a change of the clocks is
            # 23 or 25 hours long, not 24.
            parsed = datetime.combine(parsed.date() + timedelta(days=1), datetime.min.time(), parsed.tzinfo)
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            if zone is None:
                raise FieldError(f"{_short(text)} has no time zone: give the column a 'timezone' in the mapping")
            # A midnight the clocks skip (they go forward at 00:00): read in the offset before the change, it is
            # the moment they jump, the first moment of the next day.
            parsed = parsed.replace(tzinfo=zone) if end_of_day else _local(parsed, zone, text)
        if ahead:
            if parsed < EARLIEST:
                raise FieldError(f"implausible time: {_short(text)} lies before {EARLIEST.year} (a placeholder for 'unknown'?)")
        elif not wholly_past(parsed):  # a placeholder (0001-01-01) or a typo (9999-12-31), as any import refuses
            try:
                why = implausible(parsed)
            except OverflowError:
                why = f"{_short(text)} lies in the future"
            if why:
                raise FieldError(f"implausible time: {why}")
        # In UTC, as the store keeps it: converted once per distinct cell, not once per row.
        return parsed.astimezone(UTC)

    return remembered(parse, _TIME_CACHE)


def _formats(fmt: Any) -> list[str | None]:
    """The formats a ``time`` column is read with: one, or a list tried in order."""
    if fmt is None or isinstance(fmt, str):
        return [fmt]
    if not isinstance(fmt, list) or not fmt or not all(isinstance(f, str) and f for f in fmt):
        raise ValueError("format must be strftime codes (\"%Y-%m-%d %H:%M:%S\") or a list of them, tried in order")
    return list(fmt)


def _words(blank: Any) -> list[str]:
    """The words a mapping's ``blank`` lists (that stand for an empty cell)."""
    if isinstance(blank, str) or not all(isinstance(w, str) and w.strip() for w in blank):
        raise ValueError("blank must be a list of the words that stand for an empty cell, e.g. [\"----\"]")
    return [w.strip() for w in blank]


#: The time a format is shown with in an error, so the message says what a cell should look like.
_EXAMPLE_TIME = datetime(2026, 3, 14, 10, 12, 31, tzinfo=UTC)


def _time_problem(text: str, expected: str, exc: ValueError) -> str:
    """Why a cell is no time: not in the format at all, or in it but no date (31.02.), or with more than it reads."""
    why = str(exc)
    if why.startswith("unconverted data remains: "):
        return f"{_short(text)} has more than the format reads ({why.removeprefix('unconverted data remains: ')!r} left over); expected {expected}"
    if why.startswith("time data ") or "Invalid isoformat" in why:
        return f"{_short(text)} is not {expected}"
    # The shape fits, the calendar does not: 31.02.2026, 24:00, month 13.
    return f"{_short(text)} is no real date or time ({why}); expected {expected}"


#: A time as a spreadsheet writes it in a language whose dates put the day first (Excel in Dutch: 14-3-2026 10:12;
#: French: 14/03/2026 10:12; German: 14.03.2026 10:12) after it read an export's ISO times as dates.
_RESAVED = re.compile(r"(\d{1,2})([-./])(\d{1,2})\2\d{4}(?: \d{1,2}:\d\d(:\d\d)?)?")


def _resaved_hint(text: str) -> str:
    """The ``--time-format`` that reads ``text``, when it looks like a spreadsheet's re-save of a time; else ''."""
    m = _RESAVED.fullmatch(text)
    if m is None:
        return ""
    first, sep, second = int(m.group(1)), m.group(2), int(m.group(3))
    if first > 31 or second > 31 or (first > 12 and second > 12):
        return ""
    # Day first unless the cell shows otherwise: the spreadsheets that re-save with ';' and '12,50' write dates so.
    date = f"%m{sep}%d{sep}%Y" if second > 12 else f"%d{sep}%m{sep}%Y"
    clock = "" if " " not in text else " %H:%M:%S" if m.group(4) else " %H:%M"
    unsure = "" if first > 12 or second > 12 else " (day first: check a date after the 12th of a month)"
    return f"; the file was re-saved by a spreadsheet? relmail import --time-format '{date}{clock}' reads it{unsure}"


def _local(naive: datetime, zone: zoneinfo.ZoneInfo, text: str) -> datetime:
    """``naive`` as a wall-clock time in ``zone``: one that never happened is an error, one that happened twice the first.

    When the clocks go forward (02:00 becomes 03:00) the hour between does not
    exist: a time in it is a typo or a system's arithmetic, and any reading of
    it would be a guess. When they go back, an hour happens twice; the first
    (daylight saving time, ``fold=0``) is what shop systems that write local
    times mean, and it is documented so.
    """
    local = naive.replace(tzinfo=zone)
    if local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:
        raise FieldError(f"{_short(text)} never happened in {zone.key}: the clocks skipped that hour (daylight saving time "
                         "began); correct the value, or give the column an offset")
    return local


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r} (expected an IANA name like Europe/Amsterdam or UTC)") from None


def make_yes_no(true_words: tuple[str, ...] = (), false_words: tuple[str, ...] = ()) -> Parser:
    """True/false from yes/no, true/false, 1/0 (any case), or the mapping's own words."""
    if not true_words and not false_words:
        return boolean
    yes = {w.strip().lower() for w in true_words or TRUE_WORDS}
    no = {w.strip().lower() for w in false_words or FALSE_WORDS}
    shown = ", ".join(sorted(yes)) + " / " + ", ".join(sorted(no))

    def parse(value: str) -> bool:
        word = value.strip().lower()
        if word in yes:
            return True
        if word in no:
            return False
        raise FieldError(f"{_short(value)} is neither yes nor no (expected {shown})")

    return parse


#: Currency symbols written next to amounts, and the ISO codes each may stand for.
SYMBOLS = {"€": ("EUR",), "£": ("GBP",), "$": ("USD", "CAD", "AUD", "NZD", "SGD", "HKD", "MXN"), "¥": ("JPY", "CNY"), "₹": ("INR",),
           "₪": ("ILS",)}
_MONEY = re.compile(r"^(?P<sign>-)?\s*(?P<pre>[^\d\s.,+-]*)\s*(?P<sign2>-)?(?P<num>\d[\d.,'\s]*)\s*(?P<post>[^\d\s.,+-]*)$")


#: One mark with three digits after it, after one to three digits that may be a group: 1.249 and 1,249 read either way.
_EITHER_WAY = re.compile(r"-?[1-9]\d{0,2}[.,]\d{3}")


class MarkWatch:
    """What the cells of a money column whose decimal mark nobody named show of it.

    Such a column is read with ``.``. A cell like ``1.249`` or ``1,249``
    (one mark, three digits after it) reads as well with either mark, and
    the two readings differ a thousandfold; any other cell with a mark that
    parses (``12.50``, ``0.125``, ``1,249.00``, ``1,249,000``) shows the
    ``.`` is the decimal mark and settles the column. A column left with
    an ambiguous cell and nothing that settles it is the reader's to refuse
    (:meth:`relmail.importers.mapped.MappedReader.ambiguities`).
    """

    __slots__ = ("settled", "ambiguous", "fresh", "line")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.settled = False
        #: The first ambiguous cell, and its line once the reader has put one to it.
        self.ambiguous: str | None = None
        self.line: int | None = None
        #: Whether ``ambiguous`` was just seen, for the reader to note the line it is on.
        self.fresh = False

    def saw(self, digits: str, value: str) -> None:
        if self.settled:
            return
        if _EITHER_WAY.fullmatch(digits):
            if self.ambiguous is None:
                self.ambiguous, self.fresh = value, True
        elif "." in digits or "," in digits:
            self.settled = True


def make_money(currency: str | None, decimal: str | None = None) -> Parser:
    """An amount like ``12.50``, ``€ 1.234,56`` or ``12.50 EUR`` as a number.

    ``decimal`` is the decimal mark (``.`` or ``,``); the other mark, spaces
    and ``'`` group thousands. A currency written in the value must be
    ``currency`` when the mapping names one: amounts in two currencies do
    not add up. ``None`` reads with ``.`` and keeps a :class:`MarkWatch` as
    the parser's ``watch``, for the reader to refuse a column of ``1.249``
    that nothing shows to be 1.249 rather than 1249.
    """
    watch = MarkWatch() if decimal is None else None
    decimal = decimal or "."
    if decimal not in (".", ","):
        raise ValueError("decimal must be '.' or ','")
    group = "," if decimal == "." else "."
    plain = re.compile(r"-?\d+(?:\.\d+)?" if decimal == "." else r"-?\d+(?:,\d+)?").fullmatch
    example = f"12{decimal}50"
    # A file whose amounts use the other mark (an export re-saved by a spreadsheet in another language).
    other = f"; if the file writes 12{group}50, its decimal mark is {group!r} (relmail import --decimal {group})"

    def parse(value: str) -> float:
        if plain(value):  # 12.50: most cells of most exports
            if watch is not None:
                watch.saw(value, value)
            return float(value.replace(",", "."))
        text = value.strip().replace("\u00a0", " ")
        if len(text) > 2 and text[0] == "(" and text[-1] == ")":
            # An accounting format (Excel's, in every language) writes a negative amount in parentheses: (3,00).
            return -abs(parse(text[1:-1]))
        match = _MONEY.match(text)
        if match is None:
            raise FieldError(f"{_short(value)} is not an amount of money (e.g. {example} or € {example})")
        marks = [m for m in (match["pre"], match["post"]) if m]
        if len(marks) > 1:
            raise FieldError(f"{_short(value)} names two currencies")
        if marks:
            codes = SYMBOLS.get(marks[0]) or (marks[0].upper(),)
            if not re.fullmatch(r"[A-Z]{3}", codes[0]):
                raise FieldError(f"{_short(value)}: unknown currency {marks[0]!r}")
            if currency and currency not in codes:
                raise FieldError(f"{_short(value)} is in {'/'.join(codes)}; the mapping expects {currency}")
        digits = re.sub(r"[\s']", "", match["num"])
        whole, _, cents = digits.rpartition(decimal) if decimal in digits else (digits, "", "")
        if group in cents or decimal in whole:
            raise FieldError(f"{_short(value)}: unexpected {decimal!r} (the mapping's decimal mark is {decimal!r}){other}")
        parts = whole.split(group)
        if len(parts) > 1 and (not parts[0] or len(parts[0]) > 3 or any(len(p) != 3 for p in parts[1:])):
            raise FieldError(f"{_short(value)}: {group!r} is not between groups of three digits (decimal mark {decimal!r}){other}")
        amount = float("".join(parts) + ("." + cents if cents else ""))
        if watch is not None:
            watch.saw(digits, value)
        return -amount if match["sign"] or match["sign2"] else amount

    cached = remembered(parse, _TIME_CACHE)  # an export repeats its prices
    cached.watch = watch  # type: ignore[attr-defined]
    return cached


def make_list(separator: str = ",", escape: str | None = None) -> Parser:
    """``"a, b, c"`` -> ``["a", "b", "c"]``: trimmed (quotes too: Mailchimp writes ``"VIP","Blog"``), empty items and repeats left out.

    With ``escape`` (``"\\"``), a separator written after it is part of its
    item: WooCommerce writes a comma inside a name as ``\\,``
    (``Boeken\\, strips, Poëzie`` is two items).
    """

    def parse(value: str) -> list[str]:
        if escape is None and '"' in value and len(separator) == 1:
            # Quoted items (Mailchimp's "Kaffee, Bio","VIP"): a separator inside quotes is part of the item.
            parts = next(csv.reader([value.strip()], delimiter=separator, skipinitialspace=True), [])
        else:
            parts = split_items(value, separator, escape)
        items = (p.strip().strip('"').strip() for p in parts)
        return list(dict.fromkeys(p for p in items if p))

    return parse


def split_items(value: str, separator: str, escape: str | None = None) -> list[str]:
    """``value`` split at each ``separator``; with ``escape``, not at one written after it (that one stays in its item)."""
    escaped = f"{escape}{separator}" if escape else None
    if escaped is None or escaped not in value:
        return value.split(separator)
    return [part.replace(escaped, separator) for part in re.split(f"(?<!{re.escape(escape)}){re.escape(separator)}", value)]


def _first_item(value: str, split: str | None, escape: str | None = None) -> str:
    if not split:
        return value
    return next((p.strip() for p in split_items(value, split, escape) if p.strip()), "")


def make_text(split: str | None = None, escape: str | None = None, html: bool = False, blank: Any = ()) -> Parser:
    """The text, trimmed; with ``split`` (``","``) the first item of a list (WooCommerce's ``Images``).

    ``html``: the cell is HTML-escaped, as an admin grid's export writes it (Magento's
    ``O&#039;Brien``), and is read unescaped. ``blank``: words that stand for an empty cell
    (Magento writes ``----`` for a guest's name); such a cell is no value.
    """
    empty = frozenset(_words(blank))
    if not isinstance(html, bool):
        raise ValueError("html must be true or false")
    if not (split or html or empty):
        return text

    def parse(value: str) -> str | None:
        value = _first_item(value, split, escape) if split else value.strip()
        if html:
            value = unescape(value).strip()
        return None if value in empty else value

    return parse


def _word(text: str) -> str:
    return re.sub(r"[\s_-]+", "_", text.strip().lower())


def make_lookup(values: Any) -> Parser:
    """A cell that is one of the mapping's words, as the value the mapping gives it (``null``: no value).

    Case, surrounding spaces, and spaces, ``_`` or ``-`` between words do not
    matter (``HARD_BOUNCE`` is ``Hard bounce``); any other word is an error
    naming the known ones (a status the export added later is never guessed).
    """
    if not isinstance(values, dict) or not values:
        raise ValueError("lookup needs 'values': a mapping of the column's words to values (null: no value)")
    table = {_word(str(k)): v for k, v in values.items()}
    shown = ", ".join(str(k) for k in values)

    def parse(value: str) -> Any:
        word = _word(value)
        if word in table:
            return table[word]
        raise FieldError(f"{_short(value)} is not one of the values the mapping knows ({shown})")

    return parse


def make_slug(last: str | None = None, split: str | None = None, escape: str | None = None) -> Parser:
    """A name as an id: ``"Literaire roman"`` -> ``literaire-roman``.

    With ``last`` (``">"``), only the last part of a path such as Shopify's
    product category ``Media > Books > Print Books`` -> ``print-books``.
    With ``split`` (``","``), only the first item of a list, before ``last``
    applies: WooCommerce's ``Boeken > Romans, Cadeaus`` -> ``romans`` (``escape`` as for lists,
    and for ``last``: Magento writes a ``/`` inside a category's name as ``\\/``).
    """

    def parse(value: str) -> str:
        text = _first_item(value, split, escape)
        text = split_items(text, last, escape)[-1] if last else text
        slug = _slugify(text)
        if not slug:
            raise FieldError(f"{_short(value)} has no letters or digits to make an id from")
        return slug

    return parse


#: Letters that Unicode does not decompose into a base letter and a mark: spelled out, not dropped.
_SPELLED = str.maketrans({"ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O",
                          "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "þ": "th", "Þ": "TH", "ı": "i"})


@lru_cache(maxsize=4096)
def _slugify(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text.translate(_SPELLED)).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", plain.lower()).strip("-")


def make_integer() -> Parser:
    """A whole number; plain digits are read directly (a quantity column is mostly ``1``)."""
    checked = integer()

    def parse(value: str) -> int:
        if value.isascii() and value.isdigit():
            return int(value)
        return checked(value)

    return parse


def present(value: str) -> bool:
    """True: the cell has something in it (``Cancelled at`` holds a time only for cancelled orders)."""
    return True


def empty(value: str) -> bool:
    """False: the cell has something in it. An empty cell is True (the reader gives it this value without parsing:
    WooCommerce's ``Date registered`` is empty for a guest checkout)."""
    return False


def text(value: str) -> str:
    return value.strip()


def lower(value: str) -> str:
    return value.strip().lower()


def make_pseudonym(prefix: str = "", html: bool = False) -> Parser:
    """A customer id made from an address that does not spell it: ``prefix`` and 16 hex digits of its SHA-256.

    For an export without customer ids (WooCommerce's customers report, a
    Klaviyo list): ids are what logs, plans and CI output name, and an
    address is customer data. The address is taken in lower case, as one
    address in any case is one customer (``match: email``); with ``html``
    it is read unescaped first, as :func:`make_text` reads it.
    """
    prefix = str(prefix)

    def parse(value: str) -> str:
        address = unescape(value) if html else value
        return prefix + hashlib.sha256(address.strip().lower().encode("utf-8")).hexdigest()[:16]

    return parse


def scalar(value: str) -> Any:
    """Numbers written as plain decimals become numbers, the rest stays text (for ``attributes``)."""
    return csv_scalar(value.strip())


def _short(value: Any, limit: int = 40) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


#: Parser name -> (factory of the mapping's options, the options it takes).
PARSERS: dict[str, tuple[Callable[..., Parser], tuple[str, ...]]] = {
    "text": (make_text, ("split", "escape", "html", "blank")),
    "lower": (lambda: lower, ()),
    "pseudonym": (make_pseudonym, ("prefix", "html")),
    "integer": (make_integer, ()),
    "number": (lambda: number(), ()),
    "money": (lambda currency=None, decimal=None: make_money(currency, decimal), ("currency", "decimal")),
    "yes_no": (lambda true=(), false=(): make_yes_no(tuple(true), tuple(false)), ("true", "false")),
    "time": (lambda format=None, timezone=None, blank=(), end_of_day=False: make_time(format, timezone, blank=blank, end_of_day=end_of_day),
             ("format", "timezone", "blank", "end_of_day")),
    "list": (lambda separator=",", escape=None: make_list(separator, escape), ("separator", "escape")),
    "slug": (lambda last=None, split=None, escape=None: make_slug(last, split, escape), ("last", "split", "escape")),
    "lookup": (lambda values=None: make_lookup(values), ("values",)),
    "present": (lambda: present, ()),
    "empty": (lambda: empty, ()),
    "scalar": (lambda: scalar, ()),
}
