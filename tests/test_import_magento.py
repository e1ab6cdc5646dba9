"""A Magento 2 shop selling in Israel and the Gulf, through the built-in ``magento`` mapping, from the command line.

The files are the repository's samples (``examples/magento/``) in the layouts
Magento writes them: the Customers Main File of System > Data Transfer >
Export (``customer_main``: email, _website, _store, the attributes by code,
password), the Newsletter Subscribers grid's CSV (cells HTML-escaped, ``----``
for a guest's name, no dates), and the Sales > Orders grid's CSV with the
Customer Email and Total Refunded columns switched on (one row per order,
``Dec 2, 2026 08:41:19 PM`` in the admin's time zone, ILS and AED orders whose
base grand total is in shekels). The project's time zone is the shop's
(Asia/Jerusalem). Each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relmail.importers.mapping import load_mapping
from relmail.importers.values import make_text
from relmail.store.models import Customer, Event, Preference
from shop_imports import import_json as run
from shop_imports import invoke_import as invoke
from shop_imports import localized, rewritten
from shop_imports import table_rows as rows

MAGENTO = Path(__file__).resolve().parent.parent / "examples" / "magento"
CUSTOMERS, SUBSCRIBERS, ORDERS = MAGENTO / "export_customer_main.csv", MAGENTO / "subscribers.csv", MAGENTO / "export.csv"
JERUSALEM = ZoneInfo("Asia/Jerusalem")


def pseudonym(address: str) -> str:
    return "magento-" + hashlib.sha256(address.lower().encode()).hexdigest()[:16]


NOA, YOSSI, AVI, OMAR, LAYLA, SARAH, DAN = (pseudonym(f"{a}@mail.example") for a in (
    "noa.levi", "yossi.cohen", "avi.mizrahi", "omar.haddad", "layla.mansour", "sarah.miller", "dan.obrien"))
TAMAR, RAMI = pseudonym("tamar.guest@mail.example"), pseudonym("rami.o'neil@mail.example")


@pytest.fixture
def shop(project):
    return localized(project, "Asia/Jerusalem", "he_IL")


def test_the_three_exports_of_a_magento_shop_import_with_the_built_in_mapping(shop):
    c = run(shop, "customers", str(CUSTOMERS), "--map", "magento")
    s = run(shop, "customers", str(SUBSCRIBERS), "--map", "magento")
    o = run(shop, "orders", str(ORDERS), "--map", "magento")
    assert (c["mapping"], c["rows_read"], c["rows_imported"]) == ("magento/customers.yml", 7, 7)
    assert (s["mapping"], s["rows_read"], s["rows_imported"]) == ("magento/customers-newsletter.yml", 8, 8)
    # Both exports name a customer by the same id, made from the address: the guests are the only new customers.
    assert (o["mapping"], o["rows_read"], o["rows_imported"]) == ("magento/orders.yml", 8, 4)
    # Sarah's cancelled, Yossi's closed (refunded) and Noa's unpaid order; Ori checked out as a guest.
    assert (o["details"]["lines_not_purchases"], o["details"]["lines_unknown_customer"]) == (3, 1)

    customers = {r["id"]: r for r in rows(shop, Customer)}
    assert set(customers) == {NOA, YOSSI, AVI, OMAR, LAYLA, SARAH, DAN, TAMAR, RAMI}
    noa = customers[NOA]
    assert (noa["email"], noa["first_name"], noa["last_name"]) == ("noa.levi@mail.example", "נועה", "לוי")
    assert noa["created_at"].replace(tzinfo=UTC) == datetime(2025, 3, 14, 8, 12, 31, tzinfo=UTC)  # the database's UTC
    assert {k: noa["attributes"][k] for k in ("magento_website", "magento_store", "magento_created_in", "magento_group_id")} == {
        "magento_website": "base", "magento_store": "he_il", "magento_created_in": "Hebrew Store View", "magento_group_id": 1}
    assert customers[OMAR]["first_name"] == "عمر" and customers[OMAR]["attributes"]["magento_store_view"] == "Arabic Store View"
    # Password hashes, reset tokens and birth dates are never read.
    stored = json.dumps([r["attributes"] for r in customers.values()])
    assert "Xq8Lr2mZ" not in stored and "b5Fm1kQ" not in stored and "1990-04-02" not in stored
    # The grid's HTML escapes and its ---- for a guest's name are undone.
    assert customers[DAN]["last_name"] == "O'Brien"
    assert customers[RAMI]["email"] == "rami.o'neil@mail.example"
    assert (customers[TAMAR]["first_name"], customers[TAMAR]["last_name"]) == (None, None)

    consent = {r["customer_id"]: r["opted_in"] for r in rows(shop, Preference) if r["topic"] == "*"}
    # Subscribed: opted in (undated, as the grid has no dates). Unsubscribed (Layla): an opt-out as of the import,
    # though nothing was on record, so not even a campaign with consent: opt-out mails her. Not Activated (Dan) and
    # no subscription (Yossi): no consent on record, so an opt-in campaign never mails them.
    assert consent == {NOA: True, AVI: True, OMAR: True, SARAH: True, TAMAR: True, RAMI: True, LAYLA: False}

    purchases = {r["event_id"]: r for r in rows(shop, Event) if r["type"] == "purchase"}
    assert {e: (r["customer_id"], r["value"], r["product_id"]) for e, r in purchases.items()} == {
        "order:1000000009:1": (NOA, 389.9, None),
        "order:1000000012:1": (TAMAR, 129.9, None),
        "order:2000000007:1": (OMAR, 298.0, None),  # AED 300, in the base currency ILS 298
        "order:2000000009:1": (LAYLA, 294.0, None),  # ILS 392 of which AED 100 of AED 400 were refunded
    }
    # "Dec 2, 2026 08:41:19 PM" is the admin's (the project's) local time.
    assert purchases["order:2000000009:1"]["occurred_at"].replace(tzinfo=UTC) == datetime(2026, 12, 2, 20, 41, 19, tzinfo=JERUSALEM)

    # The same files again change nothing.
    assert run(shop, "orders", str(ORDERS), "--map", "magento")["details"]["purchases_removed"] == 0
    assert len([r for r in rows(shop, Event) if r["type"] == "purchase"]) == 4


def test_a_subscriber_who_unsubscribed_since_the_last_export_is_opted_out_as_of_the_import(shop, tmp_path):
    run(shop, "customers", str(SUBSCRIBERS), "--map", "magento")
    later = rewritten(tmp_path, SUBSCRIBERS, lambda row: row.update({"Status": "Unsubscribed"}) if row["ID"] == "9" else None)
    done = run(shop, "customers", str(later), "--map", "magento")
    assert done["details"]["undated_opt_outs"] == 1
    (omar,) = [r for r in rows(shop, Preference) if r["customer_id"] == OMAR and r["topic"] == "*"]
    assert omar["opted_in"] is False


def test_the_command_line_says_what_became_of_the_orders(shop):
    run(shop, "customers", str(CUSTOMERS), "--map", "magento")
    run(shop, "customers", str(SUBSCRIBERS), "--map", "magento")
    out = invoke(shop, "orders", str(ORDERS), "--map", "magento").output
    assert "Imported 4 purchases from 8 rows (mapping magento/orders.yml)" in out
    assert "1 line(s) of orders by an address no customer has (guest checkouts): not imported" in out
    assert "3 line(s) of cancelled, refunded or unpaid orders: not purchases" in out


def test_amounts_with_their_currency_and_status_codes_of_older_exports_read_too(shop, tmp_path):
    # Magento writes a grid's prices as stored (389.9000) or formatted for the admin (₪389.90, AED 1,300.00), and
    # older versions the status codes (complete, holded) where 2.4 writes their labels.
    def formatted(row):
        if row["ID"] == "2000000007":
            row.update({"Grand Total (Base)": "₪1,298.00", "Grand Total (Purchased)": "AED 1,300.00", "Status": "holded"})
        if row["ID"] == "1000000009":
            row.update({"Grand Total (Base)": "₪389.90", "Grand Total (Purchased)": "₪389.90", "Status": "complete"})
    run(shop, "customers", str(CUSTOMERS), "--map", "magento")
    run(shop, "customers", str(SUBSCRIBERS), "--map", "magento")
    run(shop, "orders", str(rewritten(tmp_path, ORDERS, formatted)), "--map", "magento")
    values = {r["event_id"]: r["value"] for r in rows(shop, Event) if r["type"] == "purchase"}
    assert values["order:2000000007:1"] == 1298.0 and values["order:1000000009:1"] == 389.9


@pytest.mark.parametrize("column, value, expected", [
    ("Status", "Shipped", "field 'Status': 'Shipped' is not one of the values the mapping knows (Complete, Processing, Closed"),
    ("Purchase Date", "2026-12-02 20:41:19",
     "field 'Purchase Date': '2026-12-02 20:41:19' is not in the format '%b %d, %Y %I:%M:%S %p' (e.g. Mar 14, 2026 10:12:31 AM)"),
    ("Grand Total (Base)", "392,00 ₪", "field 'Grand Total (Base)': '392,00 ₪': ',' is not between groups of three digits"),
])
def test_a_bad_cell_of_an_order_export_names_file_line_and_column_and_nothing_is_imported(shop, tmp_path, column, value, expected):
    run(shop, "customers", str(CUSTOMERS), "--map", "magento")
    bad = rewritten(tmp_path, ORDERS, lambda row: row.update({column: value}) if row["ID"] == "2000000007" else None)
    result = invoke(shop, "orders", str(bad), "--map", "magento")
    assert result.exit_code == 4, result.output
    assert f"{bad}: 1 bad row(s) of 8; nothing imported" in result.output
    assert f"{bad}:7: {expected}" in result.output
    assert [r for r in rows(shop, Event) if r["type"] == "purchase"] == []


def test_an_export_without_the_customer_email_column_says_which_column_is_missing(shop, tmp_path):
    # The grid's default view hides "Customer Email": an export made without switching it on cannot name the customers.
    with ORDERS.open(encoding="utf-8") as fh:
        data = list(csv.reader(fh))
    at = data[0].index("Customer Email")
    bare = tmp_path / "export.csv"
    with bare.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows([r[:at] + r[at + 1:] for r in data])
    result = invoke(shop, "orders", str(bare), "--map", "magento")
    assert result.exit_code == 4 and "Customer Email" in result.output, result.output


def test_a_subscriber_status_magento_adds_later_is_an_error_not_a_guess(shop, tmp_path):
    bad = rewritten(tmp_path, SUBSCRIBERS, lambda row: row.update({"Status": "Pending"}) if row["ID"] == "9" else None)
    result = invoke(shop, "customers", str(bad), "--map", "magento")
    assert result.exit_code == 4
    assert (f"{bad}:7: field 'Status': 'Pending' is not one of the values the mapping knows "
            "(Subscribed, Unsubscribed, Not Activated, Unconfirmed)") in result.output
    assert rows(shop, Customer) == []


def test_a_single_website_shop_exports_subscribers_without_the_store_columns(shop, tmp_path):
    # Magento hides Web Site, Store and Store View in single-store mode.
    with SUBSCRIBERS.open(encoding="utf-8") as fh:
        data = [r[:6] for r in csv.reader(fh)]
    single = tmp_path / "subscribers.csv"
    with single.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows(data)
    assert run(shop, "customers", str(single), "--map", "magento")["rows_imported"] == 8


def test_a_copy_of_the_mapping_gives_customers_the_language_of_their_store_view(shop, tmp_path):
    builtin = Path(load_mapping.__code__.co_filename).parent / "mappings" / "magento" / "customers.yml"
    copy = tmp_path / "customers.yml"
    copy.write_text(builtin.read_text(encoding="utf-8") + "  locale: {column: _store, parse: lookup, values: "
                    "{he_il: he_IL, ar_ae: ar_AE, en_ae: en_AE, default: he_IL, admin: null}}\n", encoding="utf-8")
    run(shop, "customers", str(CUSTOMERS), "--map", str(copy))
    locales = {r["id"]: r["locale"] for r in rows(shop, Customer)}
    assert (locales[NOA], locales[OMAR], locales[SARAH], locales[DAN]) == ("he_IL", "ar_AE", "en_AE", "he_IL")
    assert locales[AVI] == "he_IL"  # made in the admin: no store view, so the project's default_locale


@settings(deadline=None)
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2026, 11, 30)))
def test_every_purchase_date_the_orders_grid_writes_reads_back_as_that_local_time(moment):
    (parse,) = [o.parse for o in load_mapping("magento", "orders", timezone="Asia/Jerusalem").outputs if o.target == "ordered_at"]
    moment = moment.replace(microsecond=0)
    # PHP's 'M j, Y h:i:s A': the day without a leading zero, the hour from 01 to 12.
    written = f"{moment:%b} {moment.day}, {moment:%Y %I:%M:%S %p}"
    local = moment.replace(tzinfo=JERUSALEM)
    if local.astimezone(UTC).astimezone(JERUSALEM).replace(tzinfo=None) != moment:
        return  # an hour the clocks skipped when summer time began: never written
    assert parse(written) == local.astimezone(UTC)


def php_escape(text: str) -> str:
    """What Magento's escapeHtml writes (htmlspecialchars with ENT_QUOTES)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;").replace("'", "&#039;")


@given(st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1).filter(lambda t: t.strip() not in ("", "----")))
def test_a_grid_cell_reads_back_as_the_text_magento_escaped(value):
    read = make_text(html=True, blank=["----"])
    assert read(php_escape(value)) == value.strip()
    assert read("----") is None


def test_one_address_on_two_websites_is_refused_in_one_file_and_one_customer_from_an_export_per_website(shop, tmp_path):
    # Magento's account scope "Per Website" lets one address have an account on each website: one mailbox, one customer.
    with CUSTOMERS.open(encoding="utf-8") as fh:
        header, noa = fh.readline(), fh.readline()
    both = tmp_path / "export_customer_main.csv"
    both.write_text(header + noa + noa.replace(",base,he_il,", ",gulf,ar_ae,"), encoding="utf-8")
    result = invoke(shop, "customers", str(both), "--map", "magento")
    assert result.exit_code == 4 and f"{both}:3: field 'email': the same address is also on line 2: one address" in result.output
    for website, line in (("base", noa), ("gulf", noa.replace(",base,he_il,", ",gulf,ar_ae,"))):
        (tmp_path / f"{website}.csv").write_text(header + line, encoding="utf-8")
        run(shop, "customers", str(tmp_path / f"{website}.csv"), "--map", "magento")
    (customer,) = rows(shop, Customer)
    assert customer["id"] == NOA and customer["attributes"]["magento_website"] == "gulf"  # the later export's


@given(st.decimals(min_value=0, max_value=10_000_000, places=2, allow_nan=False, allow_infinity=False))
def test_an_amount_the_admin_formats_in_shekels_or_dirhams_reads_back_as_the_amount(amount):
    from relmail.importers.values import make_money

    read = make_money(None)
    for written in (f"₪{amount:,.2f}", f"AED {amount:,.2f}", f"{amount:.4f}"):
        assert read(written) == pytest.approx(float(amount)), written
