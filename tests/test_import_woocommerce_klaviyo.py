"""A WooCommerce shop and its Klaviyo list through the built-in mappings, from the command line.

The files are the repository's samples (``examples/woocommerce/``,
``examples/klaviyo/``) in the layouts those tools write: WooCommerce's
product export (with its byte order mark), the Analytics customers report,
the Customer/Order/Coupon Export's "One Row per Item" orders, a Klaviyo list
export. The project's time zone (Europe/Amsterdam) is the shop's. Each test
runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relmail.cli import cli
from relmail.store.db import connect
from relmail.store.models import Customer, Event, Preference, Product, ShopAccount, Suppression
from shop_imports import import_json as run
from shop_imports import table_rows as rows

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WOO, KLAVIYO = EXAMPLES / "woocommerce", EXAMPLES / "klaviyo"
CUSTOMERS = WOO / "customers_report_2026-12-06.csv"
PRODUCTS = WOO / "wc-product-export-6-12-2026.csv"
ORDERS = WOO / "orders-export-2026_12_06.csv"
LIST = KLAVIYO / "Nieuwsbrief_list_export.csv"


def pseudonym(prefix: str, address: str) -> str:
    """The id the mappings give a customer the export names only by address: it does not spell the address."""
    return prefix + hashlib.sha256(address.lower().encode()).hexdigest()[:16]


ANNA, JOERG, CARLA, DAAN = (pseudonym("woocommerce-", f"{a}@mail.example")
                            for a in ("anna.devries", "joerg.mueller", "carla.bos", "daan.smit"))


def load_all(project) -> dict[str, dict]:
    return {
        "customers": run(project, "customers", str(CUSTOMERS), "--map", "woocommerce"),
        "products": run(project, "products", str(PRODUCTS), "--map", "woocommerce"),
        "orders": run(project, "orders", str(ORDERS), "--map", "woocommerce"),
        "klaviyo": run(project, "customers", str(LIST), "--map", "klaviyo"),
    }


def test_a_woocommerce_shop_and_its_klaviyo_list_import_with_the_built_in_mappings(project):
    done = load_all(project)
    c, p, o, k = done["customers"], done["products"], done["orders"], done["klaviyo"]
    assert c["mapping"] == "woocommerce/customers-download.yml"
    assert (c["rows_read"], c["rows_imported"], c["skipped"]) == (5, 4, {"customers without an e-mail address": 1})
    assert (p["rows_read"], p["rows_imported"]) == (9, 7)
    assert p["skipped"] == {"products without a price of their own (variable and grouped products)": 2}
    assert (o["rows_read"], o["rows_imported"], o["skipped"]) == (10, 6, {"orders without line items": 1})
    assert o["details"]["lines_not_purchases"] == 3  # refunded, cancelled, unpaid
    assert o["details"]["lines_without_product"] == 0  # the gift card has no SKU, but its WooCommerce ID names it
    assert (k["rows_read"], k["rows_imported"], k["skipped"]) == (6, 5, {"profiles without an e-mail address": 1})
    assert (k["details"]["consent_records"], k["details"]["suppressed_addresses"], k["details"]["matched_by_email"]) == (4, 1, 3)

    customers = {r["id"]: r for r in rows(project, Customer)}
    assert set(customers) == {ANNA, JOERG, CARLA, DAAN, pseudonym("klaviyo-", "oud.adres@mail.example"),
                              pseudonym("klaviyo-", "sanne.jong@mail.example")}
    assert not any("@" in id for id in customers)  # ids are what logs and CI output name: no address in them
    joerg = customers[JOERG]
    assert (joerg["first_name"], joerg["last_name"]) == ("Jörg", "Müller")  # from Klaviyo: WooCommerce has one name field
    assert joerg["attributes"]["company"] == "Müller & Söhne, Buchbinderei"  # a quoted comma
    assert joerg["attributes"]["role"] == "Customer, Subscriber" and joerg["attributes"]["country"] == "DE"
    assert joerg["attributes"]["country_name"] == "Germany"  # Klaviyo's name, beside the shop's code
    assert "phone_number" not in joerg["attributes"] and "ip_address" not in joerg["attributes"]  # dropped on purpose
    assert customers[ANNA]["attributes"]["favoriete_genre"] == "Poëzie"  # a Klaviyo property of the account's own
    assert customers[ANNA]["attributes"]["total_spent"] == 84.79
    # An empty "Date registered": a guest checkout (an account comes first where one address is two ids).
    assert [customers[c]["attributes"]["guest"] for c in (ANNA, JOERG, CARLA, DAAN)] == [False, False, True, False]
    # Registered in Amsterdam at 20:03:11 (summer time); Klaviyo saw her two minutes earlier: the earliest is kept.
    assert customers[ANNA]["created_at"].replace(tzinfo=UTC) == datetime(2024, 9, 12, 18, 1, 52, tzinfo=UTC)
    assert customers[DAAN]["created_at"].replace(tzinfo=UTC) == datetime(2026, 2, 14, 7, 0, tzinfo=UTC)  # winter time

    consent = {r["customer_id"]: (r["opted_in"], r["updated_at"].replace(tzinfo=UTC), r["source"]) for r in rows(project, Preference)}
    assert consent[ANNA] == (True, datetime(2024, 9, 12, 18, 3, 11, tzinfo=UTC), "klaviyo")
    assert consent[JOERG] == (False, datetime(2026, 10, 28, 21, 40, 10, tzinfo=UTC), "klaviyo")  # a dated global opt-out
    assert CARLA not in consent and DAAN not in consent  # never subscribed; WooCommerce keeps no consent
    (suppressed,) = rows(project, Suppression)
    assert suppressed["reason"] == "cleaned"  # a hard bounce: about the address, as Mailchimp's cleaned

    products = {r["id"]: r for r in rows(project, Product)}
    assert set(products) == {"9789025471456", "9789046707077", "LT-LAMP-ZW", "LT-LAMP-WIT", "120", "LT-LEGGER-COG", "9789463810135"}
    diner = products["9789025471456"]
    assert (diner["name"], diner["category"], diner["price"]) == ("Het diner", "romans", 22.5)  # "Boeken > Romans, Cadeaus"
    assert diner["image_url"].endswith("/het-diner.jpg") and diner["attributes"]["tags"] == ["bestseller", "literair"]
    white = products["LT-LAMP-WIT"]  # a variation: categories, tags and image from its product's row
    assert (white["name"], white["category"], white["price"]) == ('Leeslampje "Nachtuil" - Wit', "leeslampen", 17.5)
    assert white["image_url"].endswith("/leeslampje.jpg") and white["attributes"]["tags"] == ["cadeau", "verlichting"]
    assert products["LT-LAMP-ZW"]["image_url"].endswith("/leeslampje-zwart.jpg")  # its own image
    assert products["LT-LEGGER-COG"]["category"] == "cadeaus"  # its product has no SKU: Parent is id:130
    assert products["120"]["name"] == "Cadeaubon € 25"  # no SKU: the WooCommerce ID
    assert products["9789463810135"]["category"] == "uncategorised"
    # A draft (Published -1) has no public page: never recommended; every published product is.
    assert products["9789463810135"]["attributes"]["available"] is False
    assert all(p["attributes"]["available"] is True for pid, p in products.items() if pid != "9789463810135")
    poems = products["9789046707077"]
    assert poems["category"] == "poezie"
    # On sale from the first second of 27 November to the last of the 30th, in Amsterdam (winter time, UTC+1).
    assert (poems["price"], poems["sale_price"]) == (12.5, 10.0) and "sale_price" not in poems["attributes"]
    assert poems["sale_starts_at"].replace(tzinfo=UTC) == datetime(2026, 11, 26, 23, 0, tzinfo=UTC)
    assert poems["sale_ends_at"].replace(tzinfo=UTC) == datetime(2026, 11, 30, 22, 59, 59, tzinfo=UTC)
    assert diner["sale_price"] is None and diner["sale_starts_at"] is None and diner["sale_ends_at"] is None
    assert poems["attributes"]["categories"] == ["Boeken > Poëzie", "Strips, graphic novels"]  # WooCommerce writes "Strips\\, ..."

    events = {e["event_id"]: e for e in rows(project, Event)}
    assert sorted(events) == ["order:5001:1", "order:5001:2", "order:5002:1", "order:5002:2", "order:5005:1", "order:5006:1"]
    assert events["order:5001:1"]["customer_id"] == ANNA and events["order:5001:2"]["product_id"] == "LT-LAMP-ZW"
    assert events["order:5001:1"]["occurred_at"].replace(tzinfo=UTC) == datetime(2026, 3, 14, 9, 12, 31, tzinfo=UTC)
    # 02:30 on the night the clocks go back: the first of the two (summer time); the address in capitals is Jörg's.
    assert events["order:5002:1"]["occurred_at"].replace(tzinfo=UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert events["order:5002:1"]["customer_id"] == JOERG
    assert events["order:5002:1"]["value"] == round(24.99 * (1 - 17.50 / 46.44), 2)  # partly refunded
    assert events["order:5006:1"]["value"] == 20.0  # the line after its coupon
    # A gift card without SKU: the products export names it by its ID, and so does its order line.
    assert events["order:5005:1"]["product_id"] == "120" and "120" in products


def test_a_second_import_of_the_same_files_changes_nothing(project):
    load_all(project)
    def snapshot():
        return {m.__name__: sorted(rows(project, m), key=lambda r: sorted((k, str(v)) for k, v in r.items() if k != "attributes"))
                for m in (Customer, Product, Preference, Suppression)}

    before = snapshot()
    events = sorted((e["event_id"], e["value"]) for e in rows(project, Event))
    again = load_all(project)
    assert snapshot() == before
    assert sorted((e["event_id"], e["value"]) for e in rows(project, Event)) == events
    assert again["klaviyo"]["details"]["consent_records"] == 0 and again["orders"]["details"]["purchases_removed"] == 0


def test_the_e_mailed_customers_report_is_read_by_its_own_column_names(project, tmp_path):
    # A report of several pages is written by the server: other names, phone numbers, a byte order mark.
    emailed = tmp_path / "wc-customers-report-export-17650.csv"
    emailed.write_text(
        "\ufeffName,Username,\"Last Active\",\"Sign Up\",Email,Orders,\"Total Spend\",AOV,\"Country / Region\",City,Region,"
        "\"Postal Code\",\"Billing Phone\",\"Shipping Phone\",Role\n"
        "\"Anna de Vries\",anna.dv,2026-11-30T09:12:44,2024-09-12T20:03:11,anna.devries@mail.example,2,84.79,42.40,NL,"
        "Amsterdam,NH,\"1012 AB\",\"+31 6 12345678\",,Customer\n"
        "\"Carla Bos\",,2026-06-01T12:00:00,,carla.bos@mail.example,1,0,0,NL,Utrecht,UT,,,,\n", encoding="utf-8")
    done = run(project, "customers", str(emailed), "--map", "woocommerce")
    assert (done["mapping"], done["rows_imported"]) == ("woocommerce/customers-emailed.yml", 2)
    anna, carla = sorted(rows(project, Customer), key=lambda c: c["id"] != ANNA)
    assert anna["created_at"].replace(tzinfo=UTC) == datetime(2024, 9, 12, 18, 3, 11, tzinfo=UTC)
    assert "billing_phone" not in anna["attributes"] and anna["attributes"]["zip"] == "1012 AB"
    # An empty "Sign Up": a guest checkout.
    assert (anna["attributes"]["guest"], carla["attributes"]["guest"], carla["created_at"]) == (False, True, None)


@pytest.mark.parametrize("kind, path, mapping, field", [
    # A Klaviyo consent status the mapping does not know: never guessed.
    ("customers", LIST, "klaviyo", "Email Marketing Consent"),
    ("orders", ORDERS, "woocommerce", "status"),
])
def test_a_wrong_file_is_one_line_naming_file_line_and_field_and_imports_nothing(project, tmp_path, kind, path, mapping, field):
    text = path.read_text(encoding="utf-8-sig")
    bad = tmp_path / path.name
    old = ",NEVER_SUBSCRIBED," if mapping == "klaviyo" else ",refunded,"
    new = "PENDING_DOUBLE_OPT_IN" if mapping == "klaviyo" else "shipped"
    bad.write_text(text.replace(old, f",{new},", 1), encoding="utf-8")
    line = next(i for i, row in enumerate(bad.read_text(encoding="utf-8").splitlines(), 1) if new in row)
    if kind == "orders":
        run(project, "customers", str(CUSTOMERS), "--map", "woocommerce")
    result = CliRunner().invoke(cli, ["--project", str(project.root), "import", kind, str(bad), "--map", mapping])
    assert result.exit_code == 4
    assert f"{bad}:{line}: field '{field}': '{new}' is not one of the values the mapping knows" in result.stderr
    assert [entry for entry in result.stderr.splitlines() if entry.startswith("  ")] == [
        entry for entry in result.stderr.splitlines() if f"{bad}:{line}:" in entry]  # one problem, one line
    assert rows(project, Event) == [] and rows(project, Preference) == []
    assert len(rows(project, Customer)) == (4 if kind == "orders" else 0)


def test_orders_in_the_extensions_one_row_per_order_format_are_refused_saying_which_format_to_export(project, tmp_path):
    # The extension's format "Default" writes each order once, its lines joined in one cell: a new shop's first
    # export. Told which format relmail reads, in one line, not as the columns it lacks.
    per_order = tmp_path / "orders-export-2026_12_07.csv"
    per_order.write_text(
        "order_id,order_number,order_number_formatted,date,status,order_total,refunded_total,customer_id,billing_email,"
        "line_items,shipping_items,fee_items,tax_items,coupon_items,refunds,order_notes,download_permissions_granted\n"
        "5001,5001,5001,2026-03-14 10:12:31,completed,49.34,0.00,12,anna.devries@mail.example,"
        "\"id:7|name:Het diner|product_id:101|sku:9789025471456|quantity:1|subtotal:22.50|total:22.50\",,,,,,,1\n",
        encoding="utf-8")
    run(project, "customers", str(CUSTOMERS), "--map", "woocommerce")
    result = CliRunner().invoke(cli, ["--project", str(project.root), "import", "orders", str(per_order), "--map", "woocommerce"])
    assert result.exit_code == 4
    assert result.stderr.splitlines() == [
        f"Error: {per_order}: the Customer/Order/Coupon Export's format \"Default\" (one row per order) cannot be "
        "imported; nothing imported",
        f"  {per_order}:1: this is the format \"Default\", one row per order with the order's lines in one cell "
        "(line_items): in WooCommerce > Export, Orders, choose the format \"Default - One Row per Item\", export again "
        "and import that file with --map woocommerce (docs: guide/mappings.md, WooCommerce)"]
    assert rows(project, Event) == []


def test_an_export_without_map_names_the_command_that_imports_it(project):
    result = CliRunner().invoke(cli, ["--project", str(project.root), "import", "products", str(PRODUCTS)])
    assert result.exit_code == 4
    assert f"relmail import products {PRODUCTS} --map woocommerce" in result.stderr
    assert rows(project, Product) == []


def test_a_product_export_without_the_optional_columns_imports(project, tmp_path):
    # A shop without brands has no Brands column; a variation still takes its product's categories.
    table = list(csv.reader(PRODUCTS.read_text(encoding="utf-8-sig").splitlines()))
    keep = [i for i, name in enumerate(table[0]) if name != "Brands"]
    older = tmp_path / "wc-product-export.csv"
    with older.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([[row[i] for i in keep] for row in table])
    assert run(project, "products", str(older), "--map", "woocommerce")["rows_imported"] == 7
    assert {r["id"]: r["category"] for r in rows(project, Product)}["LT-LAMP-WIT"] == "leeslampen"


def test_a_store_whose_customers_have_address_ids_gets_no_customer_twice_and_a_plan_names_no_address(project, tmp_path):
    """A store filled when the mappings made ids of the addresses ("woocommerce-anna.devries@mail.example")
    keeps those customers on the next imports; a customer new to it gets an id without the address, and the
    plan's suppression list (the CI output) names ids only."""
    engine = connect(project.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(Customer.__table__.insert(), [
                {"id": "woocommerce-anna.devries@mail.example", "email": "Anna.deVries@mail.example", "attributes": {}},
                {"id": "klaviyo-sanne.jong@mail.example", "email": "sanne.jong@mail.example", "attributes": {}}])
    finally:
        engine.dispose()
    load_all(project)
    load_all(project)
    ids = {r["id"] for r in rows(project, Customer)}
    assert ids == {"woocommerce-anna.devries@mail.example", JOERG, CARLA, DAAN, pseudonym("klaviyo-", "oud.adres@mail.example"),
                   "klaviyo-sanne.jong@mail.example"}
    purchases = {r["customer_id"] for r in rows(project, Event) if r["type"] == "purchase"}
    assert "woocommerce-anna.devries@mail.example" in purchases and ANNA not in purchases
    out = CliRunner().invoke(cli, ["--project", str(project.root), "plan", "weekly", "--window", "2026-W50", "--dry-run",
                                   "--render-sample", "0", "--out", str(tmp_path / "plan.jsonl"), "--json"])
    assert out.exit_code == 0, out.output
    listed = (tmp_path / "plan.jsonl").read_text()
    assert JOERG in listed and "joerg.mueller@" not in listed + out.stdout


LANGUAGES = {"nl_BE": "nl-BE", "fr_BE": "fr-BE", "en_US": "en-US", "de_DE": "de-DE"}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.tuples(st.sampled_from(sorted(LANGUAGES)), st.sampled_from([str, str.lower, str.upper]),
                                st.sampled_from(["-", "_"])), min_size=1, max_size=6))
def test_a_profiles_locale_is_the_language_its_e_mails_are_written_in(project, picks):
    # A Belgian shop's profiles read Dutch or French: without the Locale column every one of them got default_locale
    # (the Dutch template), whatever Klaviyo knew. Klaviyo writes nl-BE; a list edited by hand may write fr_be or FR-BE.
    header, anna = LIST.read_text(encoding="utf-8-sig").splitlines()[:2]
    lines, wanted = [header + ",Locale"], {}
    for n, (locale, case, sep) in enumerate(picks):
        email = f"profile{n}.{abs(hash(tuple(picks))) % 10**9}@mail.example"
        wanted[pseudonym("klaviyo-", email)] = locale
        lines.append(anna.replace("anna.devries@mail.example", email, 1) + "," + case(LANGUAGES[locale].replace("-", sep)))
    export = project.root / "Alle profielen export.csv"
    export.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run(project, "customers", str(export), "--map", "klaviyo")
    # An export without the column, or with the cell blank, leaves each stored locale as it is.
    export.write_text("\n".join([lines[0], *(line.rpartition(",")[0] + "," for line in lines[1:])]) + "\n", encoding="utf-8")
    run(project, "customers", str(export), "--map", "klaviyo")
    stored = {r["id"]: r["locale"] for r in rows(project, Customer)}
    assert {cid: stored[cid] for cid in wanted} == wanted


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subscribed=st.datetimes(min_value=datetime(2015, 1, 1), max_value=datetime(2026, 11, 30)).map(
           lambda t: t.replace(microsecond=0)),
       new=st.booleans())
def test_an_unsubscribed_profile_without_a_consent_time_is_opted_out(project, subscribed, new):
    # Klaviyo's UNSUBSCRIBED is an opt-out, whether or not the export gives its time: one with a blank
    # time was kept opted in by the dated opt-in of an earlier export (or, for a new profile, left with no
    # record, which the shop's undated "accepts marketing: yes" then turned into an opt-in), and mailed.
    header, anna = LIST.read_text(encoding="utf-8-sig").splitlines()[:2]
    email = f"p{abs(hash((subscribed, new))) % 10**9}@mail.example"
    profile = anna.replace("anna.devries@mail.example", email, 1)
    export = project.root / "Alle profielen export.csv"
    earlier = profile.replace("2024-09-12 18:03:11", subscribed.strftime("%Y-%m-%d %H:%M:%S"), 1)
    if not new:
        export.write_text(f"{header}\n{earlier}\n", encoding="utf-8")
        run(project, "customers", str(export), "--map", "klaviyo")
    export.write_text(f"{header}\n{profile.replace(',SUBSCRIBED,2024-09-12 18:03:11,', ',UNSUBSCRIBED,,', 1)}\n", encoding="utf-8")
    done = run(project, "customers", str(export), "--map", "klaviyo")
    # The earlier export imported again, and the same export again, change nothing.
    export.write_text(f"{header}\n{earlier}\n", encoding="utf-8")
    run(project, "customers", str(export), "--map", "klaviyo")
    (pref,) = [p for p in rows(project, Preference) if p["customer_id"] == pseudonym("klaviyo-", email)]
    assert (pref["topic"], pref["opted_in"]) == ("*", False)
    assert done["details"].get("undated_opt_outs") == 1


def test_a_subscribed_profile_without_a_consent_time_is_an_opt_in_of_no_date(project):
    # Klaviyo's SUBSCRIBED with a blank time: an opt-in whose date nobody knows, stored as Shopify's undated yes is.
    # Shown and exported as "no date" (null), never as 1970-01-01; and it never undoes an opt-out dated before.
    header, anna = LIST.read_text(encoding="utf-8-sig").splitlines()[:2]
    export = project.root / "Nieuwsbrief export.csv"
    cid = pseudonym("klaviyo-", "anna.devries@mail.example")
    export.write_text(f"{header}\n{anna.replace(',SUBSCRIBED,2024-09-12 18:03:11,', ',SUBSCRIBED,,', 1)}\n", encoding="utf-8")
    done = run(project, "customers", str(export), "--map", "klaviyo")
    assert done["details"]["undated_opt_ins"] == 1 and done["details"]["undated_opt_ins_kept_out"] == 0
    (pref,) = [p for p in rows(project, Preference) if p["customer_id"] == cid]
    assert (pref["topic"], pref["opted_in"]) == ("*", True)
    shown = CliRunner().invoke(cli, ["--project", str(project.root), "customers", "show", cid, "--json"])
    exported = CliRunner().invoke(cli, ["--project", str(project.root), "customers", "export", cid])
    assert [p["updated_at"] for p in json.loads(shown.stdout)["preferences"]] == [None]
    assert [c["changed_at"] for c in json.loads(exported.stdout)["consent_changes"]] == [None]
    text = CliRunner().invoke(cli, ["--project", str(project.root), "customers", "show", cid]).stdout
    assert "no date" in text and "1970" not in text + shown.stdout + exported.stdout

    # A dated opt-out, then the undated yes again (the same export imported once more): still opted out, and said so.
    export.write_text(f"{header}\n{anna.replace(',SUBSCRIBED,2024-09-12 18:03:11,', ',UNSUBSCRIBED,2025-03-01 08:00:00,', 1)}\n",
                      encoding="utf-8")
    run(project, "customers", str(export), "--map", "klaviyo")
    export.write_text(f"{header}\n{anna.replace(',SUBSCRIBED,2024-09-12 18:03:11,', ',SUBSCRIBED,,', 1)}\n", encoding="utf-8")
    again = run(project, "customers", str(export), "--map", "klaviyo")
    assert again["details"]["undated_opt_ins"] == 1 and again["details"]["undated_opt_ins_kept_out"] == 1
    (pref,) = [p for p in rows(project, Preference) if p["customer_id"] == cid]
    assert (pref["opted_in"], pref["updated_at"]) == (False, datetime(2025, 3, 1, 8, tzinfo=UTC))


def test_why_says_a_hard_bounced_klaviyo_profile_was_cleaned_and_since_when(project):
    # Klaviyo's HARD_BOUNCE goes on the suppression list as 'cleaned'; relmail why named every suppressed
    # address "erased on request or blocked", which sent the shop looking for an erasure nobody asked for.
    load_all(project)
    cleaned = pseudonym("klaviyo-", "oud.adres@mail.example")
    engine = connect(project.database_url)
    try:
        with engine.connect() as conn:
            since = conn.execute(Suppression.__table__.select()).first().created_at
    finally:
        engine.dispose()
    base = ["--project", str(project.root)]
    planned = CliRunner().invoke(cli, [*base, "plan", "weekly", "--window", "2026-W50", "--render-sample", "0"])
    assert planned.exit_code == 0, planned.output
    out = CliRunner().invoke(cli, [*base, "why", cleaned, "--run", "weekly:2026-W50", "--json"])
    assert out.exit_code == 0, out.output
    sentences = {r["code"]: r["explanation"] for d in json.loads(out.stdout)["decisions"] for r in d["reasons"]}
    assert sentences["ADDRESS_SUPPRESSED"] == (f"the address is on the suppression list since {since:%Y-%m-%d %H:%M} UTC: "
                                               "cleaned by the mailing tool (a hard bounce or an invalid address)")


def test_a_spam_complaint_imported_again_is_not_called_an_erased_address(project, tmp_path):
    # Klaviyo's SPAM_COMPLAINT is about the person: the next import writes an opt-out, as for an erased address.
    # Its summary called every such customer's address "erased", and why named the opt-out's source so too.
    export = tmp_path / "Newsletter_list_export.csv"
    export.write_text("Email,First Name,Email Marketing Consent,Email Marketing Consent Timestamp,Suppressions\n"
                      "rosa@correo.example,Rosa,SUBSCRIBED,2025-01-04 04:48:24,SPAM_COMPLAINT\n", encoding="utf-8")
    base = ["--project", str(project.root), "import", "customers", str(export), "--map", "klaviyo"]
    assert CliRunner().invoke(cli, base).exit_code == 0
    again = CliRunner().invoke(cli, base)
    assert again.exit_code == 0, again.output
    assert ("1 customer(s) have an address on the suppression list as erased, marked as spam or suppressed by the shop: "
            "wrote a global opt-out (source suppression-list) for each") in again.stderr
    assert "erased address" not in again.stderr
    customer = pseudonym("klaviyo-", "rosa@correo.example")
    out = CliRunner().invoke(cli, ["--project", str(project.root), "why", customer, "--campaign", "weekly", "--window", "2026-W50"])
    assert "source: suppression list (an address erased, marked as spam or suppressed by the shop, imported again)" in out.output


REPORT_HEADER = "Name,Username,Role,Last active,Date registered,Email,Orders,Total spend,AOV,Country / Region,City,Region,Postal code\n"
EXAMPLE = iter(range(10**6))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(people=st.lists(st.tuples(st.booleans(), st.booleans(), st.sampled_from([str, str.upper]),
                                 st.integers(0, 9), st.integers(0, 9)), min_size=1, max_size=6),
       chunk=st.integers(1, 4))
def test_a_guest_who_registered_later_is_one_customer_with_the_registered_rows_fields(project, people, chunk):
    # WooCommerce lists such a customer twice: a guest row (no username, no sign-up date) and a registered row.
    n = next(EXAMPLE)
    lines, expected = [], {}
    for i, (twice, guest_first, case, guest_seen, member_seen) in enumerate(people):
        address = f"p{n}-{i}@mail.example"
        guest = (f"Guest {i},,,2026-0{guest_seen + 1}-01T10:00:00,,{case(address)},1,10,10,NL,Utrecht,UT,\n")
        member = (f"Member {i},user{i},Customer,2026-0{member_seen + 1}-02T10:00:00,2024-05-0{i % 9 + 1}T12:00:00,"
                  f"{address},2,30,15,BE,Gent,VOV,9000\n")
        lines += ([guest, member] if guest_first else [member, guest]) if twice else [member]
        expected[pseudonym("woocommerce-", address)] = (
            f"Member {i}", "Gent", max(f"2026-0{member_seen + 1}-02", f"2026-0{guest_seen + 1}-01" if twice else ""),
            datetime(2024, 5, i % 9 + 1, 10, 0, tzinfo=UTC))  # Amsterdam summer time
    report = project.root / "customers_report.csv"
    report.write_text(REPORT_HEADER + "".join(lines), encoding="utf-8")
    done = run(project, "customers", str(report), "--map", "woocommerce", "--chunk-size", str(chunk))
    twice = sum(1 for p in people if p[0])
    assert (done["rows_read"], done["rows_imported"], done["details"]["merged_rows"]) == (len(lines), len(people), twice)
    customers = {r["id"]: r for r in rows(project, Customer) if r["id"] in expected}
    assert set(customers) == set(expected)
    for cid, (name, city, last_active, registered) in expected.items():
        got = customers[cid]
        assert (got["attributes"]["name"], got["attributes"]["city"], got["attributes"]["username"]) == (
            name, city, f"user{name.split()[1]}")
        assert got["attributes"]["last_active"].startswith(last_active)
        assert got["created_at"].replace(tzinfo=UTC) == registered
        assert got["email"].islower()  # the registered row's spelling
        assert got["attributes"]["guest"] is False  # a guest who registered later is an account


def test_two_rows_of_one_address_stay_an_error_without_duplicates_merge(project, tmp_path):
    mapping = tmp_path / "report.yml"
    mapping.write_text((Path(__file__).resolve().parent.parent / "src/relmail/importers/mappings/woocommerce/customers-download.yml")
                       .read_text().replace("duplicates:", "# duplicates:"), encoding="utf-8")
    report = tmp_path / "customers_report.csv"
    report.write_text(REPORT_HEADER + "Kim,,,2026-01-01T10:00:00,,kim@mail.example,1,10,10,NL,,,\n"
                      "Kim,kim,Customer,2026-02-01T10:00:00,2025-01-01T10:00:00,kim@mail.example,1,10,10,NL,,,\n")
    result = CliRunner().invoke(cli, ["--project", str(project.root), "import", "customers", str(report), "--map", str(mapping)])
    assert result.exit_code == 4 and f"{report}:3: field 'Email': the same address is also on line 2" in result.stderr
    assert rows(project, Customer) == []


@pytest.mark.parametrize("chunk", ["1", "10"])
@pytest.mark.parametrize("first, second", [("no", "yes"), ("yes", "no")])
@pytest.mark.parametrize("dates", [("2026-01-01", "2026-02-01"), ("2026-02-01", "2026-01-01"), ("", "")])
def test_of_two_merged_rows_an_opt_out_in_either_wins(project, tmp_path, chunk, first, second, dates):
    mapping = tmp_path / "list.yml"
    mapping.write_text("kind: customers\nmatch: email\nduplicates: merge\ntimes: {format: '%Y-%m-%d', timezone: UTC}\n"
                       "columns:\n  Email: email\n  Newsletter: {to: consent, parse: yes_no}\n"
                       + ("  Changed: {to: consent_at, parse: time}\n" if dates[0] else "")
                       + "fields:\n  id: {template: '{Email}', parse: pseudonym, prefix: list-}\n")
    members = tmp_path / "members.csv"
    cells = [f",{d}" if d else "" for d in dates]
    members.write_text(f"Email,Newsletter{',Changed' if dates[0] else ''}\nkim@mail.example,{first}{cells[0]}\n"
                       f"Kim@mail.example,{second}{cells[1]}\n")
    done = run(project, "customers", str(members), "--map", str(mapping), "--chunk-size", chunk)
    assert (done["rows_imported"], done["details"]["merged_rows"]) == (1, 1)
    # Undated, a "no" is a shop's unticked box: not opted in, which may leave no record at all.
    said = [r["opted_in"] for r in rows(project, Preference)]
    assert said == [False] or (not dates[0] and said == [])


@pytest.mark.parametrize("chunk", ["1", "3", "10000"])
def test_an_old_order_with_an_address_the_customer_changed_since_is_the_accounts_customer(project, tmp_path, chunk):
    # The customers report lists Anna's latest address; her first order (account 12) was placed with an older one.
    orders = tmp_path / ORDERS.name
    orders.write_text("".join(line.replace("anna.devries@mail.example", "anna@oud.example") if line.startswith("5001,") else line
                              for line in ORDERS.read_text(encoding="utf-8-sig").splitlines(keepends=True)), encoding="utf-8")
    run(project, "customers", str(CUSTOMERS), "--map", "woocommerce")
    run(project, "products", str(PRODUCTS), "--map", "woocommerce")
    done = run(project, "orders", str(orders), "--map", "woocommerce", "--chunk-size", chunk)
    assert (done["rows_imported"], done["details"]["matched_by_account"]) == (6, 2)
    events = {e["event_id"]: e["customer_id"] for e in rows(project, Event)}
    assert events["order:5001:1"] == events["order:5001:2"] == events["order:5005:1"] == ANNA


def orders_file(path: Path, keep, replace: dict[str, str] | None = None) -> Path:
    """The sample orders export with the orders whose lines ``keep`` (the line) keeps, the texts ``replace`` says changed."""
    header, *lines = ORDERS.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    text = header + "".join(line for line in lines if keep(line))
    for old, new in (replace or {}).items():
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    return path


def shop_accounts(project) -> set[tuple[str, str, str]]:
    return {(r["source"], r["account"], r["customer_id"]) for r in rows(project, ShopAccount)}


@pytest.mark.parametrize("chunk, own_copy", [("1", False), ("10000", False), ("10000", True)])
def test_a_weekly_orders_file_finds_an_old_address_through_the_account_an_earlier_import_linked(project, tmp_path, chunk,
                                                                                               own_copy):
    # Week 1: Anna's recent orders (account 12) with the address the customers report lists. Week 2's export holds an
    # order of hers placed long ago (a late status change) with the address she had then, and no other order of hers.
    run(project, "customers", str(CUSTOMERS), "--map", "woocommerce")
    run(project, "products", str(PRODUCTS), "--map", "woocommerce")
    week1 = orders_file(tmp_path / "week1.csv", lambda line: not line.startswith("5001,"))
    week2 = orders_file(tmp_path / "week2.csv", lambda line: line.startswith("5001,"),
                        {"anna.devries@mail.example": "anna@oud.example"})
    first = run(project, "orders", str(week1), "--map", "woocommerce", "--chunk-size", chunk)
    assert first["details"]["accounts_linked"] == 3 and "matched_by_account" not in first["details"]
    assert shop_accounts(project) == {("woocommerce", "12", ANNA), ("woocommerce", "13", JOERG), ("woocommerce", "14", DAAN)}
    # A copy of the built-in mapping (a plugin's status added) keeps its accounts: woocommerce, and so the links.
    mapping = tmp_path / "my-orders.yml"
    mapping.write_text((Path(__file__).resolve().parent.parent / "src/relmail/importers/mappings/woocommerce/orders.yml")
                       .read_text().replace("refunded: refunded}", "refunded: refunded, shipped: completed}"), encoding="utf-8")
    second = run(project, "orders", str(week2), "--map", str(mapping) if own_copy else "woocommerce", "--chunk-size", chunk)
    assert (second["rows_imported"], second["details"]["matched_by_account"]) == (2, 2)
    assert "accounts_linked" not in second["details"]  # nothing new to remember
    events = {e["event_id"]: e["customer_id"] for e in rows(project, Event)}
    assert events["order:5001:1"] == events["order:5001:2"] == events["order:5005:1"] == ANNA
    # Week 1 again: the links are there already, and nothing changes.
    again = run(project, "orders", str(week1), "--map", "woocommerce", "--chunk-size", chunk)
    assert "accounts_linked" not in again["details"] and len(shop_accounts(project)) == 3


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.sets(st.integers(min_value=1, max_value=7)))
def test_however_the_orders_are_split_into_weekly_files_each_line_is_the_customer_one_file_names(project, tmp_path, cuts):
    # Anna's order 5001 comes last with the address she had then (a late status change); her orders with the address
    # the customers report lists come in the same file or an earlier one, wherever the weeks are cut.
    if not rows(project, Customer):
        run(project, "customers", str(CUSTOMERS), "--map", "woocommerce")
        run(project, "products", str(PRODUCTS), "--map", "woocommerce")
    engine = connect(project.database_url)
    with engine.begin() as conn:  # each example starts without the links and purchases of the one before
        conn.execute(ShopAccount.__table__.delete())
        conn.execute(Event.__table__.delete())
    engine.dispose()
    header, *lines = ORDERS.read_text(encoding="utf-8-sig").replace("anna.devries@mail.example,+31", "anna@oud.example,+31", 2) \
        .splitlines(keepends=True)
    orders: dict[str, list[str]] = {}
    for line in lines:
        orders.setdefault(line.split(",", 1)[0], []).append(line)
    sequence = [*(o for o in orders if o != "5001"), "5001"]
    weeks = [sequence[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(sequence)])]
    for n, week in enumerate(weeks):
        path = tmp_path / f"week{n}.csv"
        path.write_text(header + "".join(line for o in week for line in orders[o]), encoding="utf-8")
        run(project, "orders", str(path), "--map", "woocommerce")
    events = {e["event_id"]: e["customer_id"] for e in rows(project, Event)}
    assert events["order:5001:1"] == events["order:5001:2"] == events["order:5005:1"] == ANNA
    assert events["order:5002:1"] == JOERG and len(events) == 6
    assert shop_accounts(project) == {("woocommerce", "12", ANNA), ("woocommerce", "13", JOERG), ("woocommerce", "14", DAAN)}


@pytest.mark.parametrize("same_file", [True, False])
def test_an_account_whose_orders_name_two_customers_is_an_error_where_an_order_needs_it(project, tmp_path, same_file):
    # Order 5006 of account 12 was placed with Daan's address: account 12 names Anna and Daan. Order 5001 (account 12)
    # has an address no customer has: which of the two it is, is not guessed.
    run(project, "customers", str(CUSTOMERS), "--map", "woocommerce")
    run(project, "products", str(PRODUCTS), "--map", "woocommerce")
    daan_for_12 = {",PostNL,14,Daan,": ",PostNL,12,Daan,"}
    if same_file:
        orders = orders_file(tmp_path / "orders.csv", lambda line: True,
                             {**daan_for_12, "5001,5001,2026-03-14 10:12:31,completed,4.95,1.04,0.00,0.00,3.86,0.00,49.34,0.00,EUR,"
                              "mollie_wc_gateway_ideal,PostNL,12,Anna,de Vries,,anna.devries@mail.example":
                              "5001,5001,2026-03-14 10:12:31,completed,4.95,1.04,0.00,0.00,3.86,0.00,49.34,0.00,EUR,"
                              "mollie_wc_gateway_ideal,PostNL,12,Anna,de Vries,,anna@oud.example"})
    else:
        week1 = orders_file(tmp_path / "week1.csv", lambda line: not line.startswith("5001,"), daan_for_12)
        assert run(project, "orders", str(week1), "--map", "woocommerce")["details"]["accounts_linked"] == 3  # 12 twice, 13
        assert ("woocommerce", "12", ANNA) in shop_accounts(project) and ("woocommerce", "12", DAAN) in shop_accounts(project)
        orders = orders_file(tmp_path / "week2.csv", lambda line: line.startswith("5001,"),
                             {"anna.devries@mail.example": "anna@oud.example"})
    before = rows(project, Event)
    result = CliRunner().invoke(cli, ["--project", str(project.root), "import", "orders", str(orders), "--map", "woocommerce"])
    assert result.exit_code == 4, result.output
    assert (f"{orders}:2: field 'billing_email': no customer has this e-mail address, and the orders of account '12' name "
            f"2 customers by their addresses ({', '.join(sorted([ANNA, DAAN]))}; in this file or an earlier import): "
            "which one this order is, is ambiguous") in result.stderr
    assert rows(project, Event) == before  # all or nothing


@pytest.mark.parametrize("with_account", [True, False])
def test_an_order_no_customer_and_no_other_order_of_its_account_names_says_how_to_proceed(project, tmp_path, with_account):
    text = ORDERS.read_text(encoding="utf-8-sig").replace("anna.devries@mail.example", "anna@oud.example")
    if not with_account:
        table = list(csv.reader(text.splitlines()))
        drop = table[0].index("customer_id")
        lines = [",".join(f'"{c}"' if "," in c or '"' in c else c for i, c in enumerate(r) if i != drop) for r in table]
        text = "\n".join(line.replace('""', '"') for line in lines) + "\n"
    orders = tmp_path / ORDERS.name
    orders.write_text(text, encoding="utf-8")
    run(project, "customers", str(CUSTOMERS), "--map", "woocommerce")
    result = CliRunner().invoke(cli, ["--project", str(project.root), "import", "orders", str(orders), "--map", "woocommerce"])
    assert result.exit_code == 4, result.output
    said = "nor has any order of account '12', in this file or an earlier import, named one" if with_account else "export the orders with the column 'customer_id'"
    assert f"{orders}:2: field 'billing_email': no customer has this e-mail address" in result.stderr and said in result.stderr
    assert rows(project, Event) == []


@pytest.mark.parametrize("with_variation_id", [True, False])
def test_a_variation_without_its_own_sku_is_the_product_bought(project, tmp_path, with_variation_id):
    # The white lamp has no SKU of its own: the products export names it by its ID (112), the order line by
    # its parent's SKU, as WooCommerce writes it.
    products = tmp_path / PRODUCTS.name
    products.write_text(PRODUCTS.read_text(encoding="utf-8-sig").replace("112,variation,LT-LAMP-WIT,", "112,variation,,"),
                        encoding="utf-8")
    table = list(csv.reader(ORDERS.read_text(encoding="utf-8-sig").splitlines()))
    sku = table[0].index("item_sku")
    for row in table[1:]:
        row[sku] = "LT-LAMP" if row[sku] == "LT-LAMP-WIT" else row[sku]
        row.append("112" if row[sku] == "LT-LAMP" else "0")
    table[0].append("item_variation_id")
    if not with_variation_id:
        table = [row[:-1] for row in table]
    orders = tmp_path / ORDERS.name
    with orders.open("w", encoding="utf-8", newline="") as out:
        csv.writer(out).writerows(table)
    run(project, "customers", str(CUSTOMERS), "--map", "woocommerce")
    run(project, "products", str(products), "--map", "woocommerce")
    done = run(project, "orders", str(orders), "--map", "woocommerce")
    bought = {e["event_id"]: e["product_id"] for e in rows(project, Event)}["order:5002:2"]
    # Without the variation's ID the line keeps its parent's SKU: counted as a product not in the catalogue.
    assert (bought, done["details"]["lines_unknown_product"]) == (("112", 0) if with_variation_id else ("LT-LAMP", 1))
