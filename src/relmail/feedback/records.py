"""Reading provider records from webhook bodies and export files.

Providers export events as a JSON array, JSON Lines, a JSON page that wraps
an array (Mailgun's ``{"items": [...]}``, Postmark's ``{"Bounces": [...]}``)
or CSV. :func:`read_records` reads any of these and keeps each record's
line number, so a bad value is reported as ``file:line: field 'x': ...``;
:func:`parse_all` collects every problem before failing, so one run of the
import shows all that is wrong with a file.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import Problem, ValidationError
from .events import FeedbackEvent, from_iso, from_unix

_DECODER = json.JSONDecoder()


class FieldError(ValueError):
    """One record's field is missing or invalid."""

    def __init__(self, field: str | None, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


def text(record: Mapping[str, Any], key: str, required: bool = True) -> str | None:
    """A non-empty string field, or :class:`FieldError`."""
    value = record.get(key)
    if value is None or value == "":
        if required:
            raise FieldError(key, "is missing")
        return None
    if isinstance(value, (dict, list)):
        raise FieldError(key, f"must be text, got {type(value).__name__}")
    return str(value)


def obj(record: Mapping[str, Any], key: str, required: bool = True) -> dict:
    value = record.get(key)
    if value is None:
        if required:
            raise FieldError(key, "is missing")
        return {}
    if not isinstance(value, dict):
        raise FieldError(key, f"must be an object, got {type(value).__name__}")
    return value


def unix_time(record: Mapping[str, Any], key: str) -> datetime:
    value = record.get(key)
    if value is None or value == "":
        raise FieldError(key, "is missing")
    try:
        return from_unix(value)
    except (TypeError, ValueError, OverflowError, OSError):
        raise FieldError(key, f"expected Unix seconds, got {value!r}") from None


def iso_time(record: Mapping[str, Any], key: str) -> datetime:
    value = record.get(key)
    if value is None or value == "":
        raise FieldError(key, "is missing")
    try:
        return from_iso(value)
    except ValueError as exc:
        raise FieldError(key, f"expected an ISO 8601 time with offset, got {value!r} ({exc})") from None


def _line_at(source: str, index: int) -> int:
    return source.count("\n", 0, index) + 1


def _array_items(source: str, start: int) -> Iterable[tuple[int, Any]]:
    """Elements of the JSON array opening at ``source[start] == '['``, with their lines."""
    pos = start + 1
    ws = re.compile(r"[\s,]*")
    while True:
        pos = ws.match(source, pos).end()
        if pos >= len(source):
            raise json.JSONDecodeError("unterminated array", source, pos)
        if source[pos] == "]":
            return
        value, end = _DECODER.raw_decode(source, pos)
        yield _line_at(source, pos), value
        pos = end


def read_records(path: Path, wrappers: Iterable[str] = ()) -> list[tuple[int, Any]]:
    """``[(line, record), ...]`` from a JSON, JSON Lines or CSV export.

    ``wrappers`` names the keys of a JSON page whose array holds the records
    (``items`` for Mailgun's Events API). CSV (by the ``.csv`` suffix) gives
    one dict per row, keyed by the header.
    """
    name = str(path)
    try:
        source = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ValidationError(f"{name}: no such file", [Problem(name, None, None, "no such file")]) from None
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{name}: not UTF-8 text", [Problem(name, None, None, f"not UTF-8 text ({exc.reason})")]) from None
    if Path(path).suffix.lower() == ".csv":
        reader = csv.DictReader(source.splitlines())
        return [(reader.line_num, {k: v for k, v in row.items() if k is not None}) for row in reader]
    try:
        return _read_json(source, tuple(wrappers))
    except json.JSONDecodeError as exc:
        problem = Problem(name, exc.lineno, None, f"invalid JSON: {exc.msg} (column {exc.colno})")
        raise ValidationError(f"{name}: invalid JSON", [problem]) from None


def _read_json(source: str, wrappers: tuple[str, ...]) -> list[tuple[int, Any]]:
    start = len(source) - len(source.lstrip())
    if start == len(source):
        return []
    if source[start] == "[":
        return list(_array_items(source, start))
    try:
        whole = json.loads(source)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict):
        for key in wrappers:
            if isinstance(whole.get(key), list):
                match = re.compile(r'"' + re.escape(key) + r'"\s*:\s*\[').search(source)
                return [(line, {**value, "__wrapper__": key}) if isinstance(value, dict) else (line, value)
                        for line, value in _array_items(source, match.end() - 1)]
        return [(_line_at(source, start), whole)]
    # JSON Lines: one record per non-blank line.
    records = []
    for number, line in enumerate(source.splitlines(), start=1):
        if line.strip():
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                # Report the file's line, not the line inside the one-line document.
                err = json.JSONDecodeError(exc.msg, exc.doc, exc.pos)
                err.lineno = number
                raise err from None
    return records


def parse_all(
    file: str,
    records: Iterable[tuple[int, Any]],
    parse_record: Callable[[Mapping[str, Any]], list[FeedbackEvent]],
) -> list[FeedbackEvent]:
    """Every record parsed, or one :class:`ValidationError` listing every bad field."""
    events: list[FeedbackEvent] = []
    problems: list[Problem] = []
    for line, record in records:
        if not isinstance(record, dict):
            problems.append(Problem(file, line, None, f"expected a JSON object, got {type(record).__name__}"))
            continue
        try:
            events.extend(parse_record(record))
        except FieldError as exc:
            problems.append(Problem(file, line, exc.field, exc.message))
        except ValueError as exc:
            problems.append(Problem(file, line, None, str(exc)))
    if problems:
        raise ValidationError(f"{file}: {len(problems)} invalid record(s); nothing was imported", problems)
    return events


def parse_json_body(body: bytes, what: str) -> Any:
    """A webhook body as JSON, or a :class:`ValidationError` (answered with 400)."""
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"{what}: body is not JSON", [Problem(what, None, None, f"body is not JSON: {exc}")]) from None


def invalid(what: str, message: str) -> ValidationError:
    """A :class:`ValidationError` for a malformed webhook body (answered with 400)."""
    return ValidationError(f"{what}: {message}", [Problem(what, None, None, message)])
