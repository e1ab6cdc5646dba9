"""A Magento 2 shop's catalogue, through the built-in ``magento`` products mapping, from the command line.

The file is the repository's sample (``examples/magento/catalog_product_*.csv``)
in the layout of System > Data Transfer > Export > Products: every column of
Magento 2.4's export, one row per product with its default values followed
by a row per store view whose name or URL key differs (``he_il`` Hebrew,
``ar_ae`` Arabic, and ``default``, a store view whose code is no language),
a configurable product after its three children, a disabled product, sales
whose dates Magento writes ``10/25/26`` (the last day, inclusive), category
paths with ``\\/`` inside a name and a comma inside another. The project's
time zone is the shop's (Asia/Jerusalem), whose clocks go back on
25 October 2026 and forward on 26 March 2027. Each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relmail.errors import ValidationError
from relmail.importers.mapping import load_mapping, parse_mapping
from relmail.importers.values import make_time
from relmail.render.catalog import localized as in_language
from relmail.render.sale import priced
from relmail.store.models import Product
from shop_imports import import_json as run
from shop_imports import invoke_import as invoke
from shop_imports import localized, rewritten
from shop_imports import table_rows as rows

CATALOG = Path(__file__).resolve().parent.parent / "examples" / "magento" / "catalog_product_20261207_101500.csv"
JERUSALEM = ZoneInfo("Asia/Jerusalem")
SHOP = "https://fietsenwinkel.example"  # the test project's [brand] url


@pytest.fixture
def shop(project):
    return localized(project, "Asia/Jerusalem", "he_IL")


def utc(product: dict, name: str) -> datetime | None:
    value = product[name]
    return None if value is None else value.replace(tzinfo=UTC)


def test_the_catalogue_export_imports_every_product_an_order_can_name_with_the_built_in_mapping(shop):
    result = run(shop, "products", str(CATALOG), "--map", "magento")
    assert (result["mapping"], result["rows_read"], result["rows_imported"], result["rows_rejected"]) == (
        "magento/products.yml", 15, 8, 0)
    assert result["skipped"] == {
        "products without a price of their own (configurable, grouped and bundle products)": 1,  # HLM-CITY
        "translations of rows not imported": 1,  # HLM-CITY's Hebrew row
        "rows of a store_view_code that names no language (translations.languages names it)": 1,  # 'default'
    }
    assert result["details"]["translation_rows"] == 4
    # TUBE-28's special price, 34.90, is above its price, 29.90 (left from before a price cut): Magento charges 29.90.
    assert result["details"]["sales_not_below_price"] == 1

    products = {r["id"]: r for r in rows(shop, Product)}
    # The configurable's children are products of their own (an order line names the child's SKU); so are the
    # disabled lock and the virtual products.
    assert set(products) == {"EB-TOUR-500", "HLM-CITY-M-RED", "HLM-CITY-L-RED", "HLM-CITY-M-BLK", "LCK-FOLD-900",
                             "SRV-CHECK", "GFT-CARD-200", "TUBE-28"}
    bike = products["EB-TOUR-500"]
    assert (bike["name"], bike["category"], bike["price"], bike["sale_price"]) == ("Touring E-Bike 500", "e-bikes", 8990.0, 7990.0)
    assert bike["url"] == f"{SHOP}/touring-e-bike-500.html"
    assert bike["image_url"] == f"{SHOP}/media/catalog/product/t/o/touring-e-bike-500.jpg"
    attributes = bike["attributes"]
    assert attributes["categories"] == ["Default Category/Bikes/E-Bikes", "Default Category/Sale"]
    assert (attributes["type"], attributes["online"], attributes["visibility"], attributes["in_stock"], attributes["qty"]) == (
        "simple", True, "Catalog, Search", True, 6)
    assert attributes["additional_attributes"] == ["color=Forest Green", "frame_size=L"]
    # The store views' names, for customers of their language.
    assert (attributes["name_he_il"], attributes["name_ar_ae"]) == ("אופניים חשמליים טורינג 500", "دراجة كهربائية تورينغ 500")
    assert (attributes["url_key_he_il"], attributes["url_key_ar_ae"]) == ("touring-500-he", "touring-500-ar")
    assert in_language(bike, "he_IL")["name"] == "אופניים חשמליים טורינג 500"
    assert in_language(bike, "ar_AE")["name"] == "دراجة كهربائية تورينغ 500"
    assert in_language(bike, "en_GB")["name"] == "Touring E-Bike 500"

    red = products["HLM-CITY-M-RED"]
    assert (red["attributes"]["visibility"], red["attributes"]["name_he_il"], red["category"]) == (
        "Not Visible Individually", "קסדה עירונית-M-אדום", "helmets")  # "Helmets, Locks & Lights": the comma splits it
    assert "name_he_il" not in products["HLM-CITY-L-RED"]["attributes"]
    # The configurable's Hebrew row follows its skipped row: it is not the child's before it.
    assert "name_he_il" not in products["HLM-CITY-M-BLK"]["attributes"]
    lock = products["LCK-FOLD-900"]
    assert (lock["attributes"]["online"], lock["attributes"]["in_stock"], lock["price"]) == (False, False, 329.0)
    # Recommended only when enabled and with a page: not the disabled lock, nor a configurable's hidden child.
    assert (bike["attributes"]["available"], lock["attributes"]["available"], red["attributes"]["available"]) == (True, False, False)
    # "Gifts \/ Vouchers": one category whose name has a slash.
    assert products["GFT-CARD-200"]["category"] == "gifts-vouchers"
    tube = products["TUBE-28"]
    assert (tube["name"], tube["category"], tube["image_url"]) == ('Inner Tube 28"', "uncategorised", None)
    # The 'default' store view's row is no language's: SRV-CHECK keeps its Hebrew name only.
    assert {k for k in products["SRV-CHECK"]["attributes"] if k.startswith(("name_", "url_key_"))} == {"name_he_il", "url_key_he_il"}


def test_a_sale_runs_from_the_first_moment_of_its_from_date_to_the_end_of_its_last_day_across_a_change_of_the_clocks(shop):
    run(shop, "products", str(CATALOG), "--map", "magento")
    products = {r["id"]: r for r in rows(shop, Product)}
    bike, check, voucher = products["EB-TOUR-500"], products["SRV-CHECK"], products["GFT-CARD-200"]
    # 20 to 25 October 2026: from 00:00 summer time (UTC+3) up to 26 October 00:00 winter time (UTC+2); the clocks went
    # back during the last day, a day of 25 hours.
    assert utc(bike, "sale_starts_at") == datetime(2026, 10, 19, 21, 0, tzinfo=UTC)
    assert utc(bike, "sale_ends_at") == datetime(2026, 10, 25, 22, 0, tzinfo=UTC)
    # 1 to 26 March 2027: the clocks go forward on the 26th at 02:00, a day of 23 hours; the sale is over at 27 March 00:00.
    assert utc(check, "sale_starts_at") == datetime(2027, 2, 28, 22, 0, tzinfo=UTC)
    assert utc(check, "sale_ends_at") == datetime(2027, 3, 26, 21, 0, tzinfo=UTC)
    # A special price without dates runs until an export without it.
    assert (voucher["sale_price"], voucher["sale_starts_at"], voucher["sale_ends_at"]) == (180.0, None, None)
    assert (products["TUBE-28"]["sale_price"], products["TUBE-28"]["price"]) == (None, 29.9)  # 34.90: no sale

    stored = {**bike, "sale_starts_at": utc(bike, "sale_starts_at"), "sale_ends_at": utc(bike, "sale_ends_at")}
    last_minute = datetime(2026, 10, 25, 23, 59, tzinfo=JERUSALEM)
    during = priced(stored, last_minute)
    assert (during["price"], during["regular_price"], during["on_sale"]) == (7990.0, 8990.0, True)
    assert priced(stored, last_minute + timedelta(minutes=1))["price"] == 8990.0
    assert priced(stored, datetime(2026, 10, 19, 23, 59, tzinfo=JERUSALEM))["price"] == 8990.0
    assert priced(stored, datetime(2026, 10, 20, 0, 0, tzinfo=JERUSALEM))["price"] == 7990.0


@pytest.mark.parametrize("column, value, expected", [
    ("special_price_to_date", "25/10/2026",
     "field 'special_price_to_date': '25/10/2026' is not in the format '%m/%d/%y' (e.g. 03/14/26)"),
    ("special_price_from_date", "2/30/26", "field 'special_price_from_date': '2/30/26' is no real date or time"),
    ("price", "8.990,00 ₪", "field 'price': '8.990,00 ₪'"),
])
def test_a_bad_cell_names_file_line_and_column_and_nothing_is_imported(shop, tmp_path, column, value, expected):
    bad = rewritten(tmp_path, CATALOG, lambda row: row.update({column: value}) if (row["sku"], row["store_view_code"]) == (
        "EB-TOUR-500", "") else None)
    result = invoke(shop, "products", str(bad), "--map", "magento")
    assert result.exit_code == 4, result.output
    assert f"{bad}:2: {expected}" in result.output
    assert rows(shop, Product) == []


def test_a_translation_whose_name_does_not_parse_names_its_own_line(shop, tmp_path):
    # A store view row's cells are its own: the problem is on its line, not on its product's.
    mapping = tmp_path / "products.yml"
    builtin = Path(__import__("relmail").__file__).parent / "importers" / "mappings" / "magento" / "products.yml"
    mapping.write_text(builtin.read_text().replace("  name: name\n", "  name: {to: name, parse: lookup, values: {Touring E-Bike 500: Touring}}\n"))
    result = invoke(shop, "products", str(CATALOG), "--map", str(mapping))
    assert result.exit_code == 4, result.output
    assert f"{CATALOG}:3: field 'name': 'אופניים חשמליים טורינג 500' is not one of the values" in result.output


def test_a_copy_of_the_mapping_names_the_language_of_a_store_view_whose_code_is_none(shop, tmp_path):
    builtin = Path(__import__("relmail").__file__).parent / "importers" / "mappings" / "magento" / "products.yml"
    mapping = tmp_path / "products.yml"
    mapping.write_text(builtin.read_text().replace("fields: [name, attributes.url_key]}",
                                                   "fields: [name, attributes.url_key], languages: {default: en_IL}}"))
    result = run(shop, "products", str(CATALOG), "--map", str(mapping))
    assert "rows of a store_view_code that names no language (translations.languages names it)" not in result["skipped"]
    check = {r["id"]: r for r in rows(shop, Product)}["SRV-CHECK"]
    assert check["attributes"]["name_en_IL"] == "Spring Check-Up (Tel Aviv)"
    assert in_language(check, "en_IL")["name"] == "Spring Check-Up (Tel Aviv)"


@pytest.mark.parametrize("translations, expected", [
    ("{by: store_view_code, fields: [description]}", "'description' is no field this mapping fills"),
    ("{by: store_view_code}", "translations needs 'fields'"),
    ("{fields: [name]}", "translations needs 'by'"),
    ("{by: store_view_code, fields: [name], languages: {german: Deutsch}}", "languages maps a cell to a language code"),
])
def test_a_translations_entry_that_cannot_work_is_refused_naming_the_mapping_line(translations, expected):
    text = f"kind: products\ncolumns:\n  sku: id\n  name: name\n  price: price\ntranslations: {translations}\n"
    with pytest.raises(ValidationError) as caught:
        parse_mapping(text, "maps/products.yml", "products")
    (problem,) = caught.value.problems
    assert (problem.line, expected in problem.message) == (6, True), problem


def test_end_of_day_is_true_or_false():
    text = "kind: products\ncolumns:\n  sku: id\n  name: name\n  ends: {to: sale_ends_at, parse: time, timezone: UTC, end_of_day: yes please}\n"
    with pytest.raises(ValidationError) as caught:
        parse_mapping(text, "maps/products.yml", "products")
    assert "end_of_day must be true or false" in str(caught.value.problems[0].message)
    assert caught.value.problems[0].line == 5


def test_the_built_in_mapping_reads_the_sale_end_as_the_end_of_that_day():
    mapping = load_mapping("magento", "products", timezone="Asia/Jerusalem")
    (ends,) = [o for o in mapping.outputs if o.target == "sale_ends_at"]
    assert ends.parse("12/31/26") == datetime(2026, 12, 31, 22, 0, tzinfo=UTC)  # 1 January 2027, 00:00 in Jerusalem


# Zones whose clocks change at 02:00 (Europe, Israel) and at midnight (Chile, Cuba, Lebanon's past, Paraguay).
ZONES = ["Asia/Jerusalem", "Europe/Berlin", "America/Santiago", "America/Havana", "Asia/Beirut", "America/Asuncion", "UTC"]


@settings(deadline=None)
@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2037, 12, 30)), st.sampled_from(ZONES), st.booleans())
def test_end_of_day_is_the_first_moment_of_the_next_day_in_the_zone(day, zone, padded):
    # Magento writes 3/1/27; a re-saved sheet may write 03/01/27: both are the day.
    text = day.strftime("%m/%d/%y") if padded else f"{day.month}/{day.day}/{day:%y}"
    ends = make_time("%m/%d/%y", zone, end_of_day=True, ahead=True)(text)
    local = ZoneInfo(zone)
    assert ends.tzinfo == UTC
    # The last moment of the day is in it, the end is not: the sale covers the whole day, however long the day is.
    assert ends.astimezone(local).date() == day + timedelta(days=1)
    assert (ends - timedelta(microseconds=1)).astimezone(local).date() == day
    # Without end_of_day the same cell is the day's first moment: a sale from and to one day covers that day.
    starts = make_time("%m/%d/%y", zone, ahead=True)(text) if _midnight_exists(day, local) else None
    if starts is not None:
        assert starts.astimezone(local).date() == day and starts < ends


def _midnight_exists(day: date, zone: ZoneInfo) -> bool:
    naive = datetime(day.year, day.month, day.day)
    return naive.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive


@settings(deadline=None, max_examples=50)
@given(st.lists(st.tuples(st.text("abcdefghij", min_size=1, max_size=6),
                          st.lists(st.sampled_from(["de", "he_il", "ar-ae", "pt_BR", "default", "admin_x"]), unique=True)),
                min_size=1, max_size=6, unique_by=lambda p: p[0]))
def test_every_translation_row_names_its_product_in_its_language_and_every_other_row_is_counted(products):
    from types import SimpleNamespace

    from relmail.importers.mapped import MappedReader
    from relmail.importers.readers import Record

    mapping = parse_mapping("kind: products\ncolumns:\n  sku: id\n  name: name\n  price: price\n"
                            "translations: {by: view, fields: [name]}\n", "maps/p.yml", "products")
    records, line = [], 1
    for sku, views in products:
        line += 1
        records.append(Record(line, {"sku": sku, "view": "", "name": f"{sku} en", "price": "1"}, []))
        for view in views:
            line += 1
            records.append(Record(line, {"sku": sku, "view": view, "name": f"{sku} {view}", "price": ""}, []))
    reader = SimpleNamespace(name="p.csv", header=["sku", "view", "name", "price"])
    mapped = MappedReader(reader, mapping)
    mapped.reader = records  # iterated as the file's records
    out = list(mapped)
    assert [r.values["id"] for r in out] == [sku for sku, _ in products]
    for record, (sku, views) in zip(out, products, strict=True):
        assert record.values["name"] == f"{sku} en"
        assert record.values.get("attributes", {}) == {
            f"name_{view}": f"{sku} {view}" for view in views if view not in ("default", "admin_x")}
    unnamed = sum(v in ("default", "admin_x") for _, views in products for v in views)
    assert mapped.translations + sum(mapped.skipped.values()) == sum(len(views) for _, views in products)
    assert sum(mapped.skipped.values()) == unnamed


def test_dates_in_another_admin_locale_read_with_time_format_and_still_end_at_the_end_of_the_day(shop, tmp_path):
    # English (United Kingdom) writes the short date day first, with the century: 25/10/2026.
    def british(row):
        for column in ("special_price_from_date", "special_price_to_date"):
            if row[column]:
                row[column] = datetime.strptime(row[column], "%m/%d/%y").strftime("%d/%m/%Y")
    result = run(shop, "products", str(rewritten(tmp_path, CATALOG, british)), "--map", "magento", "--time-format", "%d/%m/%Y")
    assert result["rows_imported"] == 8
    bike = {r["id"]: r for r in rows(shop, Product)}["EB-TOUR-500"]
    assert (utc(bike, "sale_starts_at"), utc(bike, "sale_ends_at")) == (
        datetime(2026, 10, 19, 21, 0, tzinfo=UTC), datetime(2026, 10, 25, 22, 0, tzinfo=UTC))


def test_the_command_line_says_what_became_of_each_row(shop):
    result = invoke(shop, "products", str(CATALOG), "--map", "magento")
    assert result.exit_code == 0, result.output
    assert "Imported 8 products from 15 rows (mapping magento/products.yml)" in result.output
    assert "products without a price of their own (configurable, grouped and bundle products): 1 skipped" in result.output
    assert "4 translation row(s): their fields given to the product row before them (name_<language> ...)" in result.output
    assert "1 sale price(s) not below the product's price: no sale (the shop charges the lower price)" in result.output


@pytest.mark.parametrize("text, expected", [
    ("kind: products\ncolumns:\n  sku: id\n  name: name\n  price: price\nsale_below_price: true\n",
     "sale_below_price is for products whose mapping fills sale_price"),
    ("kind: products\ncolumns:\n  sku: id\n  name: name\n  special: {to: sale_price, parse: money}\nsale_below_price: 1\n",
     "sale_below_price must be true or false"),
])
def test_a_sale_below_price_entry_that_cannot_work_is_refused_naming_the_mapping_line(text, expected):
    with pytest.raises(ValidationError) as caught:
        parse_mapping(text, "maps/products.yml", "products")
    (problem,) = caught.value.problems
    assert (problem.line, problem.message) == (6, expected)


@settings(deadline=None, max_examples=60)
@given(st.decimals(min_value=0, max_value=100_000, places=2), st.decimals(min_value=0, max_value=100_000, places=2),
       st.booleans())
def test_a_sale_price_is_kept_only_below_the_price_with_sale_below_price(price, sale, below_only):
    from types import SimpleNamespace

    from relmail.importers.mapped import MappedReader

    mapping = parse_mapping(
        "kind: products\ntimes: {timezone: UTC}\ncolumns:\n  sku: id\n  name: name\n  price: {to: price, parse: money}\n"
        "  special: {to: sale_price, parse: money}\n  ends: {to: sale_ends_at, parse: time, end_of_day: true}\n"
        f"sale_below_price: {'true' if below_only else 'false'}\n", "maps/p.yml", "products")
    mapped = MappedReader(SimpleNamespace(name="p.csv", header=["sku", "name", "price", "special", "ends"]), mapping)
    out, problems = mapped.apply({"sku": "A", "name": "a", "price": f"{price}", "special": f"{sale}", "ends": "2030-01-31"})
    assert problems == []
    kept = not below_only or sale < price
    assert ("sale_price" in out, "sale_ends_at" in out) == (kept, kept)
    assert out["price"] == float(price) and mapped.sales_not_below == (0 if kept else 1)
    if kept:
        assert out["sale_price"] == float(sale) and out["sale_ends_at"] == datetime(2030, 2, 1, tzinfo=UTC)
