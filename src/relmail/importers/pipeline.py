"""The import run: read, validate, check references, upsert, in one transaction.

Records stream through in chunks: each chunk is validated row by row
(cheap, pure Python), its references are checked with one query per few
hundred distinct ids, and it is written with one bulk statement. Nothing
but the current chunk and the ids seen so far (for duplicate detection) is
held in memory.

All or nothing: the whole file is one transaction. After the first bad
record nothing more is written, but validation goes on so that one run
reports every problem (up to ``max_errors``); then the transaction is
rolled back. With ``skip_invalid`` the good rows are committed and the bad
ones go to a rejects file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..errors import DatabaseError, Problem, ValidationError
from ..store.db import redact, refresh_statistics
from .loader import Loader, References, SuppressionLink
from .readers import CsvReader, Record, open_source, reader_for
from .rejects import RejectsWriter, default_rejects_path
from .schemas import schema_for

#: Defaults for optional customer fields when the caller gives none (the model's defaults).
DEFAULTS = {"locale": "en_GB", "timezone": "UTC"}

#: Called after each chunk with (rows read, bytes consumed, total bytes or None).
Progress = Callable[[int, int, int | None], None]


@dataclass
class ImportResult:
    """What an import did. ``problems`` holds at most ``max_errors`` entries."""

    kind: str
    file: str
    format: str
    rows_read: int
    rows_imported: int
    rows_rejected: int
    seconds: float
    problems: list[Problem] = field(default_factory=list)
    rejects_path: str | None = None
    #: Customers whose address is on the erasure suppression list and got a global opt-out.
    suppressed_opt_outs: int = 0

    @property
    def rows_per_second(self) -> float:
        return self.rows_imported / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "file": self.file,
            "format": self.format,
            "rows_read": self.rows_read,
            "rows_imported": self.rows_imported,
            "rows_rejected": self.rows_rejected,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
            "rejects_path": self.rejects_path,
            "suppressed_opt_outs": self.suppressed_opt_outs,
            "problems": [p.as_dict() for p in self.problems],
        }


def import_file(
    engine: Engine,
    kind: str,
    source: str | os.PathLike | BinaryIO,
    *,
    fmt: str | None = None,
    skip_invalid: bool = False,
    rejects: str | os.PathLike | None = None,
    max_errors: int = 20,
    chunk_size: int = 10_000,
    defaults: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> ImportResult:
    """Import ``source`` (a path, ``-`` for stdin, or a binary stream) as ``kind``.

    ``kind`` is one of ``customers``, ``products``, ``preferences``,
    ``events``; ``fmt`` is ``csv`` or ``jsonl`` (default: from the suffix or
    the content). Rows are upserted on their ids. Raises
    :class:`~relmail.errors.ValidationError` listing every bad field (up to
    ``max_errors``; 0 means no limit) and imports nothing, unless
    ``skip_invalid``, which imports the good rows and writes the bad ones to
    ``rejects`` (default ``<name>.rejects.<format>`` beside the input).
    ``defaults`` gives the customer ``locale`` and ``timezone`` used when a
    row has none.
    """
    schema = schema_for(kind)
    started = time.perf_counter()
    src = open_source(source, fmt)
    try:
        reader = reader_for(src)
        if isinstance(reader, CsvReader):
            header_problems = schema.check_header(reader.header)
            if header_problems:
                problems = [Problem(src.name, reader.header_line, f, m) for f, m in header_problems]
                raise ValidationError(f"{src.name}: the header does not fit a {kind} file; nothing imported", problems)
        writer = None
        if skip_invalid:
            writer = RejectsWriter(Path(rejects) if rejects else default_rejects_path(src.name, src.fmt), src.fmt)
        run = _Run(schema, src.name, src.fmt == "csv", {**DEFAULTS, **(defaults or {})}, skip_invalid, writer, max_errors)
        try:
            with engine.begin() as conn:
                run.start(conn)
                try:
                    for record in reader:
                        run.add(record)
                        if len(run.pending) + len(run.window) >= chunk_size:
                            run.flush()
                            if progress:
                                progress(run.read, src.position(), src.size)
                    run.flush()
                    if progress:
                        progress(run.read, src.position(), src.size)
                finally:
                    run.loader.close()
                run.finish()  # raises ValidationError, which rolls the transaction back
                refresh_statistics(conn, schema.table.name, run.imported)
        except SQLAlchemyError as exc:
            detail = getattr(exc, "orig", None) or exc
            raise DatabaseError(f"{src.name}: the import failed in {redact(str(engine.url))} and was rolled back: {detail}") from None
        finally:
            if writer is not None:
                writer.close()
        return ImportResult(
            kind=kind,
            file=src.name,
            format=src.fmt,
            rows_read=run.read,
            rows_imported=run.imported,
            rows_rejected=run.rejected,
            seconds=time.perf_counter() - started,
            problems=run.problems,
            rejects_path=str(writer.path) if writer is not None and writer.count else None,
            suppressed_opt_outs=run.link.written if run.link else 0,
        )
    finally:
        src.close()


class _Run:
    """The state of one import while it streams."""

    def __init__(self, schema, name: str, from_csv: bool, defaults: dict, skip_invalid: bool, writer: RejectsWriter | None, max_errors: int):
        self.schema = schema
        self.name = name
        self.from_csv = from_csv
        self.defaults = defaults
        self.skip_invalid = skip_invalid
        self.writer = writer
        self.max_errors = max_errors if max_errors > 0 else None
        self.read = self.imported = self.rejected = 0
        self.problems: list[Problem] = []
        self.pending: list[tuple[Record, dict[str, Any]]] = []
        #: key -> first line, for "duplicate id, also on line N" (the only per-file memory).
        self.seen: dict[Any, int] = {}
        self.link: SuppressionLink | None = None
        #: Rejected records since the last flush, reported in line order at the flush.
        self.window: list[tuple[Record, list[tuple[str | None, str]]]] = []

    def start(self, conn) -> None:
        self.conn = conn
        self.loader = Loader(conn, self.schema)
        self.references = References(conn)
        if self.schema.kind == "customers":
            self.link = SuppressionLink(conn, datetime.now(UTC))

    def add(self, record: Record) -> None:
        self.read += 1
        if record.error is not None:
            self.reject(record, [record.error])
            return
        row, problems = self.schema.convert(record.values, self.defaults, self.from_csv)
        key = self._key(row)
        if key is not None:
            first = self.seen.setdefault(key, record.line)
            if first != record.line:
                names = "+".join(self.schema.key)
                shown = key if isinstance(key, str) else "/".join(key)
                problems.append((names, f"duplicate {names} {shown!r}: also on line {first}"))
        if problems:
            self.reject(record, problems)
        else:
            self.pending.append((record, row))

    def _key(self, row: dict[str, Any]) -> Any:
        key = self.schema.key
        if len(key) == 1:
            return row.get(key[0])
        values = tuple(row.get(k) for k in key)
        return None if None in values else values

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        self._write_chunk(pending)
        # Rejects of this stretch of the file, in line order (reference
        # problems are found after the field problems of later lines).
        window, self.window = self.window, []
        window.sort(key=lambda item: item[0].line)
        for record, problems in window:
            for fieldname, message in problems:
                if self.max_errors is None or len(self.problems) < self.max_errors:
                    self.problems.append(Problem(self.name, record.line, fieldname, message))
            if self.writer is not None:
                self.writer.write(record, problems)

    def _write_chunk(self, pending: list[tuple[Record, dict[str, Any]]]) -> None:
        if not pending:
            return
        for fieldname, table in self.schema.references.items():
            missing = self.references.missing(table, {row[fieldname] for _, row in pending if row[fieldname] is not None})
            if missing:
                noun = table[:-1]
                kept = []
                for record, row in pending:
                    if row[fieldname] in missing:
                        self.reject(record, [(fieldname, f"unknown {noun} {row[fieldname]!r} (import {table} first)")])
                    else:
                        kept.append((record, row))
                pending = kept
        if self.rejected and not self.skip_invalid:
            return  # the import will be rolled back: validate on, write nothing more
        rows = [row for _, row in pending]
        self.loader.write(rows)
        self.imported += len(rows)
        if self.link is not None:
            self.link.apply(rows)

    def reject(self, record: Record, problems: list[tuple[str | None, str]]) -> None:
        self.rejected += 1
        self.window.append((record, problems))

    def finish(self) -> None:
        if self.read == 0:
            what = "has a header but no rows" if self.from_csv else "is empty"
            raise ValidationError(f"{self.name}: the file {what}; nothing imported", [Problem(self.name, None, None, f"the file {what}")])
        if self.rejected and not self.skip_invalid:
            error = ValidationError(
                f"{self.name}: {self.rejected:,} bad row(s) of {self.read:,}; nothing imported", self.problems
            )
            error.bad_rows = self.rejected  # type: ignore[attr-defined]
            raise error
