"""A Shopware 6 coffee roaster in Hamburg selling in German and English, through the built-in ``shopware`` mapping.

The files are the repository's samples (``examples/shopware/``) as Shopware's
Import/Export writes them (``src/Core/Content/ImportExport``): ``;`` between
cells, ``"`` around a cell with a space (PHP's ``fputcsv``), the profile's
technical column names whatever the admin's language, booleans ``1``/``0``,
times in UTC with their offset (``2026-11-02T08:15:42.512+00:00``), an
order's line items in one cell (``2x <product id>|1x <product id>|1x ``).
The profiles: "Default customer", "Default newsletter recipient", "Default
product" (variants included) and "relmail orders" ("Default orders" with the
order's and the payment's state); "Default orders" itself is refused. The
project's time zone is the shop's (Europe/Berlin). Each test that stores runs
on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relmail.errors import ValidationError
from relmail.importers.mapped import MappedReader
from relmail.importers.mapping import load_mapping, parse_mapping
from relmail.importers.readers import open_source, reader_for
from relmail.render.sale import priced
from relmail.store.models import Customer, Event, Preference, Product
from shop_imports import import_json as run
from shop_imports import invoke_import as invoke
from shop_imports import localized, product_campaign, relmail_ok
from shop_imports import table_rows as rows

SHOPWARE = Path(__file__).resolve().parent.parent / "examples" / "shopware"
CUSTOMERS, RECIPIENTS, ORDERS, PRODUCTS = (SHOPWARE / f"{n}.csv" for n in ("customers", "newsletter_recipients", "orders",
                                                                             "products"))


def uid(name: str) -> str:
    """The sample's id of ``name``: 32 hex digits, as Shopware's ids are written."""
    return hashlib.md5(name.encode()).hexdigest()


@pytest.fixture
def shop(project):
    return localized(project, "Europe/Berlin", "de_DE")


def consent(project) -> dict[str, bool]:
    return {r["customer_id"]: r["opted_in"] for r in rows(project, Preference) if r["topic"] == "*"}


def aware(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC) if value.tzinfo is None else value


def test_the_default_customer_profile_gives_each_customer_their_language(shop):
    done = run(shop, "customers", str(CUSTOMERS), "--map", "shopware")
    assert (done["mapping"], done["rows_read"], done["rows_imported"]) == ("shopware/customers.yml", 6, 6)
    customers = {r["id"]: r for r in rows(shop, Customer)}
    assert set(customers) == {uid(k) for k in ("anna", "jonas", "emily", "lukas", "marie", "petra")}
    anna, emily, lukas, petra = (customers[uid(k)] for k in ("anna", "emily", "lukas", "petra"))
    assert (anna["email"], anna["first_name"], anna["last_name"], anna["locale"]) == (
        "anna.schmidt@mail.example", "Anna", "Schmidt", "de_DE")
    assert emily["locale"] == "en_GB"
    assert anna["attributes"] == {"shopware_customer_number": "10001", "shopware_salutation": "mrs", "shopware_active": True,
                                  "shopware_guest": False, "shopware_customer_group": "Standard-Kundengruppe",
                                  "shopware_sales_channel": "Storefront", "shopware_account_type": "private"}
    assert lukas["attributes"]["shopware_guest"] is True  # a guest checkout is a customer record of its own
    assert customers[uid("marie")]["attributes"]["shopware_active"] is False
    assert petra["last_name"] == "Krüger" and petra["attributes"]["shopware_account_type"] == "business"
    # Addresses, companies and the payment method are dropped; the profile carries no consent.
    text = repr([c["attributes"] for c in customers.values()])
    assert "Elbstraße" not in text and "Hafenblick" not in text and "Rechnung" not in text
    assert rows(shop, Preference) == []


def test_newsletter_recipients_give_consent_only_when_confirmed_or_direct_and_guests_become_customers(shop):
    run(shop, "customers", str(CUSTOMERS), "--map", "shopware")
    done = run(shop, "customers", str(RECIPIENTS), "--map", "shopware")
    assert (done["mapping"], done["rows_imported"]) == ("shopware/customers-newsletter.yml", 6)
    customers = {r["id"]: r for r in rows(shop, Customer)}
    # Leon and Sophie subscribed in the footer without an account: customers with the recipient's id.
    assert set(customers) == {uid(k) for k in ("anna", "jonas", "emily", "lukas", "marie", "petra")} | {
        uid("leon-recipient"), uid("sophie-recipient")}
    assert customers[uid("leon-recipient")]["email"] == "leon.wolf@mail.example"
    assert customers[uid("leon-recipient")]["locale"] == "de_DE"  # the profile has no language: the project's
    assert customers[uid("emily")]["locale"] == "en_GB"  # kept from the customers export
    # optIn (confirmed by the double opt-in link) and direct are consent, undated; notSet (never confirmed) is nothing
    # either way. optOut is an unsubscribe, an opt-out as of the import although nothing was on record for Jonas: a
    # campaign that mails whoever has not said no (consent: opt-out) must not mail him.
    assert consent(shop) == {uid("anna"): True, uid("emily"): True, uid("leon-recipient"): True, uid("jonas"): False}
    (jonas,) = [r for r in rows(shop, Preference) if r["customer_id"] == uid("jonas")]
    assert aware(jonas["updated_at"]) > datetime(2026, 1, 1, tzinfo=UTC)
    assert (done["details"]["consent_records"], done["details"]["undated_opt_outs"], done["details"]["undated_opt_ins"]) == (
        4, 1, 3)
    # The confirmation token is a secret: never stored.
    assert uid("anna-hash") not in repr([c["attributes"] for c in customers.values()])


SHOP_URL = "https://fietsenwinkel.example"  # the project's [brand] url


def test_the_default_product_profile_keys_products_by_the_id_the_orders_name_and_variants_inherit(shop):
    done = run(shop, "products", str(PRODUCTS), "--map", "shopware")
    assert (done["mapping"], done["rows_read"], done["rows_imported"]) == ("shopware/products.yml", 6, 6)
    catalogue = {r["id"]: r for r in rows(shop, Product)}
    espresso, small, large = (catalogue[uid(k)] for k in ("espresso", "espresso-250", "espresso-1000"))
    image = "https://kaffee-elbufer.example/media/a1/3f/hafenblick-espresso.jpg"
    # The export names categories only by id: the first is the product's category, all are kept.
    assert (espresso["name"], espresso["price"], espresso["url"], espresso["image_url"], espresso["category"]) == (
        "Hafenblick Espresso", 11.99, f"{SHOP_URL}/detail/{uid('espresso')}", image, uid("cat-kaffee"))
    # A variant leaves empty what it inherits: its parent's name, image and categories; its own price when it has one.
    assert (small["name"], small["price"], small["image_url"], small["category"]) == (
        "Hafenblick Espresso", 11.99, image, uid("cat-kaffee"))
    assert (large["name"], large["price"]) == ("Hafenblick Espresso", 39.99)
    assert large["attributes"]["shopware_category_ids"] == [uid("cat-kaffee"), uid("cat-espresso")]
    assert large["attributes"]["shopware_product_number"] == "SW10001.2"
    assert large["attributes"]["shopware_parent_id"] == uid("espresso")
    assert large["attributes"]["shopware_active"] is True  # inherited
    assert catalogue[uid("dripper")]["attributes"]["shopware_active"] is False
    # Recommended only while active: the inactive dripper never, the variant as its parent.
    assert (large["attributes"]["available"], catalogue[uid("dripper")]["attributes"]["available"]) == (True, False)
    assert catalogue[uid("dripper")]["image_url"] is None


def with_list_prices(path: Path, prices: dict[str, str]) -> Path:
    """The sample products export from a copy of the profile with the list price (column list_price_gross)."""
    lines = PRODUCTS.read_text(encoding="utf-8").splitlines()
    out = [lines[0] + ";list_price_gross"] + [line + ";" + prices.get(line.split(";", 1)[0], "") for line in lines[1:]]
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def test_a_list_price_is_the_regular_price_struck_through_and_a_variant_inherits_it_only_with_its_price(shop, tmp_path):
    # The espresso is reduced from 14.99 to 11.99; the 1 kg bag has a price of its own and no list price.
    path = with_list_prices(tmp_path / "product_export.csv", {uid("espresso"): "14.99", uid("grinder"): "45.00"})
    done = run(shop, "products", str(path), "--map", "shopware")
    assert done["rows_imported"] == 6
    catalogue = {r["id"]: r for r in rows(shop, Product)}
    now = datetime(2026, 12, 7, 9, tzinfo=UTC)
    seen = {k: priced(catalogue[uid(k)], now) for k in ("espresso", "espresso-250", "espresso-1000", "grinder", "filter")}
    assert {k: (p["price"], p["regular_price"], p["on_sale"]) for k, p in seen.items()} == {
        "espresso": (11.99, 14.99, True),
        "espresso-250": (11.99, 14.99, True),      # inherits the price whole: list price and all
        "espresso-1000": (39.99, 39.99, False),    # a price of its own: never the parent's list price
        "grinder": (49.0, 49.0, False),            # a list price below the price is no sale
        "filter": (9.99, 9.99, False),
    }
    # The stored regular price, which segments and the catalogue's value read, is the variant's own.
    assert (catalogue[uid("espresso-1000")]["price"], catalogue[uid("espresso-250")]["price"]) == (39.99, 14.99)
    # The next export without the list price: the sale is over.
    run(shop, "products", str(PRODUCTS), "--map", "shopware")
    espresso = {r["id"]: r for r in rows(shop, Product)}[uid("espresso")]
    assert priced(espresso, now)["on_sale"] is False and priced(espresso, now)["price"] == 11.99


def test_parent_columns_taken_together_are_a_list_and_anything_else_is_named_with_the_mapping_line():
    text = "kind: products\nparent: {{by: Parent, names: ['{{ID}}'], columns: {0}}}\ncolumns:\n  ID: id\n  N: name\n  C: category\n"
    assert parse_mapping(text.format("[[P, L], N]"), "p.yml").parent_groups == (("P", "L"), ("N",))
    with pytest.raises(ValidationError, match=r"p.yml:2: field 'parent.columns': expected a list of column names, each alone"):
        parse_mapping(text.format("[[], N]"), "p.yml")


def test_orders_become_one_purchase_per_line_item_and_cancelled_unpaid_or_refunded_orders_none(shop):
    run(shop, "customers", str(CUSTOMERS), "--map", "shopware")
    run(shop, "products", str(PRODUCTS), "--map", "shopware")
    done = run(shop, "orders", str(ORDERS), "--map", "shopware")
    # Six orders, eight line items: the summary counts the file's rows.
    assert (done["mapping"], done["rows_read"], done["rows_imported"]) == ("shopware/orders.yml", 6, 5)
    assert done["skipped"] == {"order lines of no product (promotions, custom items)": 1}  # order 10001's promotion
    # Jonas's prepayment was never paid and the shop cancelled the order (its payment is still open); Anna's grinder
    # was refunded.
    assert done["details"]["lines_not_purchases"] == 2
    assert done["details"]["lines_unknown_product"] == 0
    purchases = {r["event_id"]: (r["customer_id"], r["product_id"], r["value"], aware(r["occurred_at"]))
                 for r in rows(shop, Event) if r["type"] == "purchase"}
    at = datetime.fromisoformat
    assert purchases == {
        f"order:{uid('o10001')}:1": (uid("anna"), uid("espresso-250"), None, at("2026-11-02T08:15:42.512+00:00")),
        f"order:{uid('o10001')}:2": (uid("anna"), uid("grinder"), None, at("2026-11-02T08:15:42.512+00:00")),
        # An open payment (an invoice) is a placed order: a purchase.
        f"order:{uid('o10003')}:1": (uid("emily"), uid("espresso-1000"), None, at("2026-11-20T21:05:51.880+00:00")),
        # The guest checkout's customer record is found by the order's address.
        f"order:{uid('o10004')}:1": (uid("lukas"), uid("filter"), None, at("2026-11-28T10:31:17.004+00:00")),
        f"order:{uid('o10006')}:1": (uid("petra"), uid("espresso-1000"), None, at("2026-12-05T07:48:26.640+00:00")),
    }


def test_a_recipient_who_unsubscribed_since_the_last_export_is_opted_out_as_of_the_import(shop, tmp_path):
    run(shop, "customers", str(RECIPIENTS), "--map", "shopware")
    later = tmp_path / RECIPIENTS.name
    later.write_text(RECIPIENTS.read_text(encoding="utf-8").replace(";optIn;", ";optOut;"), encoding="utf-8")
    done = run(shop, "customers", str(later), "--map", "shopware")
    assert done["details"]["undated_opt_outs"] == 1
    (anna,) = [r for r in rows(shop, Preference) if r["customer_id"] == uid("anna-recipient")]
    assert anna["opted_in"] is False and aware(anna["updated_at"]) > datetime(2026, 1, 1, tzinfo=UTC)


def test_the_default_orders_profile_is_refused_naming_the_profile_to_export_instead(shop, tmp_path):
    # "Default orders" as Shopware ships it: the same file without the two state columns.
    lines = [line.rsplit(";", 2)[0] for line in ORDERS.read_text(encoding="utf-8").splitlines()]
    path = tmp_path / "default_orders.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = invoke(shop, "orders", str(path), "--map", "shopware")
    assert result.exit_code == 4, result.output
    assert 'the Shopware 6 export with the profile "Default orders" cannot be imported; nothing imported' in result.output
    assert f"{path}:1: the profile \"Default orders\" writes the order's state only as an id (order_state_id)" in result.output
    assert "transactions.stateMachineState.technicalName (column payment_state)" in result.output
    assert rows(shop, Event) == []


def test_a_bad_line_or_state_is_named_by_file_line_and_field_and_nothing_is_imported(shop, tmp_path):
    run(shop, "customers", str(CUSTOMERS), "--map", "shopware")
    lines = ORDERS.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].replace('"1x ', '"1 x ')  # line 3: Jonas's order, a line in no form Shopware writes
    lines[4] = lines[4].replace(";completed;paid", ";completed;bezahlt")  # line 5: a state Shopware does not have
    path = tmp_path / ORDERS.name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = invoke(shop, "orders", str(path), "--map", "shopware")
    assert result.exit_code == 4, result.output
    assert (f"{path}:3: field 'line_items': line 1 of the cell, '1 x {uid('filter')}', is not an order line as "
            "shopware/orders.yml reads them") in result.output
    assert f"{path}:5: field 'payment_state': 'bezahlt' is not one of the values the mapping knows (paid, " in result.output
    assert rows(shop, Event) == []  # all or nothing: the good orders are not written either


def test_an_order_of_several_lines_that_fails_is_one_bad_row_said_once(shop, tmp_path):
    # Line 2: Anna's first order, two products in its line_items cell, with an address no customer has; its
    # lines are read as records of their own. Line 3: Jonas's order, re-saved with a day-first time.
    run(shop, "customers", str(CUSTOMERS), "--map", "shopware")
    lines = ORDERS.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace(";anna.schmidt@mail.example;", ";anna@nowhere.example;")
    lines[2] = lines[2].replace("2026-11-09T17:40:03.027+00:00", "09.11.2026 17:40")
    path = tmp_path / ORDERS.name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = invoke(shop, "orders", str(path), "--map", "shopware")
    assert result.exit_code == 4, result.output
    assert f"{path}: 2 bad row(s) of 6; nothing imported" in result.output
    assert result.output.count(f"{path}:2: field 'customer_email': no customer has this e-mail address") == 1
    assert "lines 2, 2" not in result.output
    assert result.output.count(f"{path}:3: field 'order_date_time': '09.11.2026 17:40' is not an ISO 8601") == 1
    skipped = invoke(shop, "orders", str(path), "--map", "shopware", "--skip-invalid")
    assert skipped.exit_code == 0, skipped.output
    assert "Skipped 2 invalid row(s) of 6" in skipped.output
    rejects = (tmp_path / "orders.rejects.csv").read_text(encoding="utf-8").splitlines()
    assert [r.split(",")[0] for r in rejects] == ["line", "2", "3"]  # each bad row once


def test_importing_a_later_export_again_changes_nothing_and_a_refund_since_removes_the_purchase(shop, tmp_path):
    run(shop, "customers", str(CUSTOMERS), "--map", "shopware")
    run(shop, "orders", str(ORDERS), "--map", "shopware")
    before = sorted(r["event_id"] for r in rows(shop, Event))
    again = run(shop, "orders", str(ORDERS), "--map", "shopware")
    assert sorted(r["event_id"] for r in rows(shop, Event)) == before and again["details"]["purchases"] == 5
    later = tmp_path / ORDERS.name
    later.write_text(ORDERS.read_text(encoding="utf-8").replace(";completed;paid\n", ";completed;refunded\n", 1),
                     encoding="utf-8")
    done = run(shop, "orders", str(later), "--map", "shopware")
    assert done["details"]["purchases_removed"] == 2  # Anna's first order: the espresso and the grinder
    assert sorted(r["event_id"] for r in rows(shop, Event)) == [e for e in before if uid("o10001") not in e]


def php_csv(row: list[str]) -> str:
    """One line as PHP's fputcsv writes it with Shopware's ';' and '"': quoted when a cell has a space, ';', '"', '\\\\'."""
    return ";".join('"' + c.replace('"', '""') + '"' if any(ch in c for ch in ' ;"\\\t\r\n') else c for c in row) + "\n"


_LINE = st.tuples(st.integers(min_value=1, max_value=10_000), st.one_of(st.none(), st.binary(min_size=16, max_size=16)))


@settings(max_examples=150, deadline=None)
@given(orders=st.lists(st.lists(_LINE, min_size=1, max_size=6), min_size=1, max_size=5),
       moment=st.datetimes(min_value=datetime(2019, 1, 1), max_value=datetime(2025, 12, 31)))
def test_line_items_and_times_as_shopware_writes_them_read_back_as_the_lines(orders, moment, tmp_path_factory):
    """OrderSerializer: quantity . 'x ' . productId, joined by '|' (a null productId writes nothing); the order's
    time as RFC 3339 with milliseconds in UTC (JsonSerializableTrait)."""
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000, tzinfo=UTC)  # PHP's 'v': milliseconds
    when = moment.isoformat(timespec="milliseconds")
    header = ["id", "order_number", "customer_email", "amount_total", "line_items", "order_date_time", "order_state",
              "payment_state"]
    text = php_csv(header)
    expected = []
    for n, lines in enumerate(orders, 1):
        cell = "|".join(f"{q}x {p.hex() if p else ''}" for q, p in lines)
        text += php_csv([f"{n:032x}", str(10000 + n), f"k{n}@mail.example", "12.5", cell, when, "completed", "paid"])
        expected += [(f"{n:032x}", p.hex(), float(q)) for q, p in lines if p is not None]
    path = tmp_path_factory.mktemp("orders") / "orders.csv"
    path.write_text(text, encoding="utf-8")
    source = open_source(path)
    try:
        reader = MappedReader(reader_for(source), load_mapping("shopware", "orders", header))
        assert reader.check_header() == []
        records = list(reader)
    finally:
        source.close()
    assert [r.problems for r in records if r.problems] == []
    assert [(r.values["order_id"], r.values["product_id"], r.values["quantity"]) for r in records] == expected
    assert {r.values["ordered_at"] for r in records} <= {moment}
    assert reader.skipped.get("order lines of no product (promotions, custom items)", 0) == sum(
        1 for lines in orders for _, p in lines if p is None)


@pytest.mark.parametrize("items, fragment", [
    ("{column: line_items, pattern: '(\\\\d+)x'}", "a regular expression for one line whose named groups"),
    ("{column: line_items, pattern: '(?P<q>['}", "not a regular expression"),
    ("{pattern: '(?P<q>\\\\d+)'}", "items needs 'column'"),
    ("{column: line_items, pattern: '(?P<q>\\\\d+)', split: ','}", "items has 'column'"),
])
def test_an_items_option_that_cannot_read_a_line_is_named_with_the_mapping_line(items, fragment):
    text = f"kind: orders\nitems: {items}\ncolumns:\n  id: order_id\n"
    with pytest.raises(ValidationError) as caught:
        parse_mapping(text, "maps/o.yml", "orders")
    assert any(p.line == 2 and fragment in p.message for p in caught.value.problems), caught.value.problems
    with pytest.raises(ValidationError, match="items is for orders"):
        parse_mapping("kind: customers\nitems: {column: x, pattern: '(?P<q>.)'}\ncolumns:\n  E: email\n", "c.yml")


def test_a_message_featuring_a_product_skips_who_bought_it_by_the_id_the_line_items_name(shop):
    run(shop, "customers", str(CUSTOMERS), "--map", "shopware")
    run(shop, "customers", str(RECIPIENTS), "--map", "shopware")
    run(shop, "products", str(PRODUCTS), "--map", "shopware")
    run(shop, "orders", str(ORDERS), "--map", "shopware")
    large = uid("espresso-1000")
    product_campaign(shop, "espresso", "espresso", large)

    def relmail(*args: str) -> str:
        return relmail_ok(shop, *args)

    relmail("plan", "espresso", "--window", "this-week")
    assert f"OWNS_PRODUCT: already owns {large}" in relmail("why", uid("emily"))  # her open invoice order
    anna = relmail("why", uid("anna"))  # she bought the 250 g bag, not the kilo
    assert "espresso: SEND" in anna and "OWNS_PRODUCT" not in anna
    assert "NO_CONSENT" in relmail("why", uid("jonas"))  # unsubscribed


def test_consent_no_says_whether_a_no_is_an_unsubscribe_and_is_checked_with_the_mapping():
    text = "kind: customers\nconsent_no: {}\ncolumns:\n  E: email\n  S: {{to: consent, parse: yes_no}}\n"
    assert parse_mapping(text.format("opt-out"), "m.yml").consent_no == "opt-out"
    assert parse_mapping(text.format("not-opted-in"), "m.yml").consent_no == "not-opted-in"
    with pytest.raises(ValidationError) as caught:
        parse_mapping(text.format("unsubscribed"), "m.yml")
    assert "m.yml:2" in str(caught.value.problems[0]) and "consent_no must be not-opted-in" in str(caught.value.problems[0])
    with pytest.raises(ValidationError, match="consent_no is for customers"):
        parse_mapping("kind: orders\nconsent_no: opt-out\ncolumns:\n  O: order_id\n", "o.yml")


def test_two_guest_checkouts_of_one_address_are_two_customers_and_their_orders_count_for_the_mailbox(shop, tmp_path):
    """Shopware makes a customer record per guest checkout: the customers export holds one address twice."""
    lines = CUSTOMERS.read_text(encoding="utf-8").splitlines()
    lukas = next(line for line in lines if "lukas.wagner@" in line)
    path = tmp_path / CUSTOMERS.name
    path.write_text("\n".join([*lines, lukas.replace(uid("lukas"), uid("lukas-again"), 1).replace(";10004;", ";10007;")])
                    + "\n", encoding="utf-8")
    done = run(shop, "customers", str(path), "--map", "shopware")
    assert done["rows_imported"] == 7
    guests = {r["id"] for r in rows(shop, Customer) if r["email"] == "lukas.wagner@mail.example"}
    assert guests == {uid("lukas"), uid("lukas-again")}
    run(shop, "orders", str(ORDERS), "--map", "shopware")
    (buyer,) = {r["customer_id"] for r in rows(shop, Event) if r["event_id"].startswith(f"order:{uid('o10004')}:")}
    assert buyer in guests


def test_a_complete_customers_export_removes_deleted_accounts_not_newsletter_subscribers_and_a_list_does_not_bring_them_back(
        shop, tmp_path):
    # Week 1: the customers export (complete), then the newsletter recipients: Leon and Sophie subscribed in the
    # footer form and have no account, so they become customers of their own (the recipients' ids).
    run(shop, "customers", str(CUSTOMERS), "--map", "shopware", "--complete")
    run(shop, "customers", str(RECIPIENTS), "--map", "shopware")
    # Week 2: Anna deleted her account; the newsletter recipients export still lists her address.
    later = tmp_path / "customer_export.csv"
    later.write_text("".join(line for line in CUSTOMERS.read_text(encoding="utf-8").splitlines(keepends=True)
                             if not line.startswith(uid("anna"))), encoding="utf-8")
    done = run(shop, "customers", str(later), "--map", "shopware", "--complete", "--max-removed", "1")
    assert done["details"]["removed_from_shop"] == 1
    listed_out = {r["id"] for r in rows(shop, Customer) if r["removed_at"] is not None}
    assert listed_out == {uid("anna")}  # not the footer subscribers: no customers export ever listed them
    again = run(shop, "customers", str(RECIPIENTS), "--map", "shopware")
    assert (again["details"]["relisted"], again["details"]["still_removed"]) == (0, 1)
    assert {r["id"] for r in rows(shop, Customer) if r["removed_at"] is not None} == {uid("anna")}
    # She opens an account again with the same id (the shop restored it): the customers export lists her.
    assert run(shop, "customers", str(CUSTOMERS), "--map", "shopware", "--complete")["details"]["relisted"] == 1
    assert not [r for r in rows(shop, Customer) if r["removed_at"] is not None]
