"""Column mappings: a small YAML file that turns a shop's export into an import kind's fields.

A mapping renames columns, parses their values (times in the export's
format, yes/no, money, lists, slugs), sets constants, derives fields from
several columns, and drops columns on purpose. Nothing is dropped silently:
a column the mapping does not name is an error, unless the mapping drops it
or sends the rest to ``attributes`` (customers and products only).

>>> m = load_mapping("shopify", "customers")          # built-in, shipped with relmail
>>> m = load_mapping("maps/crm.yml", "customers")     # your own          # doctest: +SKIP

The format (every key but ``kind`` and ``columns`` is optional)::

    kind: customers                  # the import kind the mapping is for
    description: CRM export
    times: {format: "%d-%m-%Y %H:%M", timezone: Europe/Amsterdam}   # for every 'time'
    spreadsheet_quotes: true         # '0612345678 -> 0612345678 (ids a spreadsheet export protected)
    match: email                     # customers: an address already stored names the customer
    duplicates: {merge: true, prefer: created_at, latest: [attributes.last_active]}   # two rows of one address: one customer
    consent_no: opt-out              # customers: a "no" is an unsubscribe (a list's status), not an unticked box
    group: {by: Name, first_row: [Email, Created at]}   # rows of one order; fields only on its first row
    skip_rows: {blank: [Variant Price], reason: image rows}   # or equals: {E-mail: [demo@shop.example]}
    parent: {by: Parent, names: ["{SKU}", "id:{ID}"], columns: [Categories]}   # a child row's empty cells from its parent row
    items: {column: Items, separator: "|", pattern: '(?P<quantity>\\d+)x (?P<sku>.*)'}   # orders: one cell lists the lines
    translations: {by: store_view_code, fields: [name], languages: {german: de}}   # rows that translate the row before
    sale_below_price: true           # products: a sale price not below the price is no sale (the shop charges the lower)
    columns:
      Klantnummer: id
      E-mail: email
      Aangemeld: {to: created_at, parse: time}
      Laatste bezoek: {to: attributes.last_visit, parse: time, format: ["%Y-%m-%d %H:%M:%S", "%d-%m-%Y %H:%M"],
                       blank: ["0000-00-00 00:00:00"]}   # formats tried in order; words for no time
      Sale ends: {to: sale_ends_at, parse: time, end_of_day: true}   # "to 30/11", inclusive: 1 December 00:00
      Nieuwsbrief: {to: consent, parse: yes_no, true: [ja], false: [nee]}
      Partneraanbiedingen: {to: consent.partner-offers, parse: yes_no}   # one topic's consent
      Omzet: {to: attributes.revenue, parse: money, currency: EUR, decimal: ","}
      Opmerking: drop
    drop: ["Adres *"]                # more columns dropped on purpose (* and ? match)
    other_columns: attributes        # or: error (the default), drop
    refuse: "names no customer: export ... instead"   # a family's variant for an export it cannot import
    fields:                          # derived fields and constants
      locale: nl_NL
      url: "{brand.url}/products/{Handle}"
      id: {first: [Variant SKU, Handle]}

Errors name the mapping file, the line and the key, like every other input.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import Problem, ValidationError
from ..yaml_keys import compose, key_path, repeated_keys
from .schemas import KINDS, schema_for
from .values import PARSERS, Parser, make_time

#: Built-in mappings, one folder per source system, one file per kind (``<kind>[-variant].yml``).
BUILTIN_DIR = Path(__file__).parent / "mappings"

#: Fields a mapping may fill beyond the kind's own: consent and the suppression list, for customers.
SIDE_FIELDS = {"customers": ("consent", "consent_at", "suppress", "suppressed_at"),
               # The customer by address, for exports that name people that way (a mailing tool's activity).
               "events": ("email",)}
#: Fields whose times may lie in the future: a sale's start and end.
AHEAD = frozenset({"sale_starts_at", "sale_ends_at"})
#: ``consent.TOPIC`` (customers): the customer's consent for one topic, beside the global ``consent``.
TOPIC_CONSENT = "consent."
_TOPIC = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
#: Kinds whose unmapped columns may go into ``attributes``.
WITH_ATTRIBUTES = ("customers", "products")
#: Values a template may name besides columns: the project's brand.
VARIABLES = ("brand.url", "brand.name")

_TOP = ("kind", "description", "times", "spreadsheet_quotes", "match", "group", "skip_rows", "columns", "drop",
        "other_columns", "fields", "when_header_has", "when_file_named", "parent", "unknown_customers", "refuse", "items",
        "consent_no", "duplicates", "translations", "sale_below_price", "accounts")
_OPTIONS = ("to", "parse", "optional", "default") + tuple(sorted({o for _, opts in PARSERS.values() for o in opts}))
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


@dataclass(frozen=True)
class Output:
    """One field a mapping fills, and where it comes from (a column, the first of several, a template, a constant)."""

    target: str
    #: How problems name it: the source column, or ``fields.<target>``.
    label: str
    line: int | None
    column: str | None = None
    first: tuple[str, ...] = ()
    #: Alternating literal text and placeholder names.
    template: tuple[str, ...] | None = None
    constant: Any = None
    parse: Parser | None = None
    optional: bool = False
    #: Text used when the cell (or every column of ``first``) is empty.
    default: str | None = None

    @property
    def sources(self) -> tuple[str, ...]:
        """The columns this output reads."""
        if self.column is not None:
            return (self.column,)
        if self.template is not None:
            return tuple(p for p in self.template[1::2] if p not in VARIABLES)
        return self.first


@dataclass(frozen=True)
class Merge:
    """How two rows of one address make one customer (``duplicates: merge``).

    Where both rows give a field, the later row's value wins, unless only the earlier row gives
    ``prefer`` (WooCommerce's registered row, with its sign-up date, over the guest row); a field
    of ``latest`` keeps the later of the two values. The sign-up date is the earliest either gives,
    and an opt-out in either wins: :class:`~relmail.importers.writers.CustomersWriter` merges.
    """

    prefer: str | None = None
    latest: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mapping:
    """A validated mapping. :meth:`relmail.importers.mapped.MappedReader` applies it to a file."""

    #: The source it reads (``shopify``): the ``source`` of the consent records it writes.
    name: str
    file: str
    kind: str
    outputs: tuple[Output, ...]
    drop: tuple[str, ...] = ()
    other_columns: str = "error"
    spreadsheet_quotes: bool = False
    match: str | None = None
    #: ``duplicates: merge`` (customers with ``match: email``): rows of one address are merged into one customer.
    merge: Merge | None = None
    #: Customers: what a "no" of the consent column says without a date: ``not-opted-in`` (a shop's unticked box: no
    #: record where nothing is on record) or ``opt-out`` (a mailing list's unsubscribed status: an opt-out as of the import).
    consent_no: str = "not-opted-in"
    group_by: str | None = None
    first_row: tuple[str, ...] = ()
    skip_blank: tuple[str, ...] = ()
    #: ``skip_rows.equals``: (column, its values in lower case); a row with one of them in a column the file has is skipped.
    skip_equals: tuple[tuple[str, frozenset[str]], ...] = ()
    skip_reason: str = "rows skipped"
    when_header_has: tuple[str, ...] = ()
    #: For a variant picked by its columns: the file names (patterns) it may read without being named.
    when_file_named: tuple[str, ...] = ()
    #: ``parent``: the column naming a row's parent row, the templates that name a row, the columns a child takes.
    parent_by: str | None = None
    parent_names: tuple[tuple[str, ...], ...] = ()
    parent_columns: tuple[str, ...] = ()
    #: The same columns as the units a child takes: a column alone, or columns taken together only when the child
    #: has none of them (Shopware inherits a variant's price, gross and list price, as one).
    parent_groups: tuple[tuple[str, ...], ...] = ()
    #: Orders: skip (and count) the lines whose address no customer has, instead of refusing the file.
    skip_unknown_customers: bool = False
    #: Orders: whose account numbers ``account`` holds (``woocommerce``), the key of the links an import remembers
    #: (:mod:`relmail.importers.accounts`); a copy of a built-in mapping keeps it, so it finds the same links.
    accounts: str | None = None
    #: A variant that recognises an export it cannot import (no customer in it): why, and what to import instead.
    refuse: str | None = None
    #: Orders whose lines are listed in one cell (``items``): the column, the separator between lines, and the
    #: pattern of one line, whose named groups are read as columns ``<column>.<group>``.
    items_column: str | None = None
    items_separator: str = "|"
    items_pattern: re.Pattern | None = None
    #: ``translations`` (products): the column whose non-blank cell makes a row a translation of the row before it,
    #: the fields it translates, and the cell -> language where the cell is not itself a language code.
    translate_by: str | None = None
    translate_fields: tuple[str, ...] = ()
    translate_languages: dict[str, str] = field(default_factory=dict)
    #: Products: a sale price that is not below the price is no sale (Magento charges the lower of the two).
    sale_below_price: bool = False
    description: str | None = None
    #: Key path -> line in the mapping file, for errors found when it meets a file's header.
    lines: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def targets(self) -> frozenset[str]:
        return frozenset(o.target.split(".", 1)[0] for o in self.outputs) | (
            {"attributes"} if self.other_columns == "attributes" else set())

    @property
    def item_columns(self) -> tuple[str, ...]:
        """The columns one line of ``items`` gives: ``<column>.<group>`` for each named group of its pattern."""
        if self.items_pattern is None:
            return ()
        return tuple(f"{self.items_column}.{group}" for group in self.items_pattern.groupindex)

    def dropped(self, column: str) -> bool:
        return any(fnmatch.fnmatchcase(column, pattern) for pattern in self.drop)

    def line_of(self, path: str) -> int | None:
        return self.lines.get(path)


def load_mapping(spec: str, kind: str, header: list[str] | None = None, source: str | None = None,
                 decimal: str | None = None, timezone: str | None = None, time_format: str | None = None) -> Mapping:
    """The mapping ``spec`` names for ``kind``: a built-in (``shopify``, ``woocommerce``, ``mailchimp``, ``klaviyo``) or a YAML file.

    A built-in with several variants for a kind (Mailchimp's subscribed,
    unsubscribed and cleaned exports) picks the one whose ``when_header_has``
    columns are all in ``header``, the header of the file ``source``.
    ``decimal`` (``.`` or ``,``) is the decimal mark of every ``money``
    column whose mapping names none: a shop's export re-saved by a
    spreadsheet in a language that writes ``12,50``. ``timezone`` is the
    project's time zone: the zone of the times a mapping reads with
    ``timezone: project`` (a shop system that writes its own local time).
    ``time_format`` (strftime codes) replaces the mapping's ``times``
    format for every ``time`` column that names no format of its own: an
    export re-saved by a spreadsheet that writes ``14-03-2026 10:12``.
    """
    path = Path(spec)
    if path.suffix.lower() in (".yml", ".yaml") or path.exists():
        if not path.is_file():
            raise ValidationError(f"{spec}: no such mapping file", [Problem(spec, None, None, "no such mapping file")])
        return parse_mapping(path.read_text(encoding="utf-8"), str(path), kind, decimal=decimal, timezone=timezone,
                             time_format=time_format)
    return _builtin(spec, kind, header, source, decimal, timezone, time_format)


def builtin_names() -> list[str]:
    """The built-in mappings (folder names under :data:`BUILTIN_DIR`)."""
    return sorted(p.name for p in BUILTIN_DIR.iterdir() if p.is_dir())


def _builtin(spec: str, kind: str, header: list[str] | None, source: str | None = None, decimal: str | None = None,
             timezone: str | None = None, time_format: str | None = None) -> Mapping:
    name, _, variant = spec.partition("/")
    folder = BUILTIN_DIR / name
    if not re.fullmatch(r"[a-z0-9_-]+", name) or not folder.is_dir():
        raise ValidationError(f"unknown mapping {spec!r}", [Problem(
            spec, None, None, f"not a mapping file and not a built-in mapping (built-in: {', '.join(builtin_names())})")])
    every = sorted(folder.glob("*.yml"))
    if variant:
        files = [f for f in every if f.stem == variant]
    else:
        files = [f for f in every if f.stem == kind or f.stem.startswith(f"{kind}-")]
    if not files:
        have = ", ".join(f"{name}/{f.stem}" for f in every)
        raise ValidationError(f"the built-in mapping {spec!r} has no {kind} mapping",
                              [Problem(spec, None, None, f"no {kind} mapping here (built-in: {have})")])
    variants = [parse_mapping(f.read_text(encoding="utf-8"), f"{name}/{f.name}", kind, name=name, decimal=decimal, timezone=timezone,
                              time_format=time_format)
                for f in files]
    if len(variants) == 1 or header is None:
        return next((m for m in variants if not m.refuse), variants[0])
    have = set(header)
    fitting = [m for m in variants if set(m.when_header_has) <= have]
    if not fitting:
        others = [other for other in builtin_names() if other != name]
        hint = f"; is it another tool's export (built-in mappings: {', '.join(others)})?" if others else ""
        raise ValidationError(f"{source or 'the file'}: no variant of the built-in mapping {name!r} fits its header", [Problem(
            source or spec, 1, None,
            "; ".join(f"{m.file} needs the columns {', '.join(m.when_header_has)}" for m in variants) + hint)])
    # A variant whose status no column states (subscribed, non-subscribed) is told apart by the file's name.
    base = Path(source).name.lower() if source is not None else None
    if base is not None:
        named = [m for m in fitting if any(fnmatch.fnmatchcase(base, p.lower()) for p in m.when_file_named)]
        if named:
            return max(named, key=lambda m: len(m.when_header_has))
    # The most specific variant whose marker columns the file has (unsubscribed before subscribed).
    picked = max(fitting, key=lambda m: len(m.when_header_has))
    if picked.refuse:
        raise ValidationError(f"{source or 'the file'}: {picked.description or picked.file} cannot be imported; nothing imported",
                              [Problem(source or spec, 1, None, " ".join(picked.refuse.split()))])
    if picked.when_file_named and base is not None:
        # Mailchimp's subscribed file has no column saying so: the non-subscribed file, and an export of a segment
        # or of all contacts, have the same columns and hold people this variant would opt in.
        alike = [m for m in fitting if m.when_file_named and len(m.when_header_has) == len(picked.when_header_has)]
        names = " or ".join(p for m in alike for p in m.when_file_named)
        variants = " or ".join(f"--map {name}/{Path(m.file).stem}" for m in alike)
        raise ValidationError(
            f"{source}: its columns fit several variants of the built-in mapping {name!r}; nothing imported", [Problem(
                source, 1, None,
                f"no column says which ({', '.join(f'{name}/{Path(m.file).stem}' for m in alike)}), so the file's name "
                f"does, and it is not named {names}: an export of a segment or of all contacts has the same columns "
                "and may hold people who unsubscribed or never subscribed. Import the files of the audience export, "
                f"or name the variant that every row of the file is: {variants}")])
    return picked


def parse_mapping(text: str, file: str, kind: str | None = None, name: str | None = None, decimal: str | None = None,
                  timezone: str | None = None, time_format: str | None = None) -> Mapping:
    """Parse and validate a mapping's YAML; every problem names the file, line and key.

    ``name`` (default: the file's stem) is recorded as the ``source`` of the
    consent a customers mapping writes; ``decimal`` is the decimal mark of
    the ``money`` columns that name none, ``timezone`` the project's,
    ``time_format`` the format of the ``time`` columns that name none (see :func:`load_mapping`).
    """
    if decimal not in (None, ".", ","):
        raise ValueError(f"decimal must be '.' or ',', not {decimal!r}")
    data, lines = _compose(text, file)
    problems: list[Problem] = []

    def bad(path: str, message: str) -> None:
        problems.append(Problem(file, lines.get(path) or lines.get(path.rsplit(".", 1)[0]), path or None, message))

    if not isinstance(data, dict):
        raise ValidationError(f"{file}: invalid mapping", [Problem(file, 1, None, "a mapping file is a YAML mapping with kind and columns")])
    for key in data:
        if key not in _TOP:
            bad(key, f"unknown key '{key}' (known: {', '.join(_TOP)})")
    declared = data.get("kind")
    if declared not in KINDS:
        bad("kind", f"kind must be one of {', '.join(KINDS)}" + ("" if declared is None else f", not {declared!r}"))
        raise ValidationError(f"{file}: invalid mapping", problems)
    if kind is not None and declared != kind:
        bad("kind", f"the mapping is for {declared}, not {kind}")
    spec = _Spec(declared, file, lines, bad, _times(data.get("times"), bad), decimal, timezone, time_format)
    outputs: list[Output] = []
    refuse = data.get("refuse")
    if refuse is not None and (not isinstance(refuse, str) or not refuse.strip() or not data.get("when_header_has")):
        bad("refuse", "refuse is the reason a variant picked by when_header_has gives for not importing the file")
    # A refusing variant reads no column: its header markers are what it needs.
    columns = data.get("columns", {} if refuse else None)
    if not refuse and (not isinstance(columns, dict) or not columns):
        bad("columns", "columns must be a mapping of column names to fields")
        columns = {}
    drop = list(_strings(data.get("drop", []), "drop", bad))
    for column, value in columns.items():
        path = f"columns.{column}"
        if value == "drop":
            drop.append(column)
            continue
        out = spec.column(column, value, path)
        if out is not None:
            outputs.append(out)
    for target, value in _mapping(data.get("fields", {}), "fields", bad).items():
        out = spec.derived(target, value, f"fields.{target}")
        if out is not None:
            outputs.append(out)
    first_seen: dict[str, Output] = {}
    for out in outputs:
        if out.target in first_seen:
            other = first_seen[out.target]
            bad(_path_of(out), f"field '{out.target}' is filled twice (also by {other.label}, line {other.line})")
        first_seen.setdefault(out.target, out)
    other = data.get("other_columns", "error")
    if other not in ("error", "drop", "attributes"):
        bad("other_columns", "other_columns must be error, drop or attributes")
    elif other == "attributes" and declared not in WITH_ATTRIBUTES:
        bad("other_columns", f"{declared} have no attributes: map or drop every column")
    match = data.get("match")
    if match is not None and (declared != "customers" or match != "email"):
        bad("match", "match: email is the only match, and only for customers")
    consent_no = data.get("consent_no", "not-opted-in")
    if consent_no not in ("not-opted-in", "opt-out"):
        bad("consent_no", "consent_no must be not-opted-in (the default: a shop's unticked box) or opt-out (a list's "
                          "unsubscribed status)")
    elif consent_no == "opt-out" and declared != "customers":
        bad("consent_no", "consent_no is for customers")
    merge = _duplicates(data.get("duplicates", "error"), declared, match, spec.targets(), bad)
    unknown = data.get("unknown_customers", "error")
    if unknown not in ("error", "skip"):
        bad("unknown_customers", "unknown_customers must be error (the default) or skip")
    elif unknown == "skip" and declared != "orders":
        bad("unknown_customers", "unknown_customers is for orders")
    accounts = data.get("accounts")
    if accounts is not None and (not isinstance(accounts, str) or not accounts.strip() or len(accounts) > 100):
        bad("accounts", "accounts is the name of the shop whose account numbers the orders hold (at most 100 characters)")
    elif accounts is not None and declared != "orders":
        bad("accounts", "accounts is for orders")
    group = _mapping(data.get("group", {}), "group", bad)
    for key in group:
        if key not in ("by", "first_row"):
            bad(f"group.{key}", "group has 'by' (the column naming the group) and 'first_row' (columns read from its first row)")
    if group and not isinstance(group.get("by"), str):
        bad("group.by", "group needs 'by': the column that names the order or product of each row")
    skip = _mapping(data.get("skip_rows", {}), "skip_rows", bad)
    for key in skip:
        if key not in ("blank", "equals", "reason"):
            bad(f"skip_rows.{key}", "skip_rows has 'blank' (rows where these columns are all empty are not records), "
                                    "'equals' (rows with one of these values in a column are not records) and 'reason'")
    if skip and not skip.get("blank") and not skip.get("equals"):
        bad("skip_rows", "skip_rows needs 'blank' (the columns that are empty on the rows to skip) or 'equals' "
                         "(columns and the values the rows to skip have in them)")
    skip_equals = _skip_equals(_mapping(skip.get("equals", {}), "skip_rows.equals", bad), bad)
    parent = _mapping(data.get("parent", {}), "parent", bad)
    for key in parent:
        if key not in ("by", "names", "columns"):
            bad(f"parent.{key}", "parent has 'by' (the column naming a row's parent), 'names' (how a row is named there) "
                                 "and 'columns' (the cells a child row takes from its parent when its own are empty)")
    parent_names = tuple(tuple(_PLACEHOLDER.split(t)) for t in _strings(parent.get("names", []), "parent.names", bad))
    parent_groups = _column_groups(parent.get("columns", []), "parent.columns", bad)
    parent_columns = tuple(c for group in parent_groups for c in group)
    if parent and (not isinstance(parent.get("by"), str) or not parent_names or not parent_columns):
        bad("parent", "parent needs 'by', 'names' and 'columns'")
    if parent and declared not in WITH_ATTRIBUTES:
        bad("parent", "parent is for customers and products")
    items = _items(_mapping(data.get("items", {}), "items", bad), declared, bad)
    translate = _translations(_mapping(data.get("translations", {}), "translations", bad), declared,
                              {o.target for o in outputs}, bad)
    below = data.get("sale_below_price", False)
    if not isinstance(below, bool):
        bad("sale_below_price", "sale_below_price must be true or false")
    elif below and (declared != "products" or "sale_price" not in {o.target for o in outputs}):
        bad("sale_below_price", "sale_below_price is for products whose mapping fills sale_price")
    if problems:
        raise ValidationError(f"{file}: invalid mapping", problems)
    return Mapping(
        name=name or Path(file).stem,
        file=file,
        kind=declared,
        outputs=tuple(outputs),
        drop=tuple(drop),
        other_columns=other,
        spreadsheet_quotes=bool(data.get("spreadsheet_quotes", False)),
        match=match,
        merge=merge,
        consent_no=consent_no,
        group_by=group.get("by"),
        first_row=tuple(_strings(group.get("first_row", []), "group.first_row", bad)),
        skip_blank=tuple(_strings(skip.get("blank", []), "skip_rows.blank", bad)),
        skip_equals=skip_equals,
        skip_reason=str(skip.get("reason") or "rows skipped"),
        when_header_has=tuple(_strings(data.get("when_header_has", []), "when_header_has", bad)),
        when_file_named=tuple(_strings(data.get("when_file_named", []), "when_file_named", bad)),
        parent_by=parent.get("by"),
        parent_names=parent_names,
        parent_columns=parent_columns,
        parent_groups=parent_groups,
        skip_unknown_customers=unknown == "skip",
        accounts=accounts.strip() if isinstance(accounts, str) else None,
        refuse=refuse.strip() if isinstance(refuse, str) else None,
        items_column=items[0],
        items_separator=items[1],
        items_pattern=items[2],
        translate_by=translate[0],
        translate_fields=translate[1],
        translate_languages=translate[2],
        sale_below_price=below is True,
        description=str(data["description"]) if data.get("description") else None,
        lines=lines,
    )


def _duplicates(value: Any, kind: str, match: str | None, targets: tuple[str, ...], bad) -> Merge | None:
    """``duplicates``: ``error`` (the default), ``merge``, or ``{merge: true, prefer: FIELD, latest: [FIELDS]}``."""
    if value == "error":
        return None
    if value == "merge":
        value = {"merge": True}
    if not isinstance(value, dict) or value.get("merge") is not True:
        bad("duplicates", "duplicates must be error (the default), merge, or {merge: true, prefer: FIELD, latest: [FIELDS]}")
        return None
    for key in value:
        if key not in ("merge", "prefer", "latest"):
            bad(f"duplicates.{key}", "duplicates has 'merge', 'prefer' (the field whose row wins) and 'latest' "
                                     "(fields that keep the later value)")
    if kind != "customers" or match != "email":
        bad("duplicates", "duplicates: merge is for customers with match: email (one address, one customer)")
    prefer = value.get("prefer")
    latest = value.get("latest", [])
    fields = ([prefer] if prefer is not None else []) + (latest if isinstance(latest, list) else [latest])
    for name in fields:
        if not isinstance(name, str) or not (name in targets or name.startswith("attributes.")):
            bad("duplicates", f"{name!r} is not a field of {kind}: prefer and latest name fields (created_at, attributes.NAME)")
    return Merge(prefer=prefer if isinstance(prefer, str) else None,
                 latest=tuple(n for n in latest if isinstance(n, str)) if isinstance(latest, list) else ())


#: A language code as a store view may be named: ``de``, ``de_at``, ``pt-BR``.
LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(?:[_-][a-z0-9]{2,4})?", re.IGNORECASE)


def _translations(value: dict, kind: str, targets: set[str], bad) -> tuple[str | None, tuple[str, ...], dict[str, str]]:
    """``translations``: (the column marking a translation row, the fields it translates, its cells' languages)."""
    if not value:
        return None, (), {}
    for key in value:
        if key not in ("by", "fields", "languages"):
            bad(f"translations.{key}", "translations has 'by' (the column naming a row's language), 'fields' (what it "
                                       "translates) and 'languages' (a cell that is no language code -> its language)")
    by, fields, languages = value.get("by"), value.get("fields"), value.get("languages", {})
    if kind != "products":
        bad("translations", "translations is for products")
    if not isinstance(by, str) or not by:
        bad("translations.by", "translations needs 'by': the column that is empty on a product's own row and names "
                               "the language (or store view) on the rows that translate it")
    names = _strings(fields if fields is not None else [], "translations.fields", bad)
    if not names:
        bad("translations.fields", "translations needs 'fields': the fields a translation row gives (name, attributes.NAME)")
    for name in names:
        if name not in targets:
            bad("translations.fields", f"'{name}' is no field this mapping fills: translations name fields (name, "
                                       "attributes.NAME) that columns or fields fill")
    if not isinstance(languages, dict) or not all(
            isinstance(v, str) and LANGUAGE_CODE.fullmatch(v) for v in languages.values()):
        bad("translations.languages", "languages maps a cell to a language code (german: de, swiss: de_CH)")
        languages = {}
    return (by if isinstance(by, str) else None), tuple(names), {str(k): v for k, v in languages.items()}


def _items(items: dict, kind: str, bad) -> tuple[str | None, str, re.Pattern | None]:
    """``items``: (the column listing an order's lines, the separator between them, the pattern of one line)."""
    if not items:
        return None, "|", None
    for key in items:
        if key not in ("column", "separator", "pattern"):
            bad(f"items.{key}", "items has 'column' (the cell listing an order's lines), 'separator' (between two lines) "
                                "and 'pattern' (one line, its parts as named groups)")
    column, separator, pattern = items.get("column"), items.get("separator", "|"), items.get("pattern")
    if kind != "orders":
        bad("items", "items is for orders")
    if not isinstance(column, str) or not column:
        bad("items.column", "items needs 'column': the column whose cell lists the order's lines")
    if not isinstance(separator, str) or not separator:
        bad("items.separator", "the separator between two lines is a non-empty text")
    try:
        compiled = re.compile(pattern) if isinstance(pattern, str) else None
    except re.error as exc:
        bad("items.pattern", f"not a regular expression: {exc}")
        return None, "|", None
    if compiled is None or not compiled.groupindex:
        bad("items.pattern", "items needs 'pattern': a regular expression for one line whose named groups "
                             "((?P<quantity>\\d+)) are read as the columns <column>.<group>")
        return None, "|", None
    return (column if isinstance(column, str) else None), (separator if isinstance(separator, str) else "|"), compiled


def _path_of(out: Output) -> str:
    return out.label if out.label.startswith("fields.") else f"columns.{out.label}"


@dataclass
class _Spec:
    """What an entry of ``columns`` or ``fields`` may say, for one kind."""

    kind: str
    file: str
    lines: dict[str, int]
    bad: Any
    times: dict[str, Any]
    decimal: str | None = None
    #: The project's time zone, for ``timezone: project``.
    timezone: str | None = None
    #: Replaces ``times.format`` (``relmail import --time-format``).
    time_format: str | None = None

    def targets(self) -> tuple[str, ...]:
        return schema_for(self.kind).names + SIDE_FIELDS.get(self.kind, ())

    def target(self, name: Any, path: str) -> str | None:
        if not isinstance(name, str) or not name:
            self.bad(path, "expected the name of a field (or drop)")
            return None
        if name.startswith("attributes.") and self.kind in WITH_ATTRIBUTES and len(name) > len("attributes."):
            return name
        if name.startswith(TOPIC_CONSENT) and "consent" in SIDE_FIELDS.get(self.kind, ()):
            topic = name[len(TOPIC_CONSENT):]
            if not _TOPIC.fullmatch(topic) or topic == "*":
                self.bad(path, f"'{name}': a topic is lower-case letters, digits, '-' and '_' (consent.partner-offers); "
                               "the global consent is 'consent'")
                return None
            return name
        if name not in self.targets() or name == "attributes":
            extra = " or attributes.NAME" if self.kind in WITH_ATTRIBUTES else ""
            self.bad(path, f"unknown field '{name}' for {self.kind} (known: {', '.join(self.targets())}{extra})")
            return None
        return name

    def column(self, column: str, value: Any, path: str) -> Output | None:
        short = isinstance(value, str)  # "Email: email": a problem with the field is the column's own
        if short:
            value = {"to": value}
        if not isinstance(value, dict):
            self.bad(path, "expected a field name, drop, or {to: FIELD, parse: ...}")
            return None
        target = self.target(value.get("to"), path if short else f"{path}.to")
        parse = self.parser(value, path, target)
        if target is None or parse is False:
            return None
        return Output(target, column, self.lines.get(path), column=column, parse=parse, optional=bool(value.get("optional", False)),
                      default=_default(value))

    def derived(self, target_name: str, value: Any, path: str) -> Output | None:
        target = self.target(target_name, path)
        if isinstance(value, str):
            value = {"template": value}
        elif not isinstance(value, dict):
            value = {"value": value}
        ways = [k for k in ("first", "template", "value", "column") if k in value]
        if len(ways) != 1:
            self.bad(path, "a derived field has one of: first: [columns], template: \"{Column} text\", value: constant, column: NAME")
            return None
        how = ways[0]
        rest = {k: v for k, v in value.items() if k != how}
        parse = self.parser(rest, path, target)
        if target is None or parse is False:
            return None
        line, label, optional = self.lines.get(path), f"fields.{target}", bool(value.get("optional", False))
        if how == "first":
            names = list(_strings(value["first"], f"{path}.first", self.bad))
            if not names:
                self.bad(f"{path}.first", "first needs a list of columns")
                return None
            return Output(target, label, line, first=tuple(names), parse=parse, optional=optional, default=_default(value))
        if how == "column":
            return Output(target, label, line, column=str(value["column"]), parse=parse, optional=optional, default=_default(value))
        if how == "value":
            constant = value["value"]
            if parse is not None and constant is not None:
                try:
                    constant = parse(str(constant)) if not isinstance(constant, bool) else constant
                except Exception as exc:  # a FieldError: the constant does not parse
                    self.bad(f"{path}.value", str(exc))
                    return None
            return Output(target, label, line, constant=constant, optional=optional)
        template = str(value["template"])
        parts = tuple(_PLACEHOLDER.split(template))
        for name in parts[1::2]:
            if "." in name and name.startswith("brand.") and name not in VARIABLES:
                self.bad(f"{path}.template", f"unknown variable {{{name}}} (known: {', '.join(VARIABLES)})")
                return None
        if len(parts) == 1:  # no placeholders: a constant text
            return self.derived(target_name, {"value": template, **rest}, path)
        return Output(target, label, line, template=parts, parse=parse, optional=optional)

    def parser(self, value: dict, path: str, target: str | None) -> Parser | None | bool:
        """The parser an entry asks for (None: the kind's own check); False after reporting a problem."""
        for key in value:
            if key not in _OPTIONS and key not in ("template", "value", "first", "column"):
                self.bad(f"{path}.{key}", f"unknown option '{key}' (known: {', '.join(_OPTIONS)})")
                return False
        default = value.get("default")
        if default is not None and not str(default).strip():
            # A blank default is no default; refusing it keeps every mapped value non-blank.
            self.bad(f"{path}.default", "the default is blank: leave it out (an empty cell is a missing value)")
            return False
        name = value.get("parse")
        if name is None:
            name = {"consent": "yes_no", "consent_at": "time", "suppressed_at": "time"}.get(target or "")
            if name is None and target and target.startswith(TOPIC_CONSENT):
                name = "yes_no"
            if name is None and target and target.startswith("attributes."):
                name = "scalar"
        if name is None:
            stray = [k for k in value if k not in ("to", "optional", "default", "template", "value", "first", "column")]
            if stray:
                self.bad(f"{path}.{stray[0]}", f"'{stray[0]}' is an option of a parser: add parse: NAME")
                return False
            return None
        if name not in PARSERS:
            self.bad(f"{path}.parse", f"unknown parser '{name}' (known: {', '.join(PARSERS)})")
            return False
        factory, allowed = PARSERS[name]
        options = {k: v for k, v in value.items() if k in allowed}
        for key in value:
            if key in _OPTIONS and key not in ("to", "parse", "optional", "default") and key not in allowed:
                self.bad(f"{path}.{key}", f"'{key}' is not an option of {name} (options: {', '.join(allowed) or 'none'})")
                return False
        own_format = "format" in options
        if name == "time":
            options = {**self.times, **options}
            if self.time_format and not own_format:
                options["format"] = self.time_format
        if name == "money" and self.decimal and "decimal" not in options:
            options["decimal"] = self.decimal
        try:
            if name == "time":
                zone = options.get("timezone")
                if zone == "project":
                    # The shop's own local time: the project's zone (relmail.toml). Without a project the
                    # times have no zone, and each one says so.
                    zone = self.timezone
                parse_time = make_time(options.get("format"), zone, suggest=not own_format, blank=options.get("blank", ()),
                                       ahead=target in AHEAD, end_of_day=options.get("end_of_day", False))
                if target is not None and target.startswith("attributes."):
                    # Attributes are stored as JSON, which has no time: the ISO 8601 text, in UTC as every stored time.
                    return lambda value: None if (when := parse_time(value)) is None else when.isoformat()
                return parse_time
            return factory(**options)
        except (ValueError, TypeError) as exc:
            self.bad(path, str(exc))
            return False


def _default(value: dict) -> str | None:
    default = value.get("default")
    return None if default is None else str(default)


def _times(value: Any, bad) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or any(k not in ("format", "timezone") for k in value):
        bad("times", "times has 'format' (strftime codes, e.g. \"%Y-%m-%d %H:%M:%S\") and 'timezone'")
        return {}
    return value


def _mapping(value: Any, path: str, bad) -> dict:
    if not isinstance(value, dict):
        bad(path, "expected a mapping")
        return {}
    return value


def _skip_equals(equals: dict, bad) -> tuple[tuple[str, frozenset[str]], ...]:
    """``skip_rows.equals`` as (column, lower-case values): compared without regard to case or surrounding spaces."""
    out = []
    for column, values in equals.items():
        listed = [values] if isinstance(values, str) else values
        if not isinstance(listed, list) or not listed or not all(isinstance(v, str) for v in listed):
            bad(f"skip_rows.equals.{column}", "expected the values (a list of texts) that mark a row to skip")
            continue
        out.append((str(column), frozenset(v.strip().lower() for v in listed)))
    return tuple(out)


def _strings(value: Any, path: str, bad):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        bad(path, "expected a list of column names")
        return []
    return value


def _column_groups(value: Any, path: str, bad) -> tuple[tuple[str, ...], ...]:
    """``parent.columns``: column names, each alone or in a list of columns a child takes together."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(v, str) or (isinstance(v, list) and v and all(isinstance(c, str) for c in v))
                                       for v in value):
        return tuple((v,) if isinstance(v, str) else tuple(v) for v in value)
    bad(path, "expected a list of column names, each alone or in a list of columns a child row takes together")
    return ()


def _compose(text: str, file: str) -> tuple[Any, dict[str, int]]:
    """The YAML's data and the line of every key path (``columns.Email``); a repeated key is an error.

    Built here rather than by :func:`relmail.yaml_keys.data_of`: a mapping's keys are read as
    written (``Email``, ``1``, ``yes``: column names), never as YAML numbers or booleans.
    """
    try:
        root = compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ValidationError(f"{file}: invalid YAML", [Problem(file, mark.line + 1 if mark else None, None,
                                                               f"invalid YAML: {getattr(exc, 'problem', exc)}")]) from None
    lines: dict[str, int] = {}
    problems = repeated_keys(root, file, key_path)
    constructor = yaml.SafeLoader("")

    def build(node, path: str) -> Any:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key, value in node.value:
                name = str(key.value)
                sub = f"{path}.{name}" if path else name
                lines.setdefault(sub, key.start_mark.line + 1)
                out[name] = build(value, sub)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        try:
            return constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:  # an unknown !tag, a bad timestamp ...
            problems.append(Problem(file, node.start_mark.line + 1, path or None, f"invalid YAML: {getattr(exc, 'problem', exc)}"))
            return None

    data = build(root, "") if root is not None else None
    if problems:
        raise ValidationError(f"{file}: invalid mapping", problems)
    return data, lines
