"""Column mappings: the YAML format's validation (file:line:field), the value parsers, the header check.

Properties (hypothesis) for the parsers a shop's export goes through: times
in strftime formats (the fast ISO path must agree with ``strptime``),
money in either decimal convention, yes/no, lists, slugs; and for the
mapping parser itself: any text is either a mapping or a ValidationError
naming the line of the bad key.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime, timedelta, timezone

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from relmail.errors import ValidationError
from relmail.importers.fields import FieldError, time_zone
from relmail.importers.mapped import MappedReader, snake
from relmail.importers.mapping import builtin_names, load_mapping, parse_mapping
from relmail.importers.readers import Record
from relmail.importers.schemas import schema_for
from relmail.importers.values import PARSERS, make_list, make_money, make_slug, make_time, make_yes_no

PROPS = settings(max_examples=200, deadline=None)

offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
instants = st.builds(lambda naive, zone: naive.replace(tzinfo=UTC).astimezone(zone),
                     st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2025, 12, 31)), offsets)


@PROPS
@given(when=instants, fmt=st.sampled_from(["%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S%z", "%Y-%m-%dT%H:%M:%S%z"]))
def test_a_time_in_an_offset_format_parses_to_the_same_instant_as_strptime(when, fmt):
    text = when.replace(microsecond=0).strftime(fmt)
    parsed = make_time(fmt, None)(text)
    assert parsed == datetime.strptime(text, fmt)  # the ISO fast path agrees with strptime
    assert parsed == when.replace(microsecond=0) and parsed.tzinfo is UTC  # the same instant, as the store keeps it


@PROPS
@given(when=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2025, 12, 31)),
       fmt=st.sampled_from(["%Y-%m-%d %H:%M:%S", "%d-%m-%Y %H:%M", "%d/%m/%Y", "%m/%d/%Y %I:%M %p"]))
def test_a_time_without_offset_takes_the_mappings_zone_and_is_refused_without_one(when, fmt):
    text = when.strftime(fmt)
    expected = datetime.strptime(text, fmt).replace(tzinfo=UTC)
    assert make_time(fmt, "UTC")(text) == expected
    with pytest.raises(FieldError, match="no time zone"):
        make_time(fmt, None)(text)


@PROPS
@given(when=st.datetimes(min_value=datetime(1980, 1, 1), max_value=datetime(2025, 12, 31)),
       zone=st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Tokyo"]))
def test_a_local_time_is_the_instant_that_wall_clock_showed_or_refused_when_it_never_showed(when, zone):
    """Any naive time in a mapping's zone: the parsed instant shows that wall-clock time there (the first of two
    when the clocks went back), or the time never happened there (the clocks skipped it) and is refused."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(zone)
    wall = when.replace(microsecond=0)
    parse = make_time("%Y-%m-%d %H:%M:%S", zone)
    shown = {utc.astimezone(tz).replace(tzinfo=None) == wall
             for utc in (wall.replace(tzinfo=tz, fold=f).astimezone(UTC) for f in (0, 1))}
    if shown == {False}:  # neither reading shows this wall-clock time there: it never happened
        with pytest.raises(FieldError, match=f"never happened in {zone}"):
            parse(wall.strftime("%Y-%m-%d %H:%M:%S"))
        return
    parsed = parse(wall.strftime("%Y-%m-%d %H:%M:%S"))
    assert parsed.astimezone(tz).replace(tzinfo=None) == wall
    # Of two instants with this wall-clock time, the earlier.
    assert parsed == min(wall.replace(tzinfo=tz, fold=f).astimezone(UTC) for f in (0, 1))


def test_the_hour_the_clocks_skip_is_refused_and_the_hour_they_repeat_is_read_as_its_first():
    berlin = make_time("%d.%m.%Y %H:%M", "Europe/Berlin")
    with pytest.raises(FieldError, match=r"'29.03.2026 02:30' never happened in Europe/Berlin: the clocks skipped that hour"):
        berlin("29.03.2026 02:30")
    assert berlin("29.03.2026 03:00") == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert berlin("25.10.2026 02:30") == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # summer time, the first 02:30
    assert berlin("25.10.2026 03:30") == datetime(2026, 10, 25, 2, 30, tzinfo=UTC)


def test_a_placeholder_or_far_future_time_is_refused_as_any_import_refuses_it():
    shopify = make_time("%Y-%m-%d %H:%M:%S %z", None)
    for bad in ("0001-01-01 00:00:00 +0000", "9999-12-31 23:59:59 +0000", "1899-12-31 23:00:00 +0100"):
        with pytest.raises(FieldError, match="implausible time"):
            shopify(bad)


def test_shopifys_plus_0100_and_mailchimps_utc_times():
    shopify = make_time("%Y-%m-%d %H:%M:%S %z", None)
    assert shopify("2026-03-14 10:12:31 +0100") == datetime(2026, 3, 14, 9, 12, 31, tzinfo=UTC)
    assert shopify("2026-06-07 13:25:10 +0200") == datetime(2026, 6, 7, 11, 25, 10, tzinfo=UTC)
    mailchimp = make_time("%Y-%m-%d %H:%M:%S", "UTC")
    assert mailchimp("2026-10-28 21:40:10") == datetime(2026, 10, 28, 21, 40, 10, tzinfo=UTC)
    with pytest.raises(FieldError, match="is not in the format"):
        shopify("14-03-2026 10:12")
    amsterdam = make_time("%d-%m-%Y %H:%M", "Europe/Amsterdam")
    assert amsterdam("01-07-2026 12:00") == datetime(2026, 7, 1, 10, 0, tzinfo=UTC)  # summer time, from the zone's rules


@settings(max_examples=200, deadline=None)
@given(day=st.integers(1, 31), month=st.integers(1, 12), year=st.integers(1950, 2025),
       fmt=st.sampled_from(["%d.%m.%Y %H:%M", "%d/%m/%Y", "%m/%d/%Y %H:%M"]))
def test_a_local_date_that_fits_the_format_but_not_the_calendar_says_so(day, month, year, fmt):
    import calendar

    parse = make_time(fmt, "Europe/Berlin")
    text = fmt.replace("%d", f"{day:02d}").replace("%m", f"{month:02d}").replace("%Y", str(year)).replace("%H:%M", "09:30")
    if day <= calendar.monthrange(year, month)[1]:
        assert parse(text).astimezone(timezone(timedelta(hours=0))).date() in (
            datetime(year, month, day).date(), (datetime(year, month, day) - timedelta(days=1)).date())
        return
    with pytest.raises(FieldError) as caught:  # 31.02.: the shape is right, the day is not
        parse(text)
    message = str(caught.value)
    assert message.startswith(f"'{text}' is no real date or time (day is out of range for month)")
    assert f"expected in the format {fmt!r} (e.g. " in message


def test_a_time_error_shows_what_the_format_looks_like_and_what_is_left_over():
    parse = make_time("%d.%m.%Y %H:%M", "Europe/Berlin")
    with pytest.raises(FieldError) as caught:
        parse("2026-02-01")
    assert str(caught.value) == "'2026-02-01' is not in the format '%d.%m.%Y %H:%M' (e.g. 14.03.2026 10:12)"
    with pytest.raises(FieldError) as caught:
        parse("14.03.2025 10:12:31")
    assert "has more than the format reads (':31' left over)" in str(caught.value)
    with pytest.raises(FieldError, match=r"\(e\.g\. 12,50 or € 12,50\)"):
        make_money(None, decimal=",")("abc")


@st.composite
def amounts(draw):
    cents = draw(st.integers(min_value=-10**11, max_value=10**11))
    decimal = draw(st.sampled_from([".", ","]))
    group = "," if decimal == "." else "."
    grouping = draw(st.sampled_from(["", group, " ", "'"]))
    whole = f"{abs(cents) // 100:,}".replace(",", grouping) if grouping else str(abs(cents) // 100)
    text = f"{whole}{decimal}{abs(cents) % 100:02d}"
    sign = "-" if cents < 0 else ""
    mark = draw(st.sampled_from(["", "€", "€ ", " EUR", "EUR "]))
    text = f"{mark}{sign}{text}" if mark in ("€", "€ ", "EUR ") else f"{sign}{text}{mark}"
    return text, cents / 100, decimal


@PROPS
@given(case=amounts())
def test_money_in_either_decimal_convention_with_or_without_the_currency(case):
    text, value, decimal = case
    assert make_money("EUR", decimal)(text) == pytest.approx(value, abs=1e-9)
    assert make_money(None, decimal)(text) == pytest.approx(value, abs=1e-9)


@PROPS
@given(case=amounts())
def test_money_in_another_currency_than_the_mapping_names_is_refused(case):
    text, value, decimal = case
    if "€" in text or "EUR" in text:
        with pytest.raises(FieldError, match="the mapping expects USD"):
            make_money("USD", decimal)(text)


def test_money_refuses_what_it_cannot_read_unambiguously():
    money = make_money(None, ".")
    assert money("1,234.50") == 1234.5 and money("$12") == 12.0 and money("12.50 EUR") == 12.5
    for bad in ("12,5", "1.234,50", "twelve", "€ 12 $", "1,23,456.00"):
        with pytest.raises(FieldError):
            money(bad)
    assert make_money(None, ",")("1.234,50") == 1234.5


@st.composite
def column_cells(draw):
    """A money column as an export writes it: whole amounts grouped with '.' or ',' (1.249, 12.345.678), plain
    ones (85) and amounts with cents (12.50, 1,249.00); and whether a cell shows the decimal mark."""
    cells, shows = [], False
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["grouped", "plain", "cents"]))
        euros = draw(st.integers(1000, 99_999_999) if kind == "grouped" else st.integers(0, 999_999))
        if kind == "grouped":
            # A mark twice is a group, so the decimal mark is the other one: 1,000,000 shows '.'
            # (and 1.000.000 shows ',', an error with '.' that names --decimal).
            many = euros >= 1_000_000
            cells.append(f"{euros:,}".replace(",", "," if many else draw(st.sampled_from([".", ","]))))
            shows = shows or many
        elif kind == "plain":
            cells.append(str(euros))
        else:
            cents = draw(st.integers(0, 99))
            cells.append(f"{euros:,}.{cents:02d}" if draw(st.booleans()) else f"{euros}.{cents:02d}")
            shows = True
    return cells, shows


@PROPS
@given(case=column_cells())
def test_a_money_column_without_a_named_mark_is_open_exactly_when_a_cell_reads_two_ways_and_none_shows_the_mark(case):
    cells, shows = case
    money = make_money(None)
    for cell in cells:
        money(cell)
    assert money.watch.settled == shows
    if not shows:
        either_way = [c for c in cells if re.fullmatch(r"[1-9]\d{0,2}[.,]\d{3}", c)]
        # The first of them, for the error to name its line; none: every cell reads one way (85, 0).
        assert money.watch.ambiguous == (either_way[0] if either_way else None)
    # A named mark reads the same cells with no watch: the user said which.
    assert make_money(None, ",").watch is None and make_money(None, ".").watch is None


@PROPS
@given(address=st.emails(), prefix=st.sampled_from(["", "crm-", "klaviyo-"]))
def test_a_pseudonym_is_one_id_per_address_in_any_case_and_does_not_spell_it(address, prefix):
    made = PARSERS["pseudonym"][0](prefix=prefix)
    one = made(address)
    assert one == made(f"  {address.upper()} ") == made(address.swapcase())
    assert re.fullmatch(re.escape(prefix) + "[0-9a-f]{16}", one)  # no '@', no domain: nothing of the address
    assert PARSERS["pseudonym"][0](prefix=prefix)("Anna.deVries@mail.example") == prefix + "228d0b665abe7d86"


def test_money_in_parentheses_is_negative_as_an_accounting_format_writes_it():
    """Excel's accounting format writes -3.00 as (3,00) or (€ 3,00); it was refused as 'names two currencies'."""
    money = make_money("EUR", ",")
    assert money("(3,00)") == -3.0 and money("(€ 1.234,50)") == -1234.5 and money("(-3,00)") == -3.0
    with pytest.raises(FieldError, match="not an amount of money"):
        money("()")


@PROPS
@given(items=st.lists(st.text(alphabet=st.characters(blacklist_characters=',"', blacklist_categories=("Cs",)), min_size=1)
                      .map(str.strip).filter(bool), max_size=6))
def test_a_list_cell_splits_into_its_trimmed_items_once_each(items):
    assert make_list(",")(", ".join(items)) == list(dict.fromkeys(items))
    assert make_list(",")(",".join(f'"{i}"' for i in items)) == list(dict.fromkeys(items))  # Mailchimp's TAGS


@PROPS
@given(items=st.lists(st.text(alphabet=st.characters(blacklist_characters='"', blacklist_categories=("Cs", "Cc")), min_size=1)
                      .map(str.strip).filter(bool), max_size=6))
def test_a_quoted_list_item_keeps_the_commas_inside_it(items):
    # Mailchimp writes TAGS as "Kaffee, Bio","VIP": a tag with a comma is one tag, not two.
    assert make_list(",")(",".join(f'"{i}"' for i in items)) == list(dict.fromkeys(items))


@PROPS
@given(zone=st.sampled_from(sorted(zoneinfo.available_timezones())), case=st.sampled_from([str.lower, str.upper, str.title]))
def test_a_time_zone_in_any_case_is_that_zone_as_the_database_spells_it(zone, case):
    # Mailchimp's TIMEZONE column says "america/new_york": one such row must not refuse the file.
    assert time_zone(case(zone)) == zone


@PROPS
@given(name=st.text(min_size=1))
def test_a_slug_is_an_id_and_a_slug_of_a_slug_is_itself(name):
    slug = make_slug()
    try:
        once = slug(name)
    except FieldError:
        return  # nothing to make an id from
    assert once and set(once) <= set("abcdefghijklmnopqrstuvwxyz0123456789-") and slug(once) == once


def test_slug_of_shopifys_product_category_takes_the_last_step():
    assert make_slug(">")("Media > Books > Print Books") == "print-books"
    assert make_slug()("Literaire roman") == "literaire-roman" and make_slug()("Poëzie") == "poezie"


def test_a_slug_spells_out_letters_unicode_does_not_decompose():
    # A German shop's product types: "Größe" must not become "groe", "Süßwaren" not "suwaren".
    assert make_slug()("Größe") == "grosse"
    assert make_slug()("Süßwaren & Gebäck") == "susswaren-geback"
    assert make_slug()("Smørrebrød") == "smorrebrod" and make_slug()("Œuvres") == "oeuvres"


@PROPS
@given(words=st.lists(st.text(alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd")), min_size=1), min_size=1,
                      max_size=4))
def test_an_attribute_name_from_a_column_keeps_every_letter_and_digit(words):
    # "Lieblingsröstung" (a Mailchimp merge field) must not become "lieblingsr_stung".
    column = " ".join(words)
    name = snake(column)
    assert name.replace("_", "") == column.replace(" ", "").lower()


def test_yes_no_with_the_mappings_own_words():
    yn = make_yes_no(("ja", "J"), ("nee",))
    assert (yn("JA"), yn(" j "), yn("nee")) == (True, True, False)
    with pytest.raises(FieldError, match="neither yes nor no"):
        yn("yes")


# -- the mapping file -------------------------------------------------------------------------------

GOOD = """\
kind: customers
description: a CRM export
times: {format: "%d-%m-%Y", timezone: Europe/Amsterdam}
columns:
  Klantnummer: id
  E-mail: email
  Aangemeld: {to: created_at, parse: time}
  Nieuwsbrief: {to: consent, parse: yes_no, true: [ja], false: [nee]}
  Omzet: {to: attributes.revenue, parse: money, currency: EUR, decimal: ","}
  Opmerking: drop
drop: ["Adres *"]
fields:
  locale: nl_NL
"""


def test_a_good_mapping_parses():
    m = parse_mapping(GOOD, "crm.yml", "customers")
    assert (m.kind, m.name) == ("customers", "crm")
    assert [o.target for o in m.outputs] == ["id", "email", "created_at", "consent", "attributes.revenue", "locale"]
    assert m.dropped("Opmerking") and m.dropped("Adres 2") and not m.dropped("Adresboek")


BAD_MAPPINGS = [
    # (change to GOOD, line, field, message fragment)
    (("  E-mail: email", "  E-mail: emial"), 6, "columns.E-mail", "unknown field 'emial'"),
    (("{to: created_at, parse: time}", "{to: created_at, parse: tijd}"), 7, "columns.Aangemeld.parse", "unknown parser 'tijd'"),
    (("currency: EUR, ", "currency: EUR, sep: x, "), 9, "columns.Omzet.sep", "unknown option 'sep'"),
    (("kind: customers", "kind: clients"), 1, "kind", "kind must be one of"),
    (("  Opmerking: drop", "  Opmerking: drop\n  Klantnummer: id"), 11, "columns.Klantnummer", "appears twice (also on line 5)"),
    (("  locale: nl_NL", "  locale: nl_NL\n  id: \"{Klantnummer}\""), 14, "fields.id", "filled twice (also by Klantnummer, line 5)"),
    (("drop: [\"Adres *\"]", "drop: [\"Adres *\"]\nother_columns: everything"), 12, "other_columns", "error, drop or attributes"),
    (("times: {format: \"%d-%m-%Y\", timezone: Europe/Amsterdam}", "times: {format: \"%d-%m-%Y\", timezone: Europe/Amsterdm}"),
     7, "columns.Aangemeld", "unknown time zone"),
    (("  locale: nl_NL", "  attributes.site: \"{brand.website}/x\""), 13, "fields.attributes.site.template",
     "unknown variable {brand.website}"),
    (("description: a CRM export", "descriptoin: a CRM export"), 2, "descriptoin", "unknown key 'descriptoin'"),
    (("  Opmerking: drop", "  Opmerking: {drop: true}"), 10, "columns.Opmerking.drop", "unknown option 'drop'"),
    (("{to: attributes.revenue, parse: money", "{to: attributes.revenue, format: x, parse: money"), 9, "columns.Omzet.format",
     "'format' is not an option of money"),
    (("{to: created_at, parse: time}", "{to: created_at, parse: time, default: \" \"}"), 7, "columns.Aangemeld.default",
     "the default is blank"),
]


def test_a_mapping_whose_aliases_expand_past_reason_is_refused():
    bomb = "".join(f"x{i}: &x{i} [*x{i - 1}, *x{i - 1}]\n" for i in range(1, 19)).replace("[*x0, *x0]", "[a, b]")
    with pytest.raises(ValidationError, match=r"invalid YAML") as caught:
        parse_mapping(GOOD + bomb, "m.yml")
    assert "expand it to more than 100,000 values" in str(caught.value.problems[0])


@pytest.mark.parametrize("change,line,field,fragment", BAD_MAPPINGS, ids=[b[3][:30] for b in BAD_MAPPINGS])
def test_a_bad_mapping_names_file_line_and_field(change, line, field, fragment):
    old, new = change
    assert old in GOOD
    with pytest.raises(ValidationError) as caught:
        parse_mapping(GOOD.replace(old, new), "maps/crm.yml", "customers")
    problems = [(p.file, p.line, p.field) for p in caught.value.problems]
    assert ("maps/crm.yml", line, field) in problems, caught.value.problems
    assert any(fragment in p.message for p in caught.value.problems), caught.value.problems


def test_a_mapping_for_another_kind_and_attributes_for_orders_are_refused():
    with pytest.raises(ValidationError, match="invalid mapping") as caught:
        parse_mapping(GOOD, "crm.yml", "products")
    assert "the mapping is for customers, not products" in str(caught.value)
    orders = "kind: orders\ncolumns:\n  Id: order_id\n  Total: attributes.total\nother_columns: attributes\n"
    with pytest.raises(ValidationError) as caught:
        parse_mapping(orders, "o.yml", "orders")
    assert {p.field for p in caught.value.problems} == {"columns.Total", "other_columns"}


@PROPS
@given(text=st.text(max_size=300))
def test_any_text_is_a_mapping_or_a_validation_error(text):
    try:
        parse_mapping(text, "m.yml", "customers")
    except ValidationError as exc:
        assert exc.problems and all(p.file == "m.yml" for p in exc.problems)


targets = st.sampled_from(["first_name", "last_name", "locale", "timezone", "created_at"])
columns = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghij", min_size=1, max_size=12).map(str.strip).filter(
    lambda c: c and c not in ("Id", "Mail"))


@PROPS
@given(names=st.lists(columns, min_size=1, max_size=5, unique=True), fields=st.lists(targets, min_size=1, max_size=5, unique=True),
       bad=st.data())
def test_a_mapping_written_as_yaml_reads_back_and_a_wrong_field_is_found_on_its_line(names, fields, bad):
    pairs = dict(zip(["Id", "Mail", *names], ["id", "email", *fields]))
    text = yaml.safe_dump({"kind": "customers", "columns": pairs}, sort_keys=False, allow_unicode=True)
    mapping = parse_mapping(text, "m.yml", "customers")
    assert {o.column: o.target for o in mapping.outputs} == pairs
    wrong = bad.draw(st.sampled_from(list(pairs)))
    broken = yaml.safe_dump({"kind": "customers", "columns": {**pairs, wrong: "nope"}}, sort_keys=False, allow_unicode=True)
    with pytest.raises(ValidationError) as caught:
        parse_mapping(broken, "m.yml", "customers")
    (problem,) = caught.value.problems
    key = yaml.safe_dump(wrong).split("\n")[0] + ":"  # as YAML writes the key (quoted where it must be)
    line = next(i for i, row in enumerate(broken.splitlines(), 1) if row.strip().startswith(key))
    assert (problem.line, problem.field) == (line, f"columns.{wrong}")


class _Reader:
    """A stand-in CSV reader: a header and no records (the header check needs no file)."""

    name, header_line = "export.csv", 1

    def __init__(self, header):
        self.header = header

    def __iter__(self):
        return iter(())


def test_every_column_is_mapped_dropped_or_sent_to_attributes_on_purpose():
    mapping = parse_mapping(GOOD, "crm.yml", "customers")
    header = ["Klantnummer", "E-mail", "Aangemeld", "Nieuwsbrief", "Omzet", "Opmerking", "Adres 1", "Lievelingskleur"]
    assert MappedReader(_Reader(header), mapping).check_header() == [
        ("Lievelingskleur", "column 'Lievelingskleur' is not in the mapping crm.yml: map it, list it under drop, or set other_columns")]
    assert MappedReader(_Reader(header), parse_mapping(GOOD + "other_columns: drop\n", "crm.yml")).check_header() == []
    attributes = MappedReader(_Reader(header), parse_mapping(GOOD + "other_columns: attributes\n", "crm.yml"))
    assert attributes.check_header() == [] and attributes.extra == ["Lievelingskleur"]
    missing = MappedReader(_Reader(header[1:-1]), mapping).check_header()
    assert missing == [("Klantnummer", "column 'Klantnummer' that the mapping reads (crm.yml:5) is not in the file")]


def test_the_built_in_mappings_load_for_their_kinds_and_pick_the_mailchimp_variant_by_header():
    assert builtin_names() == ["klaviyo", "magento", "mailchimp", "prestashop", "shopify", "shopware", "woocommerce"]
    for name in ("shopify", "woocommerce"):
        for kind in ("customers", "products", "orders"):
            assert load_mapping(name, kind).kind == kind
    common = ["Email Address", "First Name", "Last Name", "MEMBER_RATING", "LEID"]
    assert load_mapping("mailchimp", "customers", common, "subscribed_members_export_1a2b.csv").file == \
        "mailchimp/customers-subscribed.yml"
    assert load_mapping("mailchimp", "customers", common, "nonsubscribed_email_audience_export_1a2b.csv").file == \
        "mailchimp/customers-nonsubscribed.yml"
    assert load_mapping("mailchimp", "customers", common + ["UNSUB_TIME"]).file == "mailchimp/customers-unsubscribed.yml"
    assert load_mapping("mailchimp", "customers", common + ["CLEAN_TIME"]).file == "mailchimp/customers-cleaned.yml"
    with pytest.raises(ValidationError, match="has no orders mapping"):
        load_mapping("mailchimp", "orders")
    with pytest.raises(ValidationError, match="not a mapping file and not a built-in"):
        load_mapping("lightspeed", "orders")
    woo = ["Name", "Email", "Orders"]
    assert load_mapping("woocommerce", "customers", woo + ["Date registered"]).file == "woocommerce/customers-download.yml"
    assert load_mapping("woocommerce", "customers", woo + ["Sign Up"]).file == "woocommerce/customers-emailed.yml"


def test_built_in_targets_are_fields_of_their_kind():
    for name, kind in (("shopify", "customers"), ("shopify", "products"), ("shopify", "orders"), ("woocommerce", "customers"),
                       ("woocommerce", "products"), ("woocommerce", "orders"), ("klaviyo", "customers")):
        known = set(schema_for(kind).names) | {"consent", "consent_at", "suppress", "suppressed_at"}
        for out in load_mapping(name, kind).outputs:
            assert out.target.split(".")[0] in known | {"attributes"}


def test_a_mapping_without_groups_keeps_fields_made_of_project_variables_only():
    mapping = parse_mapping("kind: products\ncolumns:\n  SKU: id\n  Naam: name\n  Soort: category\n"
                            "fields:\n  url: \"{brand.url}/shop\"\n", "p.yml", "products")
    reader = MappedReader(_Reader(["SKU", "Naam", "Soort"]), mapping, {"brand.url": "https://shop.example"})
    assert reader.apply({"SKU": "B1", "Naam": "Boek", "Soort": "roman"}) == (
        {"id": "B1", "name": "Boek", "category": "roman", "url": "https://shop.example/shop"}, [])


cells = st.one_of(st.sampled_from(["12.50", "3", "yes", "paid", "refunded", "purchase", "2024-05-01T10:00:00+02:00", "nl_NL",
                                   "Europe/Amsterdam", "B-1", '{"a": 1}', "x|y", "0"]), st.text(min_size=1))


@PROPS
@given(kind=st.sampled_from(["orders", "events", "products", "preferences"]), data=st.data())
def test_a_mapped_row_is_completed_as_the_kinds_own_checks_would_make_it(kind, data):
    # A mapping checks each distinct cell with the kind's parser once; the row it gets is then only
    # completed (defaults, required fields): it must equal the row of a field-by-field check.
    schema = schema_for(kind)
    values = {}
    for column in schema.columns:
        if column.lenient is None and column.name != "attributes" and data.draw(st.booleans()):
            raw = data.draw(cells)
            try:
                value = column.parse(raw)
            except FieldError:
                continue
            if value is not None and value != "":  # a blank cell is left out, never mapped
                values[column.name] = value
    defaults = {"locale": "nl_NL", "timezone": "Europe/Amsterdam"}
    assert schema.convert(values, defaults, False, None, frozenset(values) | {"unused"}) == schema.convert(values, defaults, False)


def test_lookup_reads_an_exports_own_words_and_null_is_no_value():
    mapping = parse_mapping("kind: customers\ncolumns:\n  Email: email\n  Id: id\n"
                            "  Status: {to: consent, parse: lookup, values: {SUBSCRIBED: true, UNSUBSCRIBED: false, NEVER_SUBSCRIBED: null}}\n"
                            "  Reason: {to: suppress, parse: lookup, values: {HARD_BOUNCE: hard_bounce, UNSUBSCRIBE: null}}\n",
                            "k.yml", "customers")
    reader = MappedReader(_Reader(["Email", "Id", "Status", "Reason"]), mapping)
    base = {"Email": "a@example.org", "Id": "1"}
    assert reader.apply({**base, "Status": "subscribed", "Reason": "Hard bounce"})[0] == {
        "email": "a@example.org", "id": "1", "consent": True, "suppress": "hard_bounce"}
    assert reader.apply({**base, "Status": " NEVER_SUBSCRIBED ", "Reason": "UNSUBSCRIBE"})[0] == {
        "email": "a@example.org", "id": "1", "consent": None, "suppress": None}
    assert reader.apply({**base, "Status": "MAYBE", "Reason": ""})[1] == [
        ("Status", "'MAYBE' is not one of the values the mapping knows (SUBSCRIBED, UNSUBSCRIBED, NEVER_SUBSCRIBED)")]
    with pytest.raises(ValidationError) as err:
        parse_mapping("kind: customers\ncolumns:\n  E: email\n  S: {to: consent, parse: lookup}\n", "k.yml", "customers")
    assert "k.yml:4: field 'columns.S': lookup needs 'values'" in str(err.value.problems[0])


@pytest.mark.parametrize("cell, expected", [("", True), ("  ", True), ("2024-09-12T20:03:11", False), ("0", False)])
def test_empty_is_true_for_an_empty_cell_into_a_field_or_an_attribute(cell, expected):
    # WooCommerce's "Date registered" is empty for a guest checkout: the one parser an empty cell reaches.
    mapping = parse_mapping("kind: customers\ncolumns:\n  id: id\n  email: email\n  date: drop\n"
                            "fields:\n  consent: {column: date, parse: empty}\n  attributes.guest: {column: date, parse: empty}\n",
                            "c.yml", "customers")
    out, problems = MappedReader(_Reader(["id", "email", "date"]), mapping).apply({"id": "1", "email": "a@example.org", "date": cell})
    assert problems == [] and out["consent"] is expected and out["attributes"] == {"guest": expected}


def test_times_in_the_project_zone_and_lists_with_escaped_separators():
    text = ("kind: orders\ntimes: {format: \"%Y-%m-%d %H:%M:%S\", timezone: project}\ncolumns:\n  id: order_id\n"
            "  email: email\n  date: {to: ordered_at, parse: time}\n")
    reader = MappedReader(_Reader(["id", "email", "date"]), parse_mapping(text, "o.yml", "orders", timezone="Europe/Amsterdam"))
    out, problems = reader.apply({"id": "1", "email": "a@example.org", "date": "2026-07-01 12:00:00"})
    assert problems == [] and out["ordered_at"] == datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    # Without a project (the Python API without defaults) the time has no zone, and says so.
    reader = MappedReader(_Reader(["id", "email", "date"]), parse_mapping(text, "o.yml", "orders"))
    assert "has no time zone" in reader.apply({"id": "1", "email": "a@example.org", "date": "2026-07-01 12:00:00"})[1][0][1]
    assert make_list(escape="\\")("Boeken\\, strips, Poëzie") == ["Boeken, strips", "Poëzie"]
    assert make_list()("a\\, b") == ["a\\", "b"]  # without escape a backslash is text
    assert make_slug(">", ",", "\\")("Boeken > Romans\\, novellen, Cadeaus") == "romans-novellen"
    assert PARSERS["text"][0](split=",")("https://x.example/a.jpg, https://x.example/b.jpg") == "https://x.example/a.jpg"


def test_a_child_row_takes_its_empty_cells_from_the_parent_row_it_names():
    mapping = parse_mapping("kind: products\nparent: {by: Parent, names: [\"{SKU}\", \"id:{ID}\"], columns: [Categories]}\n"
                            "columns:\n  ID: drop\n  SKU: id\n  Name: name\n  Categories: category\n  Parent: drop\n", "p.yml", "products")
    header = ["ID", "SKU", "Name", "Categories", "Parent"]
    rows = [{"ID": "10", "SKU": "LAMP", "Name": "Lamp", "Categories": "lampen", "Parent": ""},
            {"ID": "11", "SKU": "LAMP-W", "Name": "Lamp - Wit", "Categories": "", "Parent": "LAMP"},
            {"ID": "20", "SKU": "", "Name": "Legger", "Categories": "cadeaus", "Parent": ""},
            {"ID": "21", "SKU": "LEG-C", "Name": "Legger - Cognac", "Categories": "", "Parent": "id:20"},
            {"ID": "22", "SKU": "LEG-G", "Name": "Legger - Groen", "Categories": "eigen", "Parent": "id:20"},
            {"ID": "31", "SKU": "X-1", "Name": "Wees", "Categories": "", "Parent": "id:30"}]

    class Rows(_Reader):
        def __iter__(self):
            return iter(Record(i + 2, dict(r), None) for i, r in enumerate(rows))

    reader = MappedReader(Rows(header), mapping)
    assert reader.check_header() == []
    assert [(r.values.get("id"), r.values.get("category")) for r in reader] == [
        ("LAMP", "lampen"), ("LAMP-W", "lampen"), (None, "cadeaus"), ("LEG-C", "cadeaus"), ("LEG-G", "eigen"), ("X-1", None)]
    missing = MappedReader(_Reader(["SKU", "Name", "Categories", "ID"]), mapping).check_header()
    assert missing == [("Parent", "column 'Parent' that the mapping reads (p.yml:2) is not in the file")]
    with pytest.raises(ValidationError) as err:
        parse_mapping("kind: products\nparent: {by: Parent}\ncolumns:\n  SKU: id\n", "p.yml", "products")
    assert "p.yml:2: field 'parent': parent needs 'by', 'names' and 'columns'" in str(err.value.problems[0])


@pytest.mark.parametrize("text, field, fragment", [
    ("kind: customers\nunknown_customers: skip\ncolumns:\n  E: email\n", "unknown_customers", "unknown_customers is for orders"),
    ("kind: orders\nunknown_customers: ignore\ncolumns:\n  O: order_id\n", "unknown_customers", "must be error (the default) or skip"),
    ("kind: customers\nduplicates: merge\ncolumns:\n  E: email\n", "duplicates", "for customers with match: email"),
    ("kind: customers\nmatch: email\nduplicates: {merge: true, prefer: signed_up}\ncolumns:\n  E: email\n", "duplicates",
     "'signed_up' is not a field of customers"),
    ("kind: customers\nmatch: email\nduplicates: keep\ncolumns:\n  E: email\n", "duplicates", "must be error (the default), merge"),
    ("kind: customers\ncolumns:\n  E: email\n  N: {to: first_name, parse: text, blank: '----'}\n", "columns.N",
     "blank must be a list of the words"),
    ("kind: customers\ncolumns:\n  E: email\n  N: {to: first_name, parse: text, html: yes please}\n", "columns.N",
     "html must be true or false"),
])
def test_the_options_for_admin_grid_exports_are_checked_with_the_mapping(text, field, fragment):
    with pytest.raises(ValidationError) as caught:
        parse_mapping(text, "m.yml", text.split("\n")[0].split(": ")[1])
    (problem,) = caught.value.problems
    assert problem.field == field and fragment in problem.message, problem


def test_accounts_names_the_shop_of_an_orders_account_numbers_and_is_for_orders_only():
    orders = "kind: orders\ncolumns:\n  id: order_id\n  email: email\n  user: account\n"
    assert parse_mapping(orders + "accounts: woocommerce\n", "my-orders.yml", "orders").accounts == "woocommerce"
    assert parse_mapping(orders, "my-orders.yml", "orders").accounts is None  # the import then keys them by the name
    assert load_mapping("woocommerce", "orders").accounts == "woocommerce"
    with pytest.raises(ValidationError) as err:
        parse_mapping("kind: customers\naccounts: woocommerce\ncolumns:\n  Email: email\n  Id: id\n", "c.yml", "customers")
    assert "c.yml:2: field 'accounts': accounts is for orders" in str(err.value.problems[0])
