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
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..errors import Problem, ValidationError
from ..store import aggregates
from ..store.db import refresh_statistics
from ..store.faults import as_relmail_error, redact, translated
from ..windows import current_time
from .addresses import customers_by_address, normal_address
from .complete import DEFAULT_MAX_REMOVED, Listing
from .fields import INVALID_ADDRESS
from .loader import References
from .mapped import Mapped, MappedReader, builtin_fits, snake
from .mapping import SIDE_FIELDS, TOPIC_CONSENT, Mapping, load_mapping
from .orders import OrdersWriter
from .readers import CsvReader, Record, open_source, reader_for
from .rejects import RejectsWriter, default_rejects_path
from .schemas import Fallback, Schema, schema_for
from .writers import CustomersWriter, PreferencesWriter, TableWriter

#: Defaults for optional customer fields when the caller gives none (the model's defaults).
DEFAULTS = {"locale": "en_GB", "timezone": "UTC"}

#: The problem of a row naming its customer by an address no customer has.
UNKNOWN_ADDRESS = "no customer has this e-mail address (import customers first)"

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
    #: The column mapping the file was read through (its file, e.g. ``shopify/orders.yml``).
    mapping: str | None = None
    #: Customers imported with an address that is not a valid address: kept, flagged, never mailed.
    flagged_addresses: int = 0
    #: Their lines (at most ``max_errors``).
    flagged_lines: list[int] = field(default_factory=list)
    #: Why each of those lines' address is invalid (``no @-sign``...), in the same order; never the address.
    flagged_reasons: list[str] = field(default_factory=list)
    #: Rows the mapping skipped on purpose, by reason (``image rows``: 12).
    skipped: dict[str, int] = field(default_factory=dict)
    #: What the kind did besides rows: purchases and lines that are not, consent records, superseded preferences ...
    details: dict[str, int] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows_imported / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "file": self.file,
            "format": self.format,
            "mapping": self.mapping,
            "rows_read": self.rows_read,
            "rows_imported": self.rows_imported,
            "rows_rejected": self.rows_rejected,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
            "rejects_path": self.rejects_path,
            "suppressed_opt_outs": self.suppressed_opt_outs,
            "flagged_addresses": self.flagged_addresses,
            "flagged_lines": self.flagged_lines,
            "flagged_reasons": self.flagged_reasons,
            "skipped": self.skipped,
            "details": self.details,
            "problems": [p.as_dict() for p in self.problems],
        }


@translated
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
    mapping: str | Mapping | None = None,
    strict_addresses: bool = False,
    variables: dict[str, str] | None = None,
    decimal: str | None = None,
    time_format: str | None = None,
    complete: bool = False,
    max_removed: str = DEFAULT_MAX_REMOVED,
) -> ImportResult:
    """Import ``source`` (a path, ``-`` for stdin, or a binary stream) as ``kind``.

    ``kind`` is one of ``customers``, ``products``, ``preferences``,
    ``events``, ``orders``; ``fmt`` is ``csv`` or ``jsonl`` (default: from
    the suffix or the content). Rows are upserted on their ids. Raises
    :class:`~relmail.errors.ValidationError` listing every bad field (up to
    ``max_errors``; 0 means no limit) and imports nothing, unless
    ``skip_invalid``, which imports the good rows and writes the bad ones to
    ``rejects`` (default ``<name>.rejects.<format>`` beside the input).
    ``defaults`` gives the customer ``locale`` and ``timezone`` used when a
    row has none; that ``timezone`` (the project's) is also the zone of a
    mapping's times read with ``timezone: project``.

    ``mapping`` reads the file through a column mapping: a built-in name
    (``shopify``, ``woocommerce``, ``mailchimp``, ``klaviyo``), a YAML file, or a loaded
    :class:`~relmail.importers.mapping.Mapping`; ``variables`` fill its
    templates (``{"brand.url": ...}``). A customer whose address is not a
    valid address is imported and flagged (never mailed), unless
    ``strict_addresses``, which makes it an error. ``decimal`` (``.`` or
    ``,``) is the decimal mark of the mapping's ``money`` columns that name
    none (an export re-saved by a spreadsheet that writes ``12,50``); it
    needs a mapping named by ``mapping``. Without it, a money column whose
    amounts read two ways (``1.249``) and none shows the mark is refused,
    the whole file (see :class:`~relmail.importers.values.MarkWatch`). ``time_format`` (strftime codes)
    is likewise the format of its ``time`` columns that name none (the same
    export's times, re-saved as ``14-03-2026 10:12``).

    ``complete`` (customers only) reads the file as every customer the shop
    has: the stored customers it does not name are removed from the shop
    (kept, never mailed: REMOVED_FROM_SHOP) in the same transaction, unless
    they are more than ``max_removed`` (a count, ``250``, or a share of the
    customers listed before, ``10%``), which refuses the whole import. It
    cannot be combined with ``skip_invalid``: a rejected row's customer
    would be removed. Any customers import lifts the removal of those it names.
    """
    if complete and kind != "customers":
        raise ValidationError(f"a complete export is one of customers, not {kind}",
                              [Problem(str(getattr(source, "name", source)), None, None, "complete applies to customers")])
    if complete and skip_invalid:
        raise ValidationError("a complete export is imported whole: --complete cannot skip invalid rows (their customers "
                              "would be removed); fix them, or import without --complete",
                              [Problem(str(getattr(source, "name", source)), None, None, "--complete with --skip-invalid")])
    if decimal is not None and not isinstance(mapping, str):
        raise ValidationError(f"the decimal mark {decimal!r} applies to the money columns of a mapping: name one (--map)",
                              [Problem(str(getattr(source, "name", source)), None, None, "no mapping to apply the decimal mark to")])
    if time_format is not None and not isinstance(mapping, str):
        raise ValidationError(f"the time format {time_format!r} applies to the time columns of a mapping: name one (--map)",
                              [Problem(str(getattr(source, "name", source)), None, None, "no mapping to apply the time format to")])
    schema = schema_for(kind)
    started = time.perf_counter()
    src = open_source(source, fmt)
    try:
        reader: Any = reader_for(src)
        mapped = None
        if mapping is not None:
            loaded = mapping if isinstance(mapping, Mapping) else load_mapping(mapping, kind, reader.header, src.name, decimal,
                                                                                  (defaults or {}).get("timezone"), time_format)
            if loaded.kind != kind:
                raise ValidationError(f"{loaded.file}: the mapping is for {loaded.kind}, not {kind}",
                                      [Problem(loaded.file, loaded.line_of("kind"), "kind", f"the mapping is for {loaded.kind}")])
            reader = mapped = MappedReader(reader, loaded, variables, schema)
            header_problems = mapped.check_header()
        elif isinstance(reader, CsvReader):
            header_problems = schema.check_header(reader.header)
        else:
            header_problems = []
        if header_problems:
            problems = [Problem(src.name, reader.header_line, f, m) for f, m in header_problems]
            what = f"the mapping {mapped.mapping.file}" if mapped is not None else f"a {kind} file"
            raise ValidationError(f"{src.name}: the header does not fit {what}; nothing imported{_fitting(reader.header, src.name)}",
                                  problems)
        writer = None
        if skip_invalid:
            writer = RejectsWriter(Path(rejects) if rejects else default_rejects_path(src.name, src.fmt), src.fmt)
        fallbacks = {name: Fallback(value) for name, value in {**DEFAULTS, **(defaults or {})}.items()}
        run = _Run(schema, src.name, src.fmt == "csv" and mapped is None, fallbacks, skip_invalid,
                   writer, max_errors, lenient=not strict_addresses, max_removed=max_removed if complete else None)
        provided = _provided(schema, reader.header, mapped)
        try:
            with engine.begin() as conn:
                run.start(conn, provided, mapped.mapping if mapped is not None else None, reader.header)
                try:
                    for record in reader:
                        run.add(record)
                        if len(run.pending) + len(run.window) >= chunk_size:
                            run.flush()
                            if progress:
                                progress(run.read, src.position(), src.size)
                    run.flush()
                    run.sink.finish()
                    # What the writer found at the end: rows its finish refused (a customers file's consent for another
                    # id, an order that waited for its account's customer).
                    run.flush()
                    if progress:
                        progress(run.read, src.position(), src.size)
                finally:
                    run.sink.close()
                if mapped is not None:
                    # Rows of the file: an order whose lines are listed in one cell is one row, its lines several records.
                    # Rows that translated a product are rows of the file too, merged into that product.
                    run.read += sum(mapped.skipped.values()) - mapped.extra_lines + mapped.translations
                    _check_marks(mapped, src.name, run.problems)
                run.finish()  # raises ValidationError, which rolls the transaction back
                listing = getattr(run.sink, "listing", None)
                if listing is not None:  # a complete export: the customers it does not name are removed (or nothing is imported)
                    run.sink.details["removed_from_shop"] = listing.apply(current_time())
                # Statistics first: the aggregates' refresh looks the touched customers' events up by
                # customer, which PostgreSQL plans as a scan of the whole table while it believes it empty.
                refresh_statistics(conn, schema.table.name, run.imported)
                loader = getattr(run.sink, "loader", None)
                if loader is not None and loader.touched is not None:
                    aggregates.refresh(conn, loader.touched)
        except SQLAlchemyError as exc:
            fault = as_relmail_error(exc)
            raise type(fault)(f"{src.name}: the import failed in {redact(str(engine.url))} and was rolled back: {fault}",
                              detail=fault.detail) from None
        finally:
            if writer is not None:
                writer.close()
        link = getattr(run.sink, "link", None)
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
            suppressed_opt_outs=link.written if link is not None else 0,
            mapping=mapped.mapping.file if mapped is not None else None,
            flagged_addresses=run.flagged,
            flagged_lines=run.flagged_lines,
            flagged_reasons=run.flagged_reasons,
            skipped=dict(mapped.skipped) if mapped is not None else {},
            details={**run.sink.details, **_mapped_details(mapped)},
        )
    finally:
        src.close()


def _mapped_details(mapped: MappedReader | None) -> dict[str, int]:
    """What the mapping did besides skipping rows: rows that translated a product, sales left out."""
    if mapped is None:
        return {}
    counts = {"translation_rows": mapped.translations, "sales_not_below_price": mapped.sales_not_below}
    return {k: n for k, n in counts.items() if n}


def _fitting(header: list[str] | None, name: str) -> str:
    """The command that imports a file whose header a built-in mapping reads (a forgotten --map, or the wrong kind)."""
    if not header:
        return ""
    fits = [f"relmail import {kind} {shlex.quote(name)} --map {mapping}" for mapping, kind in builtin_fits(header)]
    return f" (the file is an export a built-in mapping reads: {' or '.join(fits)})" if fits else ""


def consent_flag_keys(mapping: Mapping | None) -> dict[str, str]:
    """Topic -> the attribute keeping a mapping's undated consent column (``Accepts Email Marketing`` -> ``accepts_email_marketing``).

    A yes turned no between two exports is an opt-out (see :class:`CustomersWriter`); the
    attribute is named by the column, so a copy of a built-in mapping keeps reading it.
    The global consent (``*``) is undated unless the mapping fills ``consent_at``; a
    topic's (``consent.partner-offers``) always is.
    """
    if mapping is None:
        return {}
    keys: dict[str, str] = {}
    for o in mapping.outputs:
        if not o.column:
            continue
        if o.target == "consent" and "consent_at" not in mapping.targets:
            keys.setdefault("*", snake(o.column))
        elif o.target.startswith(TOPIC_CONSENT):
            keys.setdefault(o.target[len(TOPIC_CONSENT):], snake(o.column))
    return keys


def _provided(schema: Schema, header: list[str] | None, mapped: MappedReader | None) -> set[str] | None:
    """The fields the source has (a re-import updates only those), or None for every field (JSON Lines)."""
    if mapped is not None:
        targets = set(mapped.mapping.targets)
        if schema.kind == "customers" and consent_flag_keys(mapped.mapping):
            targets.add("attributes")  # where the last undated consent flag is remembered
        return targets
    if header is None:
        return None
    have = set(header) & set(schema.names)
    if schema.extras_into is not None and set(header) - set(schema.names):
        have.add(schema.extras_into)
    return have


class _Run:
    """The state of one import while it streams."""

    def __init__(self, schema: Schema, name: str, from_csv: bool, defaults: dict, skip_invalid: bool,
                 writer: RejectsWriter | None, max_errors: int, lenient: bool = True, max_removed: str | None = None):
        self.schema = schema
        #: A complete customers export (``complete``): the most customers it may remove.
        self.max_removed = max_removed
        self.name = name
        self.from_csv = from_csv
        self.defaults = defaults
        self.skip_invalid = skip_invalid
        self.writer = writer
        self.max_errors = max_errors if max_errors > 0 else None
        #: Rejected rows of the file: an order whose lines are listed in one cell is one row, whichever of its lines failed.
        self.read = self.imported = self.rejected = self.flagged = 0
        #: The last rejected row's line and the problems said of it (its records may reach the rejects in two chunks).
        self.row_line: int | None = None
        self.row_problems: set[tuple[str | None, str]] = set()
        self.flagged_lines: list[int] = []
        self.flagged_reasons: list[str] = []
        self.problems: list[Problem] = []
        self.pending: list[tuple[Record, dict[str, Any]]] = []
        #: Rejected records since the last flush, reported in line order at the flush, each with its group or None.
        self.window: list[tuple[Record, list[tuple[str | None, str]], str | None]] = []
        #: (group, its problems) -> the one problem listed for all its rows and their lines (see :meth:`reject`).
        self.groups: dict[tuple, tuple[Problem, str, list[int]]] = {}
        self.side = SIDE_FIELDS.get(schema.kind, ())
        #: Whether rows name their customer by address (an activity export through a mapping): found per chunk.
        self.by_address = False
        #: Rows since the last flush rejected for other fields whose address is still to be looked up:
        #: (address, the problems the row is reported with, its record).
        self.rejected_addresses: list[tuple[str, list, Record]] = []
        self.lenient = lenient and schema.flag is not None

    def start(self, conn, provided: set[str] | None, mapping: Mapping | None, header: list[str] | None = None) -> None:
        self.conn = conn
        self.by_address = mapping is not None and "email" in self.side and "email" in mapping.targets
        self.references = References(conn)
        kind = self.schema.kind
        if kind == "customers" and mapping is not None:
            # consent.TOPIC: set apart with the global consent, for the writer.
            self.side = self.side + tuple(o.target for o in mapping.outputs if o.target.startswith(TOPIC_CONSENT))
        if kind == "customers":
            self.sink = CustomersWriter(self, conn, self.schema, provided, source=mapping.name if mapping else "import",
                                        match_email=mapping is not None and mapping.match == "email",
                                        flag_keys=consent_flag_keys(mapping),
                                        merge=mapping.merge if mapping is not None else None,
                                        listing=Listing(conn, self.name, self.max_removed) if self.max_removed else None,
                                        # A dated export's blank time, and a list's undated unsubscribe: a "no" is an opt-out.
                                        dated_consent=mapping is not None and ("consent_at" in mapping.targets
                                                                               or mapping.consent_no == "opt-out"))
        elif kind == "preferences":
            self.sink = PreferencesWriter(self, conn)
        elif kind == "orders":
            # The shop's account number, when the mapping reads it (optional) and the export lacks it: the column to add.
            account = next((o.column for o in mapping.outputs if o.target == "account"), None) if mapping else None
            self.sink = OrdersWriter(self, conn, skip_unknown=mapping is not None and mapping.skip_unknown_customers,
                                     account_column=account if account not in (header or ()) else None,
                                     source=(mapping.accounts or mapping.name) if mapping else "import")
        else:
            self.sink = TableWriter(self, conn, self.schema, provided)

    def add(self, record: Record) -> None:
        self.read += 1
        if record.error is not None:
            self._rejected(record, getattr(record, "problems", None) or [record.error])
            return
        values, side = record.values, None
        mapped = isinstance(record, Mapped)
        if mapped and self.side and any(k in values for k in self.side):
            values = dict(values)
            side = {k: values.pop(k) for k in self.side if k in values}
        address = None
        if side and "email" in side:  # an event naming its customer by address (through a mapping)
            address = side.pop("email")
            if values.get("customer_id") is not None:
                address = None
        flagged: list[tuple[str, str]] | None = [] if self.lenient else None
        row, problems = self.schema.convert(values, self.defaults, self.from_csv, flagged, record.final if mapped else frozenset())
        if address is not None:
            # Found with the rest of its chunk, at the flush (one look-up for many rows).
            problems = [p for p in problems if p[0] != "customer_id"]
            address = normal_address(address)
        if mapped:
            # The row replaces the mapping's fields: the record waits in its chunk with one dict, not two.
            record.values = None
            if problems or record.problems:
                # A cell that did not parse leaves its field empty: the kind's own problem with that
                # field ("is required") would only repeat it. One problem per failed field.
                failed = record.failed
                problems = [*record.problems,
                            *((record.labels.get(f, f) if f else f, m) for f, m in problems if f not in failed)]
        if not problems:
            verdict = self.sink.check(record.line, row)
            if verdict is False:
                return  # a later row of the file has the say (preference histories)
            problems = self._named(record, verdict)
        if problems:
            self._rejected(record, problems)
            if address is not None:
                self.rejected_addresses.append((address, problems, record))
            return
        if flagged:
            self.flagged += 1
            if self.max_errors is None or len(self.flagged_lines) < self.max_errors:
                self.flagged_lines.append(record.line)
                self.flagged_reasons.append("; ".join(why.removeprefix(f"{INVALID_ADDRESS}: ") for _, why in flagged))
        if side:
            row.update({f"_{k}": v for k, v in side.items()})
        if address is not None:
            row["_address"] = address
        self.pending.append((record, row))

    def may_write(self) -> bool:
        """False once a row was rejected in an all-or-nothing import: validation goes on, nothing more is written."""
        return not (self.rejected or self.window) or self.skip_invalid

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        if self.by_address:
            pending = self._find_customers(pending)
        self._write_chunk(pending)
        # Rejects of this stretch of the file, in line order (reference
        # problems are found after the field problems of later lines).
        window, self.window = self.window, []
        window.sort(key=lambda item: item[0].line)
        for record, problems, group in _by_row(window):
            if record.line == self.row_line:
                # The rest of a row whose other records were rejected in the chunk before (an order's
                # later lines): only what was not said of the row yet.
                problems = [p for p in problems if p not in self.row_problems]
                if not problems:
                    continue
            else:
                self.rejected += 1
                self.row_line, self.row_problems = record.line, set()
            self.row_problems.update(problems)
            key = (group, tuple(problems)) if group is not None else None
            shared = self.groups.get(key) if key is not None else None
            if shared is not None:
                problem, message, lines = shared
                lines.append(record.line)
                problem.message = f"{message}: {group}, lines {_spans(lines)}"
            else:
                for fieldname, message in problems:
                    if self.max_errors is None or len(self.problems) < self.max_errors:
                        self.problems.append(Problem(self.name, record.line, fieldname, message))
                        if key is not None:
                            self.groups[key] = (self.problems[-1], message, [record.line])
            if self.writer is not None:
                self.writer.write(record, problems)

    def _find_customers(self, pending: list[tuple[Record, dict[str, Any]]]) -> list[tuple[Record, dict[str, Any]]]:
        """The customers of the chunk's rows that name them by address, all found at once; an unknown address is an error.

        A row rejected for another field gets this problem too, after its others, as a row that
        names its customer by id gets the id's.
        """
        rejected, self.rejected_addresses = self.rejected_addresses, []
        wanted = {row["_address"] for _, row in pending if "_address" in row} | {address for address, _, _ in rejected}
        owners = customers_by_address(self.conn, wanted)
        # They are customers: the chunk's reference check need not look them up again.
        self.references.known["customers"].update(owners.values())
        for address, problems, record in rejected:
            if address not in owners:
                problems.append((record.labels.get("email", "email"), UNKNOWN_ADDRESS))
        kept = []
        for record, row in pending:
            address = row.pop("_address", None)
            if address is None:
                kept.append((record, row))
            elif address in owners:
                row["customer_id"] = owners[address]
                kept.append((record, row))
            else:
                self.reject(record, [("email", UNKNOWN_ADDRESS)])
        return kept

    def _write_chunk(self, pending: list[tuple[Record, dict[str, Any]]]) -> None:
        if not pending:
            return
        for fieldname, table in self.schema.references.items():
            missing = self.references.missing(table, {row[fieldname] for _, row in pending if row[fieldname] is not None})
            if missing:
                noun = table[:-1]
                # A product id in another case (an SKU lower-cased by another system) is named, not left to guess.
                near = self.references.other_case(table, missing) if table == "products" else {}
                kept = []
                for record, row in pending:
                    if row[fieldname] in near:
                        self.reject(record, [(fieldname, f"unknown {noun} {row[fieldname]!r}: the catalogue has "
                                                         f"{near[row[fieldname]]!r} (ids are compared exactly, case too)")])
                    elif row[fieldname] in missing:
                        self.reject(record, [(fieldname, f"unknown {noun} {row[fieldname]!r} (import {table} first)")])
                    else:
                        kept.append((record, row))
                pending = kept
        self.sink.write(pending)

    def reject(self, record: Record, problems: list[tuple[str | None, str]], group: str | None = None) -> None:
        """A writer's verdict on a row: through a mapping, its fields are named by the export's columns.

        Rows of one ``group`` (``order '1001'``) with the same problems are
        listed once, at the first row, naming the group and all its lines:
        an order of five lines whose customer is unknown is one problem,
        not five that crowd the others out of the list. Each row is still
        rejected, counted and written to the rejects file.
        """
        self._rejected(record, self._named(record, problems), group)

    @staticmethod
    def _named(record: Record, problems: list[tuple[str | None, str]]) -> list[tuple[str | None, str]]:
        labels = getattr(record, "labels", None)
        if labels and problems:
            return [(labels.get(f, f) if f else f, m) for f, m in problems]
        return problems

    def _rejected(self, record: Record, problems: list[tuple[str | None, str]], group: str | None = None) -> None:
        # Counted at the flush, per row of the file (see _by_row).
        self.window.append((record, problems, group))

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


def _by_row(window: list[tuple[Record, list[tuple[str | None, str]], str | None]]
            ) -> list[tuple[Record, list[tuple[str | None, str]], str | None]]:
    """The rejects of a window sorted by line, one per row of the file, each with its distinct problems.

    An order whose lines are listed in one cell (Shopware's ``line_items``) is
    read as one record per line, all with the row's line number: a cell that
    fails fails each of them, and the row is one bad row, said once.
    """
    rows: list[tuple[Record, list[tuple[str | None, str]], str | None]] = []
    for record, problems, group in window:
        if rows and rows[-1][0].line == record.line:
            said = rows[-1][1]
            said.extend(p for p in problems if p not in said)
        else:
            rows.append((record, list(dict.fromkeys(problems)), group))
    return rows


def _spans(lines: list[int]) -> str:
    """Line numbers in order as runs: ``2-6, 9``."""
    runs: list[list[int]] = []
    for n in sorted(lines):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


def _check_marks(mapped: MappedReader, name: str, problems: list[Problem]) -> None:
    """Refuse the whole file, rows already written included, when a money column's decimal mark is left open."""
    open_marks = mapped.ambiguities()
    if open_marks:
        columns = ", ".join(repr(column) for _, column, _ in open_marks)
        raise ValidationError(f"{name}: the decimal mark of {columns} is not known; nothing imported",
                              [*(Problem(name, line, column, message) for line, column, message in open_marks), *problems])
