"""Reading provider records from webhook bodies and export files, one bad record at a time.

Providers export events as a JSON array, JSON Lines, a JSON page that wraps
an array (Mailgun's ``{"items": [...]}``, Postmark's ``{"Bounces": [...]}``)
or CSV, any of them optionally gzip-compressed (Amazon Data Firehose writes
``.gz`` objects). :func:`read_records` reads any of these and keeps each
record's line number and index. A file that cannot be read at all (missing,
not UTF-8, corrupt gzip, broken JSON) is one :class:`ValidationError`; a
record that can be read but not understood is one :class:`InvalidEvent`,
and :func:`parse_records` goes on with the next (see :mod:`.provider`).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Problem, ValidationError
from ..importers.readers import GZIP_ERRORS, csv_problem, unreadable

_DECODER = json.JSONDecoder()

class FieldError(ValueError):
    """One record's field is missing or invalid."""

    def __init__(self, field: str | None, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


@dataclass(frozen=True)
class Record:
    """One provider record and where it came from: its line (files) and index (0-based)."""

    index: int
    value: Any
    line: int | None = None


@dataclass(frozen=True)
class InvalidEvent:
    """A provider event relmail could not use: where it was, why, and the event as the provider sent it."""

    index: int
    field: str | None
    reason: str
    raw: Any = field(repr=False)
    line: int | None = None

    @property
    def where(self) -> str:
        return f"line {self.line} (event #{self.index})" if self.line is not None else f"event #{self.index}"

    def as_dict(self) -> dict:
        out = {"index": self.index, "field": self.field, "reason": self.reason}
        if self.line is not None:
            out["line"] = self.line
        return out


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
    """An object field (``{}`` when optional and absent), or :class:`FieldError`."""
    value = record.get(key)
    if value is None:
        if required:
            raise FieldError(key, "is missing")
        return {}
    if not isinstance(value, dict):
        raise FieldError(key, f"must be an object, got {type(value).__name__}")
    return value


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


def _problem(name: str, message: str, line: int | None = None) -> ValidationError:
    return ValidationError(f"{name}: {message}; nothing was imported", [Problem(name, line, None, message)])


def read_text(path: Path) -> str:
    """The text of ``path`` (gzip-compressed or not), or one :class:`ValidationError` naming the file."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise _problem(name, "no such file") from None
    except IsADirectoryError:
        raise _problem(name, "is a directory, not a file") from None
    except PermissionError:
        raise _problem(name, "cannot be read (permission denied)") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except GZIP_ERRORS as exc:
            raise unreadable(name, exc) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _problem(name, f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_records(path: Path, wrappers: Iterable[str] = ()) -> list[Record]:
    """The records of a JSON, JSON Lines or CSV export (``.gz`` too), with lines and indexes.

    ``wrappers`` names the keys of a JSON page whose array holds the records
    (``items`` for Mailgun's Events API). CSV (by the ``.csv`` or
    ``.csv.gz`` suffix) gives one dict per row, keyed by the header.
    """
    name = str(path)
    source = read_text(path)
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    if suffixes and suffixes[-1] == ".csv":
        return _read_csv(name, source)
    try:
        pairs = _read_json(source, tuple(wrappers))
    except json.JSONDecodeError as exc:
        raise _problem(name, f"invalid JSON: {exc.msg} (column {exc.colno})", exc.lineno) from None
    return [Record(i, value, line) for i, (line, value) in enumerate(pairs)]


def _read_csv(name: str, source: str) -> list[Record]:
    reader = csv.DictReader(io.StringIO(source, newline=""), strict=True)
    header = reader.fieldnames or []
    out: list[Record] = []
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return out
        except csv.Error as exc:
            field, message = csv_problem(exc, header, _physical_line(source, line))
            raise ValidationError(f"{name}: {message}; nothing was imported", [Problem(name, line, field, message)]) from None
        out.append(Record(len(out), {k: v for k, v in row.items() if k is not None}, line))


def _physical_line(source: str, line: int) -> str:
    lines = source.splitlines()
    return lines[line - 1] if 0 < line <= len(lines) else ""


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


def parse_json_body(body: bytes, what: str, expect: type = dict, shape: str = "a JSON object",
                    field: str | None = None) -> Any:
    """A webhook body as JSON of type ``expect``, or a :class:`ValidationError` (answered with 400).

    ``field``: the form field the JSON came in (Mandrill's ``mandrill_events``), named instead of the body.
    """
    part = f"field {field!r}" if field else "body"
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"{what}: {part} is not JSON",
                              [Problem(what, None, None, f"{part} is not JSON: {exc}")]) from None
    except RecursionError:  # '[' * 100000: anyone can post it, before any signature is checked
        raise invalid(what, f"{part} is JSON nested too deeply") from None
    if not isinstance(value, expect):
        raise invalid(what, f"{part} must be {shape}")
    return value


def invalid(what: str, message: str) -> ValidationError:
    """A :class:`ValidationError` for a malformed webhook body (answered with 400)."""
    return ValidationError(f"{what}: {message}", [Problem(what, None, None, message)])
