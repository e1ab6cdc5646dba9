"""A file read through a column mapping: each record's columns become the import kind's fields.

:class:`MappedReader` wraps a CSV or JSON Lines reader. It checks the
header against the mapping once (every column mapped, dropped or sent to
``attributes``; every column the mapping needs present), then turns each
record into a :class:`Mapped` record: the fields, already parsed, plus the
problems of the cells that did not parse, each named by its source column.
Rows of one order or product share the values of their first row where the
export writes them only there (``group``), and rows that are not records
(Shopify's image rows) are skipped and counted. Rows that translate the
product before them (``translations``: a Magento store view's name) give
that product attributes such as ``name_de`` instead of being products. An order whose lines are
listed in one cell (``items``: Shopware's ``2x 0190…|1x 0190…``) is read as
one row per line, each line's parts in columns of their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from ..errors import ValidationError
from ..render.sale import SALE_FIELDS
from .fields import FieldError
from .mapping import LANGUAGE_CODE, VARIABLES, Mapping, builtin_names, load_mapping
from .readers import Record
from .schemas import KINDS, Schema
from .values import Parser, _short, empty, remembered, scalar

#: Distinct cells remembered per column (an export's order ids, addresses, products, statuses).
_CELLS = 65536
#: Distinct combinations of a row's own cells remembered (an order line's product, quantity and price).
_ROWS = 4096
#: A leading apostrophe before a number: how an export keeps spreadsheets from reformatting ids and phone numbers.
_QUOTED = re.compile(r"^'(?=[\d+])")


@dataclass(slots=True)
class Mapped(Record):
    """A record after the mapping: ``values`` holds fields, ``problems`` the cells that did not parse."""

    problems: Sequence[tuple[str | None, str]] = ()
    #: Field -> the column (or ``fields.NAME``) it came from, for the kind's own problems.
    labels: dict[str, str] = field(default_factory=dict)
    #: Fields whose values went through the kind's own check already.
    final: frozenset[str] = frozenset()
    #: Fields left empty because their cell did not parse (the problem is in ``problems``).
    failed: frozenset[str] = frozenset()


class MappedReader:
    """Records of ``reader`` mapped by ``mapping``; ``variables`` fill ``{brand.url}`` in templates.

    With ``schema`` (the import kind's), each column's value also goes
    through the kind's own check here, once per distinct cell: an export
    repeats its statuses, products, addresses and order ids line after line.
    """

    def __init__(self, reader, mapping: Mapping, variables: dict[str, str] | None = None, schema: Schema | None = None):
        self.reader = reader
        self.mapping = mapping
        self.name = reader.name
        self.variables = {k: (variables or {}).get(k, "") for k in VARIABLES}
        self.header: list[str] | None = reader.header
        self.header_line = getattr(reader, "header_line", 1)
        #: reason -> rows skipped (``skip_rows``).
        self.skipped: dict[str, int] = {}
        #: Records beyond one per row: the second and later lines of an order's lines cell (``items``).
        self.extra_lines = 0
        #: Rows that translated the product before them (``translations``): rows of the file, not records.
        self.translations = 0
        #: Sale prices left out because they are not below the price (``sale_below_price``).
        self.sales_not_below = 0
        self.extra: list[str] = []
        # A field read from one column is named by that column (CLEAN_TIME), as the export's reader knows it.
        self.labels = {o.target.split(".", 1)[0]: o.column or o.label for o in mapping.outputs}
        if mapping.other_columns == "attributes":
            self.labels.setdefault("attributes", "other columns")
        # The outputs as plain tuples, constants apart: apply() runs once per row.
        # A field whose invalid value an import may keep (a customer's address) stays with the kind's check.
        checks = {c.name: c.parse for c in schema.columns if c.lenient is None} if schema is not None else {}
        final: set[str] = set()
        row_sources: set[str] = set()
        self.constants: dict[str, Any] = {}
        self.constant_attributes: dict[str, Any] = {}
        # (column -> field outputs, the others), for every row and for a group's first row.
        self.plan: tuple[list, list] = ([], [])
        self.group_plan: tuple[list, list] = ([], [])
        self.mixed = False
        group_columns = set(mapping.first_row) | {mapping.group_by} if mapping.group_by else set()
        for o in mapping.outputs:
            attribute = o.target.startswith("attributes.")
            key = o.target[len("attributes."):] if attribute else o.target
            if o.column is None and not o.first and o.template is None:
                if o.constant is not None:
                    (self.constant_attributes if attribute else self.constants)[key] = o.constant
                continue
            how, source = (0, o.column) if o.column is not None else (1, o.first) if o.first else (2, o.template)
            parse = o.parse
            checked = checks.get(key) if not attribute else None
            if checked is not None and parse is not empty:  # ``empty`` stays itself: the reader knows it by identity
                parse, final = _cached(parse, checked), final | {key}
            # Read only from a group's first row (an order's e-mail, time, status): evaluated once per group.
            plan = self.group_plan if group_columns and set(o.sources) <= group_columns else self.plan
            if plan is self.plan:
                row_sources.update(o.sources)
                if set(o.sources) & set(mapping.first_row):
                    self.mixed = True  # a row's output also reads its group's first row
            if how == 0 and not attribute and parse is not empty:
                plan[0].append((source, parse, o.default or "", key, o.label))
            else:
                plan[1].append((how, source, parse, o.default or "", attribute, key, o.label))
        self.final = frozenset(final)
        #: (the column, the watch) of each money column whose decimal mark nobody named; this file's evidence only.
        self.watches = []
        for o in mapping.outputs:
            watch = getattr(o.parse, "watch", None)
            if watch is not None:
                watch.reset()
                o.parse.forget()
                self.watches.append((o.column or o.label, watch))
        #: The cells the per-row outputs read, and what they make of each combination of cells.
        self.row_sources = tuple(sorted(row_sources))
        self.rows: dict[tuple, tuple[dict, dict, tuple]] = {}
        #: The columns the translated fields are read from: a problem of one of them is a translation row's own.
        self.translated_sources = frozenset(c for o in mapping.outputs if o.target in mapping.translate_fields for c in o.sources)

    def check_header(self) -> list[tuple[str | None, str]]:
        """Problems of the header against the mapping (empty: the file fits)."""
        if self.header is None:
            return []
        problems = self._columns(self.header)
        if not problems and hasattr(self.reader, "select"):
            m = self.mapping
            wanted = ({c for o in m.outputs for c in o.sources} | set(m.first_row) | set(m.skip_blank) | set(self.extra)
                      | {c for c, _ in m.skip_equals}
                      | ({m.translate_by} if m.translate_by else set())
                      | set(_parent_sources(m)) | ({m.items_column} if m.items_column else set())) - set(m.item_columns)
            self.reader.select(sorted(wanted | ({m.group_by} if m.group_by else set())))
        return problems

    def _columns(self, header: list[str]) -> list[tuple[str | None, str]]:
        m = self.mapping
        # An order's lines cell gives the columns of one line (line_items.quantity ...), when the file has it.
        have = set(header) | (set(m.item_columns) if m.items_column in header else set())
        problems: list[tuple[str | None, str]] = []
        needed: dict[str, int | None] = {}
        if m.items_column is not None:
            needed[m.items_column] = m.line_of("items")
        for out in m.outputs:
            if out.optional:
                continue
            if out.first:  # any one of them will do
                if not have & set(out.first):
                    problems.append((out.label, f"none of the columns {', '.join(out.first)} that the mapping reads "
                                                f"({m.file}:{out.line}) is in the file"))
                continue
            for column in out.sources:
                needed.setdefault(column, out.line)
        # The columns read from a group's first row need not all be there (older exports lack some).
        for column in ([m.group_by] if m.group_by else []) + list(m.skip_blank):
            needed.setdefault(column, m.line_of("group") or m.line_of("skip_rows"))
        if m.translate_by:
            needed.setdefault(m.translate_by, m.line_of("translations"))
        # The reference and the names must be there; the columns a child takes need not (older exports lack some).
        for column in _parent_sources(m, taken=False):
            needed.setdefault(column, m.line_of("parent"))
        for column, line in needed.items():
            if column not in have and not (column in m.item_columns and m.items_column not in have):
                where = f" ({m.file}:{line})" if line else f" ({m.file})"
                problems.append((column, f"column '{column}' that the mapping reads{where} is not in the file"))
        used = ({c for out in m.outputs for c in out.sources} | set(needed) | set(m.first_row) | set(m.parent_columns)
                | {c for c, _ in m.skip_equals})
        self.extra = []
        for column in header:
            if not column or column in used or m.dropped(column):
                continue
            if m.other_columns == "attributes":
                self.extra.append(column)
            elif m.other_columns == "error":
                problems.append((column, f"column '{column}' is not in the mapping {m.file}: map it, list it under drop, "
                                         "or set other_columns"))
        return problems

    def __iter__(self) -> Iterator[Record]:
        if self.mapping.translate_by is None:
            yield from self._records()
            return
        # A product's record waits for the rows that translate it, which follow it.
        pending: Record | None = None
        for record in self._records():
            if isinstance(record, _Translation):
                problem = self._translate(pending, record)
                if problem is not None:
                    yield problem
                continue
            if pending is not None:
                yield pending
            pending = record
        if pending is not None:
            yield pending

    def _translate(self, product: Record | None, row: _Translation) -> Record | None:
        """Give ``product`` the translated fields of ``row`` as attributes (``name_de``); a problem of its cells, or None."""
        m = self.mapping
        out, problems = row.values, row.problems
        mine = [(f, message) for f, message, _ in problems if f in row.sources]
        if mine:
            return Mapped(row.line, None, row.raw, mine[0], mine)
        language = m.translate_languages.get(row.code) or (row.code if LANGUAGE_CODE.fullmatch(row.code) else None)
        if language is None:
            reason = f"rows of a {m.translate_by} that names no language (translations.languages names it)"
        elif product is None or not isinstance(product, Mapped) or product.values is None or product.values.get("id") != out.get("id"):
            reason = "translations of rows not imported"
        else:
            attributes = product.values.setdefault("attributes", {})
            for name in m.translate_fields:
                value = out.get("attributes", {}).get(name[len("attributes."):]) if name.startswith("attributes.") else out.get(name)
                if value is not None:
                    attributes[f"{name.rsplit('.', 1)[-1]}_{language}"] = value
            self.translations += 1
            return None
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        return None

    def _records(self) -> Iterator[Record]:
        m = self.mapping
        quotes, by, first_row, skip, mixed = m.spreadsheet_quotes, m.group_by, m.first_row, m.skip_blank, self.mixed
        # Columns of skip_rows.equals the file lacks skip nothing: a family's variants name theirs by language.
        equals = [(c, v) for c, v in m.skip_equals if self.header is None or c in self.header]
        items, translate_by = m.items_column, m.translate_by
        group_key: Any = None
        group_line = 0
        group_values: dict[str, str] = {}
        group: tuple[dict, dict, list] = ({}, {}, [])
        parent_by, parent_groups = m.parent_by, m.parent_groups
        #: A parent row's name -> the cells its children take (WooCommerce: "id:12" or the SKU -> categories, tags ...).
        parents: dict[str, dict[str, str]] = {}
        #: The watches still without the line of their ambiguous cell, or a cell that settles them.
        unplaced = [w for _, w in self.watches]
        for record in self.reader:
            if record.error is not None:
                yield record
                continue
            values = record.values
            if self.header is None:  # JSON Lines: each record names its own columns
                values = {k: "" if v is None else str(v) for k, v in values.items()}
                problems = self._columns(list(values))
                if problems:
                    yield Mapped(record.line, None, record.raw, problems[0], problems)
                    continue
            if quotes:
                values = {k: _QUOTED.sub("", v, count=1) if v[:1] == "'" else v for k, v in values.items()}
            if parent_by is not None:
                self._parent(values, parent_by, parent_groups, parents)
            if by is not None:
                key = values.get(by, "").strip()
                if key and key == group_key:
                    if mixed:
                        values.update(group_values)  # the reader's own dict, not used after this
                else:
                    group_key, group_line = key, record.line
                    group_values = {c: values.get(c, "") for c in first_row} if mixed else {}
                    group = self._evaluate(self.group_plan, values, {}, {}, [])
            if translate_by is not None and (code := values.get(translate_by, "").strip()):
                out, problems = self._apply(values, group)
                yield _Translation(record.line, out, record.raw, None, problems, code=code, sources=self.translated_sources)
                continue
            if items is None:
                lines: Any = (values,)
            else:
                lines = self._lines(values)
                if isinstance(lines, str):  # a line that does not fit the pattern: the order is not read
                    yield Mapped(record.line, None, record.raw, (items, lines), [(items, lines)])
                    continue
            for values in lines:
                if ((skip and not any(values.get(c, "").strip() for c in skip))
                        or (equals and any(values.get(c, "").strip().lower() in v for c, v in equals))):
                    self.skipped[m.skip_reason] = self.skipped.get(m.skip_reason, 0) + 1
                    continue
                out, problems = self._apply(values, group)
                if unplaced:
                    unplaced = self._place(unplaced, record.line)
                if not problems:
                    # No empty list per record: a chunk of records waits for its write, and every container kept adds to GC work.
                    yield Mapped(record.line, out, record.raw, None, (), self.labels, self.final)
                    continue
                if group[2] and record.line != group_line:
                    # The group's cells are read from its first row: on a later row, say where the value is (a
                    # Shopify order's second line has no 'Created at' of its own to correct).
                    shared = set(group[2])
                    note = f" (read from line {group_line}, the first of the rows with the same {by!r})"
                    problems = [(f, m + note, k) if (f, m, k) in shared else (f, m, k) for f, m, k in problems]
                yield Mapped(record.line, out, record.raw, None, [(f, m) for f, m, _ in problems], self.labels, self.final,
                             frozenset(key for _, _, key in problems if key is not None))

    def _lines(self, values: dict[str, str]) -> list[dict[str, str]] | str:
        """One row per line of the order's lines cell (``items``), each line's parts in ``<column>.<group>``.

        An empty cell is an order without lines, counted; a line the pattern
        does not read is the problem returned, and none of the order's lines is read.
        """
        m = self.mapping
        column, pattern = m.items_column, m.items_pattern
        assert column is not None and pattern is not None
        cell = values.get(column, "")
        if not cell.strip():
            reason = f"orders without lines in {column}"
            self.skipped[reason] = self.skipped.get(reason, 0) + 1
            return []
        lines = []
        # Not trimmed: a line's trailing space may be part of it (Shopware's "1x " for a line of no product).
        for n, line in enumerate(cell.split(m.items_separator), 1):
            found = pattern.fullmatch(line)
            if found is None:
                return (f"line {n} of the cell, {_short(line)}, is not an order line as {m.file} reads them "
                        f"(the pattern {pattern.pattern!r})")
            lines.append({**values, **{f"{column}.{group}": part or "" for group, part in found.groupdict().items()}})
        self.extra_lines += len(lines) - 1
        return lines

    @staticmethod
    def _place(watches: list, line: int) -> list:
        """Put ``line`` to the ambiguous cell a watch just saw; the watches still to place."""
        left = []
        for w in watches:
            if w.fresh:
                w.line, w.fresh = line, False
            elif not w.settled and w.line is None:
                left.append(w)
        return left

    def ambiguities(self) -> list[tuple[int | None, str, str]]:
        """(line, column, problem) of each money column whose decimal mark the whole file left open.

        Its first cell like ``1.249`` reads as 1.249 with ``.`` and 1249 with
        ``,``, and no cell showed which: asked, not guessed.
        """
        out = []
        for column, w in self.watches:
            if w.ambiguous is None or w.settled:
                continue
            digits = re.sub(r"[^\d.,-]", "", w.ambiguous)
            dot, comma = (float(digits.replace(",", "")), float(digits.replace(".", "").replace(",", ".")))
            out.append((w.line, column,
                        f"{w.ambiguous!r} is {dot:g} if the decimal mark is '.' and {comma:g} if it is ','; no other "
                        "amount in the column shows which: name it with --decimal . or --decimal ,"))
        return out

    def apply(self, values: dict[str, str], group: tuple[dict, dict, list] = ({}, {}, [])
              ) -> tuple[dict[str, Any], list[tuple[str | None, str]]]:
        """The fields of one record and the problems of the cells that did not parse.

        ``group``: the fields, attributes and problems of the fields read
        from the group's first row (:meth:`_evaluate` of ``group_plan``).
        """
        out, problems = self._apply(values, group)
        return out, [(f, m) for f, m, _ in problems]

    def _apply(self, values: dict[str, str], group: tuple[dict, dict, list]) -> tuple[dict[str, Any], list[tuple]]:
        """:meth:`apply`, each problem also naming the field its cell would have filled (None: an attribute)."""
        fields, attributes, problems = group
        own_fields, own_attributes, own_problems = self._own(values)
        out = {**self.constants, **fields, **own_fields}
        attributes = {**self.constant_attributes, **attributes, **own_attributes}
        get = values.get
        for column in self.extra:
            raw = get(column, "").strip()
            if raw:
                attributes[snake(column)] = scalar(raw)
        if attributes:
            out["attributes"] = attributes
        if self.mapping.sale_below_price and (sale := out.get("sale_price")) is not None and (
                price := out.get("price")) is not None and sale >= price:
            # The shop charges the lower price: such a "sale" never applies, and an e-mail must not show it.
            for name in SALE_FIELDS:
                out.pop(name, None)
            self.sales_not_below += 1
        return out, [*problems, *own_problems]

    def _own(self, values: dict[str, str]) -> tuple[dict, dict, tuple]:
        """The outputs of the row's own cells, evaluated once per distinct combination of those cells.

        An order export repeats its line items (the same product, quantity
        and price on line after line): each combination is parsed once.
        """
        key = tuple(map(values.get, self.row_sources))
        made = self.rows.get(key)
        if made is None:
            if len(self.rows) >= _ROWS:
                self.rows.clear()
            out, attributes, problems = self._evaluate(self.plan, values, {}, {}, [])
            made = self.rows[key] = (out, attributes, tuple(problems))
        return made

    def _evaluate(self, plan: tuple[list, list], values: dict[str, str], out: dict, attributes: dict,
                  problems: list) -> tuple[dict, dict, list]:
        """Fill ``out`` and ``attributes`` with the outputs of ``plan``; cells that do not parse go to ``problems``.

        A problem is (the column or field that names it, the message, the field left empty or None for an attribute).
        """
        get = values.get
        columns, others = plan
        # Most outputs: one column into one field (a tight loop; this runs for every cell read).
        for source, parse, default, key, _label in columns:
            raw = (get(source) or default).strip() or default
            if raw:
                if parse is None:
                    out[key] = raw
                else:
                    try:
                        out[key] = parse(raw)
                    except FieldError as exc:
                        problems.append((source, str(exc), key))
        for how, source, parse, default, attribute, key, label in others:
            # A cell that does not parse is named by the export's column it came from (LAST_CHANGED,
            # not the mapping's fields.consent_at); a template's text by the mapping's field.
            named = label
            if how == 0:
                raw = get(source) or ""
                named = source
            elif how == 1:
                raw = ""
                for column in source:
                    raw = get(column, "")
                    if raw.strip():
                        named = column
                        break
            else:
                raw = self._fill(source, values)
            raw = raw.strip() or default
            if not raw:
                if parse is empty:  # the one parser whose value an empty cell has
                    (attributes if attribute else out)[key] = True
                continue
            if parse is None:
                value = raw
            else:
                try:
                    value = parse(raw)
                except FieldError as exc:
                    problems.append((named, str(exc), None if attribute else key))
                    continue
            if attribute:
                attributes[key] = value
            else:
                out[key] = value
        return out, attributes, problems

    def _parent(self, values: dict[str, str], by: str, groups: tuple[tuple[str, ...], ...],
                parents: dict[str, dict[str, str]]) -> None:
        """Fill a child row's empty cells from its parent row; remember a parent's cells under its names.

        The parent comes first in the file (WooCommerce exports by id, and a
        variation is made after its product); a child whose parent the file
        lacks keeps its own cells. A group of columns is taken whole, and only
        by a child that has none of them: a Shopware variant with a price of its
        own and no list price is not on sale, whatever its parent's list price.
        """
        reference = values.get(by, "").strip()
        if reference:
            inherited = parents.get(reference)
            if inherited:
                for group in groups:
                    if not any(values.get(c, "").strip() for c in group):
                        values.update((c, inherited[c]) for c in group if c in inherited)
            return
        kept = {c: values[c] for group in groups for c in group if values.get(c, "").strip()}
        if kept:
            for parts in self.mapping.parent_names:
                name = self._fill(parts, values)
                if name:
                    parents[name] = kept

    def _fill(self, parts: tuple[str, ...], values: dict[str, str]) -> str:
        """A template's text; empty when any placeholder is (no half-made URLs)."""
        pieces = []
        for i, part in enumerate(parts):
            if i % 2:
                value = (self.variables[part] if part in self.variables else values.get(part, "")).strip()
                if not value:
                    return ""
                pieces.append(value)
            else:
                pieces.append(part)
        return "".join(pieces)


@dataclass(slots=True)
class _Translation(Record):
    """A row that translates the product before it (``translations``): its fields, its cells' problems, its language's cell."""

    problems: Sequence[tuple] = ()
    code: str = ""
    sources: frozenset[str] = frozenset()


def _parent_sources(m: Mapping, taken: bool = True) -> list[str]:
    """The columns ``parent`` reads: the reference, the columns in the names, and (``taken``) the columns a child takes."""
    if m.parent_by is None:
        return []
    named = [p for parts in m.parent_names for p in parts[1::2] if p not in VARIABLES]
    return [m.parent_by, *named, *(m.parent_columns if taken else ())]


def _cached(parse: Parser | None, check: Parser) -> Parser:
    """The mapping's parser then the kind's check, remembered per distinct cell (failures are not)."""
    if parse is None:
        return remembered(check, _CELLS)
    plain = getattr(parse, "__wrapped__", parse)  # remembered here, after the check, not twice

    def parse_and_check(raw: str) -> Any:
        value = plain(raw)
        # None: the parser read the cell as no value (a lookup's null, a text's blank word), as an empty cell is.
        return None if value is None else check(value)

    return remembered(parse_and_check, _CELLS)


def snake(column: str) -> str:
    """``"Phone Number"`` -> ``phone_number``: an attribute name segments and templates can use.

    Letters of any language stay (``Lieblingsröstung`` -> ``lieblingsröstung``), so a merge
    field in German or Dutch keeps a name people can read; only what is no letter or digit
    becomes ``_``.
    """
    return re.sub(r"[\W_]+", "_", column).strip("_").lower() or column


def builtin_fits(header: list[str]) -> list[tuple[str, str]]:
    """(mapping, kind) of every built-in mapping that reads a file with ``header`` as it is."""
    out = []
    for name in builtin_names():
        for kind in KINDS:
            try:
                mapping = load_mapping(name, kind, header)
            except ValidationError:  # no such kind in this mapping, or no variant fits
                continue
            if not MappedReader(SimpleNamespace(name="", header=header), mapping)._columns(header):
                out.append((name, kind))
    return out
