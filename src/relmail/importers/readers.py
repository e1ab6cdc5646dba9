"""Streaming readers for CSV and JSON Lines that know where every record came from.

Files are read as bytes, line by line, and decoded per line: a bad byte is
reported with its line number instead of aborting the whole file with a
``UnicodeDecodeError`` somewhere in a buffer. Each :class:`Record` carries
its first physical line and its original bytes (for the rejects file).
Nothing is held beyond the current record, so files of any size stream.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import Problem, ValidationError
from .characters import C1_CONTROL_UTF8, repaired, repaired_json

FORMATS = ("csv", "jsonl")

#: The longest CSV field accepted: the limit of Python's csv module, which
#: refuses longer fields (``csv.field_size_limit()``).
CSV_FIELD_LIMIT = 128 * 1024

#: What a corrupt or truncated gzip stream raises while it is read.
GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)

_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


@dataclass(slots=True)
class Record:
    """One record: where it starts, its raw values, and a read error if it has one."""

    line: int
    values: dict[str, Any] | None
    raw: list[bytes]
    #: (field, message) when the record could not be read (bad bytes, bad JSON, wrong field count).
    error: tuple[str | None, str] | None = None

    def original(self) -> str:
        """The record's text as it was in the file (undecodable bytes shown as U+FFFD)."""
        return b"".join(self.raw).decode("utf-8", "replace").rstrip("\r\n")


@dataclass
class Source:
    """An opened input: its display name, byte stream, format and size (None for stdin)."""

    name: str
    stream: BinaryIO
    fmt: str
    size: int | None
    raw_file: BinaryIO
    #: False for stdin and caller-owned streams, which must stay open.
    owned: bool = True

    def position(self) -> int:
        """Bytes consumed from the underlying file (compressed bytes for .gz)."""
        try:
            return self.raw_file.tell()
        except (OSError, ValueError):
            return 0

    #: The caller's stream when we wrapped it, so closing leaves it open.
    wrapped: Any = None

    def close(self) -> None:
        if self.owned:
            self.stream.close()
            self.raw_file.close()
        elif self.wrapped is not None:
            self.raw_file.detach()  # type: ignore[attr-defined]


def open_source(source: str | os.PathLike | BinaryIO, fmt: str | None = None) -> Source:
    """Open a path, ``-`` (stdin) or a binary file object; detect gzip and the format.

    The format comes from ``fmt``, else the suffix (``.csv``, ``.jsonl``,
    ``.ndjson``, optionally ``.gz``), else the first byte (``{`` means JSON Lines).
    """
    if fmt is not None and fmt not in FORMATS:
        raise ValidationError(f"unknown format {fmt!r}", [Problem(str(source), None, None, f"format must be one of {', '.join(FORMATS)}")])
    if isinstance(source, (str, os.PathLike)) and str(source) == "-":
        name, raw, size, suffixes = "<stdin>", sys.stdin.buffer, None, []
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = str(source)
        try:
            raw = open(path, "rb")  # noqa: SIM115 (closed by the reader when it is closed)
        except FileNotFoundError:
            raise ValidationError(f"{name}: no such file", [Problem(name, None, None, "no such file")]) from None
        except IsADirectoryError:
            raise ValidationError(f"{name}: is a directory", [Problem(name, None, None, "is a directory, not a file")]) from None
        except PermissionError:
            raise ValidationError(f"{name}: permission denied", [Problem(name, None, None, "cannot be read (permission denied)")]) from None
        size = path.stat().st_size
        suffixes = [s.lower() for s in path.suffixes]
    else:
        raw, size, suffixes = source, None, []
        name = getattr(source, "name", None) or "<stream>"
        name = name if isinstance(name, str) else "<stream>"
    # A file opened here is closed here on an error; stdin and a caller's stream stay open.
    owned = isinstance(source, (str, os.PathLike)) and str(source) != "-"
    wrapped = None if hasattr(raw, "peek") else raw
    buffered = raw if wrapped is None else io.BufferedReader(raw)  # type: ignore[arg-type]
    stream: BinaryIO = buffered

    def release() -> None:
        """On an error: close a file opened here; leave stdin and a caller's stream open (a wrapper
        collected later would close the stream under it, so it is detached)."""
        if owned:
            raw.close()
        elif wrapped is not None:
            buffered.detach()

    what = _not_text(buffered.peek(8)[:8])
    if what:
        release()
        # One line: the header problems a workbook's bytes would give say nothing useful.
        raise ValidationError(f"{name}: is {what}, not a CSV or JSON Lines file: save the sheet as 'CSV UTF-8' "
                              "(or unzip the export) and import that; nothing imported")
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        stream = gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[assignment]
        stream = io.BufferedReader(stream)  # type: ignore[arg-type]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if fmt is None and suffixes and suffixes[-1] in _SUFFIXES:
        fmt = _SUFFIXES[suffixes[-1]]
    if fmt is None:
        try:
            head = stream.peek(64).lstrip(b"\xef\xbb\xbf \t\r\n")  # type: ignore[attr-defined]
        except GZIP_ERRORS as exc:
            release()
            raise unreadable(name, exc) from None
        fmt = "jsonl" if head[:1] == b"{" else "csv"
    return Source(name=name, stream=stream, fmt=fmt, size=size, raw_file=buffered, owned=owned, wrapped=wrapped)


#: The first bytes of files people export instead of a CSV, and what they are.
_NOT_TEXT = (
    (b"PK\x03\x04", "a zip archive (an Excel .xlsx or OpenDocument .ods workbook, or a zipped export such as Mailchimp's)"),
    (bytes.fromhex("d0cf11e0a1b11ae1"), "an Excel 97-2003 workbook (.xls)"),
)


def _not_text(head: bytes) -> str | None:
    return next((what for magic, what in _NOT_TEXT if head.startswith(magic)), None)


def unreadable(name: str, exc: BaseException) -> ValidationError:
    """The one error for a compressed input that cannot be read to its end."""
    detail = str(exc) or exc.__class__.__name__
    # No Problem list: the one line says it all (there is no line or field to name).
    return ValidationError(f"{name}: is not a readable gzip file (corrupt or truncated: {detail}); nothing imported")


#: The separators a CSV export is written with: a comma, or a semicolon where the
#: comma is the decimal mark (Excel in German, Dutch, French ...), or a tab.
DELIMITERS = (",", ";", "\t")


def sniff_delimiter(head: bytes) -> str:
    """The separator of a CSV file, from its first line: the one of :data:`DELIMITERS` seen most often outside quotes.

    Counted on the header line only, whose cells are column names: data rows
    hold commas in decimals and free text, so they would mislead a guess.
    A header of one column (no separator at all) reads as comma-separated.
    """
    text = head.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace").lstrip("\r\n")
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif ch in "\r\n" and not quoted:
            break
        elif ch in counts and not quoted:
            counts[ch] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] > counts[","] else ","


def csv_problem(exc: csv.Error, header: list[str], text: str, delimiter: str = ",") -> tuple[str | None, str]:
    """(column, message) for a CSV record the csv module refused; a too-long field names its column."""
    if "field larger than field limit" not in str(exc):
        return None, f"malformed CSV (unbalanced quotes?): {exc}"
    index = _long_field(text, delimiter)
    column = header[index] if index is not None and index < len(header) else None
    return column, f"{'the value' if column else 'a field'} is longer than the limit of {CSV_FIELD_LIMIT:,} characters (128 KiB)"


def _long_field(text: str, delimiter: str = ",") -> int | None:
    """The position of the first field longer than :data:`CSV_FIELD_LIMIT` in a CSV line, if any.

    Counted by hand: the csv module itself refuses to read such a field.
    """
    index, length, quoted = 0, 0, False
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == '"':
                if text[i + 1 : i + 2] == '"':
                    length += 1
                    i += 1
                else:
                    quoted = False
            else:
                length += 1
        elif ch == '"':
            quoted = True
        elif ch == delimiter:
            if length > CSV_FIELD_LIMIT:
                return index
            index, length = index + 1, 0
        elif ch not in "\r\n":
            length += 1
        i += 1
    return index if length > CSV_FIELD_LIMIT else None


def not_utf8(byte: int, position: int) -> str:
    """Why a line is not UTF-8, and what it most likely is: Excel's plain "CSV" is Windows-1252 (ü is 0xfc)."""
    try:
        seen = bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:
        seen = ""
    guess = f", {seen!r} in Windows-1252, what Excel's plain 'CSV' writes" if seen.isprintable() and seen.strip() else ""
    return f"is not valid UTF-8 (byte 0x{byte:02x} at byte {position} of the line{guess}); save the file as UTF-8 (Excel: 'CSV UTF-8')"


class _Lines:
    """Decoded lines of a byte stream, remembering line numbers, raw bytes and bad bytes."""

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.number = 0
        self.raw: list[bytes] = []
        #: line number -> message, for lines that are not valid UTF-8
        self.bad: dict[int, str] = {}

    def take(self) -> list[bytes]:
        """The raw lines read since the last call (one record's worth)."""
        raw, self.raw = self.raw, []
        return raw

    def __iter__(self) -> Iterator[str]:
        for data in self.stream:
            self.number += 1
            self.raw.append(data)
            if self.number == 1 and data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]  # Excel writes a UTF-8 BOM; it is not part of the first column's name
            try:
                text = data.decode("utf-8")
                # `0xC2 in data` is a memchr; the regular expression runs only on the lines with that byte.
                yield repaired(text) if 0xC2 in data and C1_CONTROL_UTF8.search(data) else text
            except UnicodeDecodeError as exc:
                self.bad[self.number] = not_utf8(data[exc.start], exc.start + 1)
                yield data.decode("utf-8", "replace")

    def bad_between(self, first: int, last: int) -> str | None:
        if not self.bad:
            return None
        for number in range(first, last + 1):
            if number in self.bad:
                message = self.bad[number]
                return message if number == first else f"line {number} {message}"
        return None


class CsvReader:
    """CSV with a header line. ``header`` is read on construction; the separator is sniffed from it."""

    def __init__(self, source: Source):
        self.name = source.name
        self.lines = _Lines(source.stream)
        try:
            head = source.stream.peek(64 * 1024)  # type: ignore[attr-defined]
        except GZIP_ERRORS as exc:
            raise unreadable(self.name, exc) from None
        self.delimiter = sniff_delimiter(head)
        self.reader = csv.reader(self.lines, strict=True, delimiter=self.delimiter)
        self.header: list[str] = []
        while not self.header:
            try:
                row = next(self.reader)
            except StopIteration:
                raise ValidationError(f"{self.name}: the file is empty",
                                      [Problem(self.name, None, None, "the file is empty (expected a header line)")]) from None
            except csv.Error as exc:
                raise ValidationError(f"{self.name}: unreadable header",
                                      [Problem(self.name, self.reader.line_num, None, f"malformed CSV header: {exc}")]) from None
            except GZIP_ERRORS as exc:
                raise unreadable(self.name, exc) from None
            if any(cell.strip() for cell in row):
                self.header = [cell.strip() for cell in row]
        self.header_line = self.reader.line_num
        bad = self.lines.bad_between(self.header_line, self.header_line)
        if bad:
            raise ValidationError(f"{self.name}: header {bad}", [Problem(self.name, self.header_line, None, f"header {bad}")])
        self.lines.take()
        self.picked: tuple[list[str], Any] | None = None

    def select(self, columns: list[str]) -> None:
        """Records hold only these columns of the header (a column mapping reads 15 of an export's 79)."""
        names = [c for c in self.header if c in set(columns)]
        indexes = [self.header.index(c) for c in names]
        # itemgetter of one index returns the item, not a tuple.
        pick = itemgetter(*indexes) if len(indexes) > 1 else (lambda fields: tuple(fields[i] for i in indexes))
        self.picked = (names, pick)

    def __iter__(self) -> Iterator[Record]:
        header, width, lines = self.header, len(self.header), self.lines
        names, pick = self.picked if self.picked is not None else (header, None)
        last = self.header_line
        while True:
            first = last + 1
            try:
                fields = next(self.reader)
            except StopIteration:
                return
            except csv.Error as exc:
                last = self.reader.line_num
                raw = lines.take()
                yield Record(first, None, raw, csv_problem(exc, header, b"".join(raw).decode("utf-8", "replace"), self.delimiter))
                continue
            except GZIP_ERRORS as exc:
                raise unreadable(self.name, exc) from None
            last = self.reader.line_num
            raw = lines.take()
            if not any(cell.strip() for cell in fields):
                # A blank line, or a row of separators only (",,,,"), which
                # spreadsheets write for rows they once formatted: no record.
                continue
            bad = lines.bad_between(first, last)
            if bad:
                # The column of the first cell holding an undecodable byte (read as U+FFFD), when the row fits the header.
                column = next((header[i] for i, cell in enumerate(fields[:width]) if "\ufffd" in cell), None)
                yield Record(first, None, raw, (column if len(fields) == width else None, bad))
            elif len(fields) != width:
                if len(fields) < width:
                    message = f"has {len(fields)} of {width} fields (truncated line?)"
                    yield Record(first, None, raw, (header[len(fields)], message))
                else:
                    yield Record(first, None, raw, (None, f"has {len(fields)} fields, the header has {width}"))
            else:
                yield Record(first, dict(zip(names, pick(fields) if pick else fields)), raw)


class JsonLinesReader:
    """One JSON object per line; blank lines are skipped."""

    header: list[str] | None = None

    def __init__(self, source: Source):
        self.name = source.name
        self.lines = _Lines(source.stream)

    def __iter__(self) -> Iterator[Record]:
        try:
            yield from self._records()
        except GZIP_ERRORS as exc:
            raise unreadable(self.name, exc) from None

    def _records(self) -> Iterator[Record]:
        lines = self.lines
        loads = json.loads
        strict = _refuse_constant
        for text in lines:
            number = lines.number
            raw = lines.take()
            if not text.strip():
                continue
            bad = lines.bad.get(number) if lines.bad else None
            if bad:
                yield Record(number, None, raw, (None, bad))
                continue
            if "\\u00" in text:
                text = repaired_json(text)
            try:
                value = loads(text, parse_constant=strict)
            except ValueError as exc:
                hint = " (truncated line?)" if "Expecting" in str(exc) or "Unterminated" in str(exc) else ""
                yield Record(number, None, raw, (None, f"invalid JSON{hint}: {exc}"))
                continue
            if not isinstance(value, dict):
                yield Record(number, None, raw, (None, f"expected a JSON object, got {type(value).__name__}"))
                continue
            yield Record(number, value, raw)


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are accepted by Python's json but are not JSON; the
    # PostgreSQL json type (and every other consumer) would refuse them later.
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def reader_for(source: Source) -> CsvReader | JsonLinesReader:
    return CsvReader(source) if source.fmt == "csv" else JsonLinesReader(source)
