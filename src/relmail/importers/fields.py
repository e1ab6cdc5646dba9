"""Field parsers: one function per kind of value an import file holds.

Each parser takes the raw value (a ``str`` from CSV, or a native JSON value
from JSON Lines) and returns the value to store, or raises
:class:`FieldError` with a message that tells the user what was expected.
``None`` never reaches a parser: missing and empty values are handled by the
schema (required or default).
"""

from __future__ import annotations

import json
import math
import re
import zoneinfo
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any

from ..timestamps import EARLIEST, implausible, wholly_past

Parser = Callable[[Any], Any]


#: How :func:`email`'s errors begin; the reason follows.
INVALID_ADDRESS = "invalid e-mail address"


class FieldError(ValueError):
    """A value is not what the field expects; the message is shown to the user."""


def text(max_length: int, *, allow_spaces: bool = True) -> Parser:
    """A string up to ``max_length`` characters (column width), trimmed."""

    def parse(value: Any) -> str:
        if not isinstance(value, str):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise FieldError(f"expected text, got {_kind(value)}")
            value = str(value)
        value = value.strip()
        if "\x00" in value:
            # PostgreSQL text cannot hold NUL; refusing it here names the line.
            raise FieldError("contains a NUL character")
        if len(value) > max_length:
            raise FieldError(f"is {len(value)} characters long, at most {max_length} allowed")
        if not allow_spaces and _space(value):
            raise FieldError(f"{value!r} contains whitespace")
        return value

    return parse


_space = re.compile(r"\s").search


def identifier(max_length: int) -> Parser:
    """An id: non-empty text without whitespace (ids are joined on, so stray spaces would split a key)."""
    return text(max_length, allow_spaces=False)


def aware_datetime(value: Any) -> datetime:
    """An ISO 8601 date and time with an offset or ``Z``; a naive or implausible time is refused.

    A time without a zone is ambiguous by up to a day, and every time relmail
    compares (frequency caps, "as of" features) would silently shift. A time
    far in the future or before 1900 is a placeholder or a typo, never a
    real signup or event (:func:`relmail.timestamps.implausible`).
    """
    parsed = _aware(value)
    if wholly_past(parsed):
        return parsed
    try:
        why = implausible(parsed)
    except OverflowError:  # 9999-12-31T23:59-01:00 lies past datetime.max in UTC
        why = f"{_short(value)} lies in the future"
    if why:
        raise FieldError(f"implausible time: {why}")
    return parsed


def scheduled_datetime(value: Any) -> datetime:
    """:func:`aware_datetime` of a time that may lie ahead (a sale that starts next week); before 1900 is refused."""
    parsed = _aware(value)
    if parsed < EARLIEST:
        raise FieldError(f"implausible time: {parsed.isoformat()} lies before {EARLIEST.year} (a placeholder for 'unknown'?)")
    return parsed


def _aware(value: Any) -> datetime:
    """``value`` as a timezone-aware datetime, or the reason it is none."""
    if isinstance(value, datetime) and value.utcoffset() is not None:
        parsed = value  # parsed already, by a column mapping's time format
    elif not isinstance(value, str):
        raise FieldError(f"expected an ISO 8601 date-time string, got {_kind(value)}")
    else:
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise FieldError(f"{_short(value)} is not an ISO 8601 date-time (e.g. 2026-11-23T09:30:00+01:00)") from None
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            raise FieldError(f"{_short(value)} has no time zone: add an offset or Z (e.g. {parsed.isoformat()}Z)")
    return parsed


#: The words ``boolean`` reads (a column mapping's yes_no may name its own).
TRUE_WORDS = frozenset({"true", "1", "yes", "y", "t"})
FALSE_WORDS = frozenset({"false", "0", "no", "n", "f"})


def boolean(value: Any) -> bool:
    """true/false, yes/no, 1/0 (any case); JSON booleans as they are."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in TRUE_WORDS:
            return True
        if low in FALSE_WORDS:
            return False
    raise FieldError(f"{_short(value)} is not a boolean (true/false, yes/no, 1/0)")


def integer(minimum: int | None = None) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise FieldError(f"expected a whole number, got {_kind(value)}")
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer() or isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            number = int(value)
        else:
            raise FieldError(f"{_short(value)} is not a whole number")
        if minimum is not None and number < minimum:
            raise FieldError(f"{number} is below the minimum {minimum}")
        return number

    return parse


def number(minimum: float | None = None) -> Parser:
    """A finite decimal number (NaN and infinities would poison sums and scores)."""

    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise FieldError(f"expected a number, got {_kind(value)}")
        if isinstance(value, (int, float)):
            result = float(value)
        elif isinstance(value, str):
            try:
                result = float(value)
            except ValueError:
                raise FieldError(f"{_short(value)} is not a number") from None
        else:
            raise FieldError(f"expected a number, got {_kind(value)}")
        if not math.isfinite(result):
            raise FieldError(f"{_short(value)} is not a finite number")
        if minimum is not None and result < minimum:
            raise FieldError(f"{_short(value)} is below the minimum {minimum:g}")
        return result

    return parse


def one_of(choices: tuple[str, ...], what: str) -> Parser:
    allowed = frozenset(choices)

    def parse(value: Any) -> str:
        if isinstance(value, str):
            value = value.strip()
            if value in allowed:
                return value
        raise FieldError(f"unknown {what} {_short(value)} (known: {', '.join(choices)})")

    return parse


def email(value: Any) -> str:
    """A syntactically valid address, normalized by ``email-validator`` (no DNS lookups).

    The error says why (:func:`~relmail.store.addresses.address_problem`), never the address.
    """
    from email_validator import EmailNotValidError, validate_email

    from ..store.addresses import address_problem

    if not isinstance(value, str):
        raise FieldError(f"expected an e-mail address, got {_kind(value)}")
    try:
        return validate_email(value.strip(), check_deliverability=False, allow_smtputf8=False).normalized
    except EmailNotValidError:
        raise FieldError(f"{INVALID_ADDRESS}: {address_problem(value)}") from None


def language_of(locale: str | None) -> str:
    """``nl_NL`` / ``nl-NL`` / ``NL`` / ``nl`` → ``nl``; ``''`` for no locale."""
    return (locale or "").replace("-", "_").split("_", 1)[0].lower()


def locale(value: Any) -> str:
    """A locale Babel knows (``nl_NL``, ``en-GB``), returned as ``nl_NL``."""
    if not isinstance(value, str):
        raise FieldError(f"expected a locale like nl_NL, got {_kind(value)}")
    return _locale(value.strip())


@lru_cache(maxsize=1024)
def _locale(value: str) -> str:
    from babel import Locale, UnknownLocaleError

    try:
        return str(Locale.parse(value, sep="-" if "-" in value else "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        raise FieldError(f"unknown locale {_short(value)} (expected e.g. nl_NL or en_GB)") from None


def time_zone(value: Any) -> str:
    """An IANA time zone name (``Europe/Amsterdam``)."""
    if not isinstance(value, str):
        raise FieldError(f"expected a time zone name, got {_kind(value)}")
    return _time_zone(value.strip())


@lru_cache(maxsize=1024)
def _time_zone(value: str) -> str:
    # Mailchimp exports TIMEZONE in lower case (america/new_york): an IANA name in any case is
    # that zone, stored as the time zone database spells it (on every file system alike).
    canonical = _zone_names().get(value.lower())
    if canonical is not None:
        return canonical
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise FieldError(f"unknown time zone {_short(value)} (expected an IANA name like Europe/Amsterdam)") from None
    return value


@lru_cache(maxsize=1)
def _zone_names() -> dict[str, str]:
    """Every IANA zone name by its lower-case form (no two differ in case only)."""
    return {name.lower(): name for name in zoneinfo.available_timezones()}


def string_list(max_item_length: int) -> Parser:
    """A list of short strings: a JSON array, or ``a|b|c`` in CSV."""
    item = identifier(max_item_length)

    def parse(value: Any) -> list[str]:
        if isinstance(value, str):
            parts = [p for p in (s.strip() for s in value.split("|")) if p]
        elif isinstance(value, list):
            parts = value
        else:
            raise FieldError(f"expected a list (a|b|c in CSV), got {_kind(value)}")
        out: list[str] = []
        for part in parts:
            name = item(part)
            if name and name not in out:
                out.append(name)
        return out

    return parse


def json_object(value: Any) -> dict:
    """A JSON object (in CSV: the object's JSON text)."""
    if isinstance(value, str):
        try:
            value = json.loads(value, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise FieldError(f"is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise FieldError(f"expected a JSON object, got {_kind(value)}")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


_INT = re.compile(r"-?(?:0|[1-9]\d*)")
_FLOAT = re.compile(r"-?(?:0|[1-9]\d*)\.\d+")


def csv_scalar(value: str) -> Any:
    """An extra CSV column's value for ``attributes``: numbers become numbers.

    Only plain decimals convert, so codes like ``01234`` or ``1e5`` stay
    text exactly as written.
    """
    if _INT.fullmatch(value):
        return int(value)
    if _FLOAT.fullmatch(value):
        return float(value)
    return value


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "text", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def _short(value: Any, limit: int = 40) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"
