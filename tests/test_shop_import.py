"""A shop's exports through the built-in mappings: counts, re-imports, flagged addresses, orders, consent histories.

The files are the repository's samples (``examples/``) in Shopify's and
Mailchimp's own layouts; each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from relmail.cli import cli
from relmail.errors import ValidationError
from relmail.features import FeatureContext, compute_features
from relmail.importers import import_file
from relmail.importers.history import UNDATED
from relmail.store.models import Customer, Event, Preference, Product, Suppression

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SHOPIFY, MAILCHIMP = EXAMPLES / "shopify", EXAMPLES / "mailchimp"
MAILCHIMP_FILES = [MAILCHIMP / f"{status}_members_export_4f2a9c1e07.csv" for status in ("subscribed", "unsubscribed", "cleaned")]
VARIABLES = {"brand.url": "https://leesteken.example", "brand.name": "Het Leesteken"}

ANNA, BRAM, CARLA, DAAN, EVA, FEMKE, GIJS, HANNA, IVO, JOOST, KIM, LOTTE = (f"73021170000{i:02d}" for i in range(1, 13))
MEES = "mailchimp-118200020"


def load_all(engine, **kw) -> dict[str, object]:
    out = {
        "customers": import_file(engine, "customers", SHOPIFY / "customers_export.csv", mapping="shopify", **kw),
        "products": import_file(engine, "products", SHOPIFY / "products_export.csv", mapping="shopify", variables=VARIABLES),
        "orders": import_file(engine, "orders", SHOPIFY / "orders_export.csv", mapping="shopify"),
    }
    for path in MAILCHIMP_FILES:
        out[path.name.split("_")[0]] = import_file(engine, "customers", path, mapping="mailchimp")
    return out


def table(engine, model, order=None) -> list[dict]:
    t = model.__table__
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(t)).mappings()]
    key = order or (lambda r: tuple(str(r[c.name]) for c in t.primary_key.columns))
    return sorted(rows, key=key)


def snapshot(engine) -> dict[str, list[dict]]:
    events = [{k: v for k, v in e.items() if k != "id"} for e in table(engine, Event, order=lambda r: r["event_id"])]
    return {"customers": table(engine, Customer), "products": table(engine, Product), "events": events,
            "preferences": table(engine, Preference), "suppressions": table(engine, Suppression)}


def test_the_exports_import_with_the_built_in_mappings(engine):
    results = load_all(engine)
    c, p, o = results["customers"], results["products"], results["orders"]
    assert (c.rows_read, c.rows_imported, c.flagged_addresses, c.flagged_lines) == (12, 12, 1, [7])
    assert c.details["consent_records"] == 9 and c.details["without_consent"] == 3
    assert (p.rows_read, p.rows_imported, p.skipped) == (10, 8, {"image rows": 2})
    from relmail.cli.imports import summary_lines

    assert "image rows: 2 skipped" in summary_lines(p)  # the mapping's plural noun reads for any count
    assert (o.rows_read, o.rows_imported, o.details["lines_not_purchases"]) == (16, 14, 2)
    assert results["subscribed"].details == {"consent_records": 3, "without_consent": 0, "withdrawn_since_last_export": 0,
                                           "given_since_last_export": 0, "kept_opted_out": 0, "undated_opt_outs": 0,
                                           "undated_opt_ins": 0, "undated_opt_ins_kept_out": 0, "suppressed_addresses": 0,
                                           "matched_by_email": 2, "shared_addresses": 0, "consent_shared_addresses": 0,
                                           "consent_shared_records": 0, "consent_shared_kept_out": 0, "relisted": 0,
                                           "address_changed": 0, "still_removed": 0}
    assert results["cleaned"].details["suppressed_addresses"] == 1

    customers = {r["id"]: r for r in table(engine, Customer)}
    assert len(customers) == 13 and MEES in customers
    assert customers[ANNA]["attributes"]["tags"] == ["poëzie", "vaste klant"]  # quoted comma in the export
    assert customers[ANNA]["attributes"]["zip"] == "1012 AB"  # the spreadsheet quote taken off
    assert customers[IVO]["attributes"]["company"] == "Willems & Zn, boekbinders"
    assert "phone" not in customers[ANNA]["attributes"] and "note" not in customers[GIJS]["attributes"]  # dropped on purpose
    assert customers[ANNA]["attributes"]["favoriete_genre"] == "Poëzie"  # a Mailchimp merge field, as an attribute
    assert customers[BRAM]["created_at"] is None  # Shopify says nothing about sign-up
    assert customers[KIM]["created_at"] == datetime(2026, 10, 12, 7, 55, 40, tzinfo=UTC)  # Mailchimp: joined the list
    assert customers[ANNA]["created_at"] == datetime(2024, 9, 12, 18, 3, 11, tzinfo=UTC)

    products = {r["id"]: r for r in table(engine, Product)}
    assert set(products) == {"9789025471456", "9789025474600", "9789463810135", "9789046707077", "9789025115046",
                             "LT-POEZIE-01", "LT-LAMP-01", "LT-LAMP-02"}
    hardcover = products["9789025474600"]  # a variant row: the product's fields come from its first row
    assert (hardcover["name"], hardcover["category"], hardcover["price"]) == ("De avond is ongemak", "literaire-roman", 29.99)
    assert hardcover["image_url"].endswith("/avond-paperback.jpg") and hardcover["attributes"]["option1"] == "Gebonden"
    assert hardcover["url"] == "https://leesteken.example/products/de-avond-is-ongemak"
    assert products["LT-LAMP-02"]["image_url"].endswith("/leeslampje-wit.jpg")  # the variant's own image
    assert products["LT-LAMP-01"]["category"] == "lighting"  # no type: the last step of the product category
    assert products["LT-POEZIE-01"]["category"] == "poezie"
    # The variant price is what the customer pays; a compare-at price above it is the regular price (on sale),
    # one below it is no regular price (Shopify shows no sale): the customer still pays the variant price.
    dolfje, white, black = products["9789025115046"], products["LT-LAMP-02"], products["LT-LAMP-01"]
    assert (dolfje["price"], dolfje["sale_price"], dolfje["sale_starts_at"], dolfje["sale_ends_at"]) == (17.99, 14.99, None, None)
    assert (white["price"], white["sale_price"]) == (15.0, 17.5) and (black["price"], black["sale_price"]) == (17.5, 17.5)


def test_a_second_import_of_the_same_files_changes_nothing(engine):
    load_all(engine)
    before = snapshot(engine)
    again = load_all(engine)
    assert snapshot(engine) == before
    assert again["customers"].details["consent_records"] == 0 and again["orders"].details["purchases_removed"] == 0
    assert again["subscribed"].details["consent_records"] == 0


def test_orders_are_purchases_as_a_shop_owner_counts_them(engine):
    load_all(engine)
    events = {e["event_id"]: e for e in table(engine, Event)}
    assert all(e["type"] == "purchase" for e in events.values())
    anna = [e for e in events.values() if e["customer_id"] == ANNA]
    assert sorted((e["event_id"], e["product_id"], e["value"]) for e in anna) == [
        ("order:5612309000101:1", "9789025471456", 22.5),
        ("order:5612309000101:2", "LT-POEZIE-01", 39.98),  # 2 x 19.99
        ("order:5612309000105:1", "9789046707077", 10.0),  # 12.50 less the line's discount
    ]
    assert events["order:5612309000101:1"]["occurred_at"] == datetime(2026, 3, 14, 9, 12, 31, tzinfo=UTC)  # +0100
    assert not [e for e in events.values() if e["customer_id"] in (CARLA, GIJS)]  # refunded, cancelled
    daan = {e["product_id"]: e["value"] for e in events.values() if e["customer_id"] == DAAN}
    assert daan == {"9789463810135": round(24.99 * (1 - 17.50 / 46.44), 2), "LT-LAMP-01": round(17.50 * (1 - 17.50 / 46.44), 2)}
    assert events["order:5612309000106:1"]["customer_id"] == FEMKE  # her address is invalid, her order is not
    assert events["order:5612309000108:3"]["product_id"] is None  # a gift card without SKU


def test_an_order_cancelled_since_the_last_export_is_no_purchase_any_more(engine, tmp_path):
    load_all(engine)
    text = (SHOPIFY / "orders_export.csv").read_text(encoding="utf-8")
    first = next(line for line in text.splitlines() if line.startswith("#1005,"))
    cancelled = first.replace(",,,,Shopify Payments", ",,,,Shopify Payments")
    fields = first.split(",")
    header = text.splitlines()[0].split(",")
    fields[header.index("Cancelled at")] = "2026-10-21 08:00:00 +0200"
    later = tmp_path / "orders_export.csv"
    later.write_text(text.replace(first, ",".join(fields)), encoding="utf-8")
    assert cancelled  # the row exists
    result = import_file(engine, "orders", later, mapping="shopify")
    assert (result.rows_imported, result.details["purchases_removed"]) == (13, 1)
    assert "order:5612309000105:1" not in {e["event_id"] for e in table(engine, Event)}


def test_a_file_no_variant_of_a_built_in_mapping_fits_is_named_with_the_other_mappings(engine):
    path = SHOPIFY / "orders_export.csv"
    with pytest.raises(ValidationError) as caught:
        import_file(engine, "customers", path, mapping="mailchimp")
    assert str(caught.value).startswith(f"{path}: no variant of the built-in mapping 'mailchimp' fits its header")
    (problem,) = caught.value.problems
    assert (problem.file, problem.line) == (str(path), 1) and "built-in mappings: klaviyo, magento, prestashop, shopify, shopware, woocommerce" in problem.message
    assert table(engine, Customer) == []


def test_an_invalid_address_is_flagged_never_mailed_and_strict_refuses_it(engine):
    with pytest.raises(ValidationError) as caught:
        import_file(engine, "customers", SHOPIFY / "customers_export.csv", mapping="shopify", strict_addresses=True)
    (problem,) = caught.value.problems
    assert (problem.line, problem.field) == (7, "Email") and "invalid e-mail address" in problem.message
    assert table(engine, Customer) == []

    load_all(engine)
    femke = {r["id"]: r for r in table(engine, Customer)}[FEMKE]
    assert (femke["email"], femke["email_valid"]) == ("broken@@mail.example", False)
    frame = compute_features(engine, [ANNA, FEMKE], datetime(2026, 12, 1, tzinfo=UTC))
    assert frame["email_valid"].tolist() == [1.0, 0.0]


def test_an_address_relmail_cannot_send_to_is_flagged_not_planned_as_a_send(engine, tmp_path):
    # Found with `relmail send newsletter --window this-week` after importing a Mailchimp
    # member 'sören.neu@example.de': the plan said send, the render refused the address
    # (a non-ASCII local part needs SMTPUTF8, which relmail's e-mails never use).
    text = (MAILCHIMP / "subscribed_members_export_4f2a9c1e07.csv").read_text(encoding="utf-8")
    export = tmp_path / "subscribed_members_export_4f2a9c1e07.csv"
    export.write_text(text.replace("mees.kok@mail.example", "sören.kok@mail.example"), encoding="utf-8")
    result = import_file(engine, "customers", export, mapping="mailchimp")
    assert (result.flagged_lines, result.flagged_reasons) == ([4], ["needs SMTPUTF8: non-ASCII local part"])
    stored = {r["id"]: r for r in table(engine, Customer)}[MEES]
    assert (stored["email"], stored["email_valid"]) == ("sören.kok@mail.example", False)
    frame = compute_features(engine, [MEES], datetime(2026, 12, 1, tzinfo=UTC))
    assert frame["email_valid"].tolist() == [0.0]


def test_consent_follows_the_dated_record_whatever_the_import_order(engine):
    def consent() -> dict[str, tuple]:
        """Address -> (opted in, since): the ids differ by order (a Mailchimp member first gets its own)."""
        email = {r["id"]: r["email"] for r in table(engine, Customer)}
        return {email[r["customer_id"]]: (r["opted_in"], r["updated_at"]) for r in table(engine, Preference) if r["topic"] == "*"}

    load_all(engine)  # Shopify first, Mailchimp after
    first = consent()
    with engine.begin() as conn:
        for model in (Event, Preference, Customer, Suppression):
            conn.execute(model.__table__.delete())
    for path in MAILCHIMP_FILES:  # the other way round
        import_file(engine, "customers", path, mapping="mailchimp")
    result = import_file(engine, "customers", SHOPIFY / "customers_export.csv", mapping="shopify")
    assert result.details["matched_by_email"] == 4  # Anna, Joost, Kim, Lotte: Mailchimp members first (Mees is no shop customer)
    assert consent() == first
    assert first["joost.vandijk@mail.example"] == (False, datetime(2026, 10, 28, 21, 40, 10, tzinfo=UTC))  # unsubscribed in Mailchimp
    assert first["kim.dekker@mail.example"][0] is True  # subscribed in Mailchimp, "no" at Shopify's checkout
    assert first["carla.bakker@mail.example"] == (True, UNDATED)  # Shopify's yes has no date
    # "no": no consent on record, not "unsubscribed from everything"
    assert "bram.jansen@mail.example" not in first and "gijs.deboer@mail.example" not in first


def test_a_shop_flag_turned_no_since_the_last_export_wins_over_an_older_mailchimp_opt_in(engine, tmp_path):
    # Anna accepted marketing in Shopify and subscribed in Mailchimp (dated). A week later the
    # shop's export says no: she unsubscribed in the shop, and must not be mailed any more.
    load_all(engine)
    export = (SHOPIFY / "customers_export.csv").read_text(encoding="utf-8").splitlines()
    week2 = tmp_path / "customers_export.csv"
    week2.write_text("\n".join([export[0]] + [line.replace(",yes,", ",no,", 1) if line.startswith(f"'{ANNA},") else line
                                               for line in export[1:]]) + "\n", encoding="utf-8")
    result = import_file(engine, "customers", week2, mapping="shopify")
    assert result.details["withdrawn_since_last_export"] == 1
    anna = {r["topic"]: r for r in table(engine, Preference) if r["customer_id"] == ANNA}["*"]
    assert anna["opted_in"] is False and anna["updated_at"] > datetime(2026, 2, 1, 8, 30, tzinfo=UTC)
    # Kim said no at the checkout both times and subscribed in Mailchimp: still opted in.
    kim = {r["topic"]: r for r in table(engine, Preference) if r["customer_id"] == KIM}["*"]
    assert kim["opted_in"] is True
    # The same export again changes nothing.
    again = import_file(engine, "customers", week2, mapping="shopify")
    assert again.details["withdrawn_since_last_export"] == 0
    customers = {r["id"]: r for r in table(engine, Customer)}
    assert customers[ANNA]["attributes"]["accepts_email_marketing"] is False
    # A yes in a later export may be a new checkout's, or last week's export imported again: it has no
    # date to tell, so it never undoes her opt-out; the summary says so.
    week3 = import_file(engine, "customers", SHOPIFY / "customers_export.csv", mapping="shopify")
    assert (week3.details["given_since_last_export"], week3.details["kept_opted_out"]) == (0, 1)
    assert ({r["topic"]: r for r in table(engine, Preference) if r["customer_id"] == ANNA}["*"]["opted_in"]) is False
    # Her new opt-in, imported with its date, does.
    later = datetime.now(UTC)
    (tmp_path / "consent.csv").write_text(f"customer_id,topic,opted_in,updated_at,source\n{ANNA},*,yes,{later.isoformat()},signup-form\n")
    import_file(engine, "preferences", tmp_path / "consent.csv")
    anna = {r["topic"]: r for r in table(engine, Preference) if r["customer_id"] == ANNA}["*"]
    assert (anna["opted_in"], anna["updated_at"], anna["source"]) == (True, later, "signup-form")


def test_a_mailchimp_record_changed_after_an_opt_out_in_relmail_is_no_new_consent(engine, tmp_path):
    # Anna confirmed her Mailchimp subscription in 2024 and has opted out of all e-mail in relmail since (the
    # preference page). Mailchimp knows nothing of it: its next export still lists her as subscribed, with a
    # LAST_CHANGED after her opt-out because something in her record changed there (a merge field, a tag).
    # That is no new consent: she stays opted out. A subscribe is dated when it was given.
    load_all(engine)
    opted_out = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    (tmp_path / "consent.csv").write_text(
        f"customer_id,topic,opted_in,updated_at,source\n{ANNA},*,no,{opted_out.isoformat()},preference-page\n")
    import_file(engine, "preferences", tmp_path / "consent.csv")
    rows = list(csv.reader(io.StringIO((MAILCHIMP / "subscribed_members_export_4f2a9c1e07.csv").read_text(encoding="utf-8"))))
    next(r for r in rows[1:] if r[0] == "anna.devries@mail.example")[rows[0].index("LAST_CHANGED")] = "2026-12-03 10:00:00"
    later = tmp_path / "subscribed_members_export_4f2a9c1e07.csv"
    with later.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    result = import_file(engine, "customers", later, mapping="mailchimp")
    assert result.details["consent_records"] == 0
    anna = {r["topic"]: r for r in table(engine, Preference) if r["customer_id"] == ANNA}["*"]
    assert (anna["opted_in"], anna["updated_at"], anna["source"]) == (False, opted_out, "preference-page")


def test_a_shop_flag_turned_yes_with_no_opt_out_on_record_is_consent_as_of_now(engine, tmp_path):
    # Bram said no at the checkout (nothing written); a week later the shop's export says yes.
    load_all(engine)
    assert not [r for r in table(engine, Preference) if r["customer_id"] == BRAM]
    export = (SHOPIFY / "customers_export.csv").read_text(encoding="utf-8").splitlines()
    week2 = tmp_path / "customers_export.csv"
    week2.write_text("\n".join([export[0]] + [line.replace(",no,", ",yes,", 1) if line.startswith(f"'{BRAM},") else line
                                               for line in export[1:]]) + "\n", encoding="utf-8")
    result = import_file(engine, "customers", week2, mapping="shopify")
    assert (result.details["given_since_last_export"], result.details["kept_opted_out"]) == (1, 0)
    bram = {r["topic"]: r for r in table(engine, Preference) if r["customer_id"] == BRAM}["*"]
    assert bram["opted_in"] is True and bram["updated_at"] > datetime(2026, 2, 1, 8, 30, tzinfo=UTC)


def test_a_stale_shop_export_imported_again_never_undoes_a_mailchimp_unsubscribe(engine, tmp_path):
    # Joost unsubscribed in Mailchimp (dated). The shop's flag for him goes yes -> no -> yes only
    # because last week's export is imported again by mistake: he stays opted out.
    load_all(engine)
    export = (SHOPIFY / "customers_export.csv").read_text(encoding="utf-8").splitlines()
    assert any(line.startswith(f"'{JOOST},") and ",yes," in line for line in export)
    week2 = tmp_path / "customers_export.csv"
    week2.write_text("\n".join([export[0]] + [line.replace(",yes,", ",no,", 1) if line.startswith(f"'{JOOST},") else line
                                               for line in export[1:]]) + "\n", encoding="utf-8")
    assert import_file(engine, "customers", week2, mapping="shopify").details["withdrawn_since_last_export"] == 0
    stale = import_file(engine, "customers", SHOPIFY / "customers_export.csv", mapping="shopify")
    assert stale.details["given_since_last_export"] == 0
    joost = {r["topic"]: r for r in table(engine, Preference) if r["customer_id"] == JOOST}["*"]
    assert (joost["opted_in"], joost["source"], joost["updated_at"]) == (False, "mailchimp",
                                                                         datetime(2026, 10, 28, 21, 40, 10, tzinfo=UTC))


def test_a_copy_of_the_shopify_mapping_keeps_seeing_the_flag_turn(engine, tmp_path):
    # A shop that copied the built-in mapping into maps/ to change it: the memory of the last flag
    # is named by the column, so the week after switching still sees Anna's yes turn no.
    import relmail.importers

    load_all(engine)
    copy = tmp_path / "customers.yml"
    copy.write_text((Path(relmail.importers.__file__).parent / "mappings" / "shopify" / "customers.yml").read_text())
    export = (SHOPIFY / "customers_export.csv").read_text(encoding="utf-8").splitlines()
    week2 = tmp_path / "customers_export.csv"
    week2.write_text("\n".join([export[0]] + [line.replace(",yes,", ",no,", 1) if line.startswith(f"'{ANNA},") else line
                                               for line in export[1:]]) + "\n", encoding="utf-8")
    result = import_file(engine, "customers", week2, mapping=copy)
    assert result.details["withdrawn_since_last_export"] == 1


@pytest.mark.parametrize("name, column, bad", [
    ("subscribed_members_export_4f2a9c1e07.csv", "CONFIRM_TIME", "06.12.2026 10:00"),  # read by fields.consent_at: {first: ...}
    ("cleaned_members_export_4f2a9c1e07.csv", "CLEAN_TIME", "gestern"),  # fields.suppressed_at: {column: CLEAN_TIME}, required
])
def test_a_cell_that_does_not_parse_is_named_by_its_column_once(engine, tmp_path, name, column, bad):
    # Errors name the export's column, not the mapping's "fields.consent_at", and say it once:
    # no "is required" after the cell's own problem.
    rows = list(csv.reader(io.StringIO((MAILCHIMP / name).read_text(encoding="utf-8"))))
    rows[1][rows[0].index(column)] = bad
    path = tmp_path / name
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(ValidationError) as caught:
        import_file(engine, "customers", path, mapping="mailchimp")
    assert [(p.line, p.field) for p in caught.value.problems] == [(2, column)]
    assert repr(bad) in caught.value.problems[0].message


def test_an_order_time_that_does_not_parse_is_one_problem(engine, tmp_path):
    import_file(engine, "customers", SHOPIFY / "customers_export.csv", mapping="shopify")
    rows = list(csv.reader(io.StringIO((SHOPIFY / "orders_export.csv").read_text(encoding="utf-8"))))
    rows[1][rows[0].index("Created at")] = "2026-03-14T10:12"
    path = tmp_path / "orders_export.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(ValidationError) as caught:
        import_file(engine, "orders", path, mapping="shopify")
    # The order's first line, once; its other lines share the order's time and fail with it, saying where it is.
    assert [(p.line, p.field) for p in caught.value.problems if p.line == 2] == [(2, "Created at")]
    first, second = [p for p in caught.value.problems if p.line in (2, 3)]
    assert "(read from line" not in first.message
    assert second.message == first.message + " (read from line 2, the first of the rows with the same 'Name')"


def test_an_order_of_an_address_no_customer_has_names_the_exports_email_column(engine, tmp_path):
    # Through the shopify mapping the problem names 'Email', the column in the file, not the field 'email'.
    import_file(engine, "customers", SHOPIFY / "customers_export.csv", mapping="shopify")
    rows = list(csv.reader(io.StringIO((SHOPIFY / "orders_export.csv").read_text(encoding="utf-8"))))
    email = rows[0].index("Email")
    rows = [rows[0]] + [r for r in rows[1:] if r[0] == rows[1][0]]  # the first order's lines
    for r in rows[1:]:
        r[email] = "nobody@nowhere.example"
    path = tmp_path / "orders_export.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(ValidationError) as caught:
        import_file(engine, "orders", path, mapping="shopify")
    assert {p.field for p in caught.value.problems} == {"Email"}


def test_mailchimps_default_address_and_phone_merge_fields_are_not_stored(engine, tmp_path):
    # Every Mailchimp audience starts with the merge fields Address and Phone Number: personal data
    # relmail does not need, dropped as the shopify mapping drops street addresses and phones.
    rows = list(csv.reader(io.StringIO((MAILCHIMP / "subscribed_members_export_4f2a9c1e07.csv").read_text(encoding="utf-8"))))
    at = rows[0].index("Last Name") + 1
    rows = [r[:at] + extra + r[at:] for r, extra in
            zip(rows, [["Address", "Phone Number", "Birthday"]] + [["Spui 12  Amsterdam  1012 AB  NL", "+31 6 12345678", "03/15"]] * 9)]
    path = tmp_path / "subscribed_members_export_4f2a9c1e07.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    import_file(engine, "customers", path, mapping="mailchimp")
    for customer in table(engine, Customer):
        assert "address" not in customer["attributes"] and "phone_number" not in customer["attributes"]
        assert customer["attributes"]["birthday"] == "03/15"  # the audience's other merge fields stay


ACTIVITY_MAP = """\
kind: events
times: {format: "%Y-%m-%d %H:%M:%S", timezone: UTC}
columns:
  Email Address: email
  Timestamp: {to: occurred_at, parse: time}
drop: [First Name, Last Name]
fields:
  type: {value: email_opened}
  event_id: {template: "opened {Email Address} {Timestamp}", parse: slug}
"""


def test_a_mailing_tools_activity_export_imports_as_events_by_address(engine, tmp_path):
    # The opens of the tool a shop leaves name people by address, not by relmail's ids.
    load_all(engine)
    mapping = tmp_path / "opens.yml"
    mapping.write_text(ACTIVITY_MAP)
    opens = tmp_path / "opened.csv"
    opens.write_text('"Email Address","First Name","Last Name","Timestamp"\n'
                     '"ANNA.devries@mail.example","Anna","de Vries","2026-11-20 09:01:02"\n'
                     '"mees.kok@mail.example","Mees","Kok","2026-11-21 10:00:00"\n', encoding="utf-8")
    result = import_file(engine, "events", opens, mapping=mapping)
    assert result.rows_imported == 2
    got = sorted((e["customer_id"], e["type"]) for e in table(engine, Event) if e["type"] == "email_opened")
    assert got == [(ANNA, "email_opened"), (MEES, "email_opened")]
    assert import_file(engine, "events", opens, mapping=mapping).rows_imported == 2  # upserted on the ids: no doubles
    assert sum(1 for e in table(engine, Event) if e["type"] == "email_opened") == 2

    unknown = tmp_path / "unknown.csv"
    unknown.write_text('"Email Address","First Name","Last Name","Timestamp"\n'
                       '"nobody@nowhere.example","No","Body","2026-11-20 09:01:02"\n', encoding="utf-8")
    with pytest.raises(ValidationError) as caught:
        import_file(engine, "events", unknown, mapping=mapping)
    assert [(p.line, p.field, p.message) for p in caught.value.problems] == [
        (2, "Email Address", "no customer has this e-mail address (import customers first)")]


def test_a_required_field_read_from_the_first_of_several_columns_that_does_not_parse_is_one_problem(engine, tmp_path):
    # Shopify's product id is {first: [Variant SKU, Handle]}: a SKU longer than an id may be is said
    # once, named by its column, not again as "fields.id: is required".
    rows = list(csv.reader(io.StringIO((SHOPIFY / "products_export.csv").read_text(encoding="utf-8"))))
    rows[2][rows[0].index("Variant SKU")] = "9" * 70
    path = tmp_path / "products_export.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(ValidationError) as caught:
        import_file(engine, "products", path, mapping="shopify", variables=VARIABLES)
    assert [(p.line, p.field, p.message) for p in caught.value.problems] == [
        (3, "Variant SKU", "is 70 characters long, at most 64 allowed")]


def test_a_segment_export_with_the_subscribed_columns_is_not_read_as_subscribed(engine, tmp_path):
    # Mailchimp's subscribed file has no column that says "subscribed": a segment export of the
    # unsubscribed (or of all contacts) has the same columns. Read by its columns alone it would opt
    # everyone in; it is refused unless the variant is named.
    segment = tmp_path / "segment_export_7d1e2f.csv"
    shutil.copy(MAILCHIMP / "subscribed_members_export_4f2a9c1e07.csv", segment)
    with pytest.raises(ValidationError) as caught:
        import_file(engine, "customers", segment, mapping="mailchimp")
    (problem,) = caught.value.problems
    assert problem.line == 1 and "--map mailchimp/customers-subscribed" in problem.message
    assert table(engine, Customer) == [] and table(engine, Preference) == []
    assert import_file(engine, "customers", segment, mapping="mailchimp/customers-subscribed").rows_imported == 3
    gz = tmp_path / "subscribed_members_export_4f2a9c1e07.csv.gz"
    gz.write_bytes(gzip.compress((MAILCHIMP / "subscribed_members_export_4f2a9c1e07.csv").read_bytes()))
    assert import_file(engine, "customers", gz, mapping="mailchimp").rows_imported == 3


def test_the_current_audience_exports_four_files_each_read_as_their_status(engine, tmp_path):
    # Mailchimp now names the files *_email_audience_export_<id>.csv and adds a fourth,
    # nonsubscribed_..., with the subscribed file's columns: people who never opted in.
    text = (MAILCHIMP / "subscribed_members_export_4f2a9c1e07.csv").read_text(encoding="utf-8")
    never = tmp_path / "nonsubscribed_email_audience_export_4f2a9c1e07.csv"
    never.write_text(text, encoding="utf-8")
    result = import_file(engine, "customers", never, mapping="mailchimp")
    assert result.mapping.endswith("customers-nonsubscribed.yml") and result.rows_imported == 3
    assert table(engine, Preference) == []  # no consent for anyone: they never subscribed
    subscribed = tmp_path / "subscribed_email_audience_export_4f2a9c1e07.csv"
    subscribed.write_text(text, encoding="utf-8")
    result = import_file(engine, "customers", subscribed, mapping="mailchimp")
    assert result.mapping.endswith("customers-subscribed.yml") and result.details["consent_records"] == 3


def _mailchimp_sample_with(path, column: str, value: str):
    """The sample subscribed export with ``column`` set to ``value`` on every row, written to ``path``."""
    rows = list(csv.reader(io.StringIO((MAILCHIMP / "subscribed_members_export_4f2a9c1e07.csv").read_text(encoding="utf-8"))))
    for row in rows[1:]:
        row[rows[0].index(column)] = value
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def test_a_mailchimp_export_with_lower_case_time_zones_imports(engine, tmp_path):
    # Mailchimp writes TIMEZONE as "america/new_york"; the zone is stored as the database spells it.
    path = _mailchimp_sample_with(tmp_path / "subscribed_email_audience_export_4f2a9c1e07.csv", "TIMEZONE", "europe/amsterdam")
    assert import_file(engine, "customers", path, mapping="mailchimp").rows_imported == 3
    assert {c["timezone"] for c in table(engine, Customer)} == {"Europe/Amsterdam"}


def test_mailchimps_located_country_does_not_overwrite_the_shops_address_country(engine, tmp_path):
    # Mailchimp's CC is where it located the sign-up IP (often lower case, often another country);
    # Shopify's Default Address Country Code is the customer's address. A segment on country uses the latter.
    import_file(engine, "customers", SHOPIFY / "customers_export.csv", mapping="shopify")
    path = _mailchimp_sample_with(tmp_path / "subscribed_members_export_4f2a9c1e07.csv", "CC", "be")
    import_file(engine, "customers", path, mapping="mailchimp")
    anna = {c["id"]: c for c in table(engine, Customer)}[ANNA]["attributes"]
    assert (anna["country"], anna["mailchimp_country"]) == ("NL", "be")


PREFS = "customer_id,topic,opted_in,updated_at,source\n"


def test_a_preference_history_applies_in_time_order_the_latest_wins(engine, tmp_path):
    load_all(engine)
    history = tmp_path / "history.csv"
    history.write_text(PREFS + f"{BRAM},book-tips,true,2026-05-01T10:00:00+02:00,form\n"
                               f"{BRAM},book-tips,false,2026-09-01T10:00:00+02:00,link\n"
                               f"{BRAM},book-tips,true,2026-07-01T10:00:00+02:00,form\n"
                               f"{BRAM},book-tips,false,2026-09-01T10:00:00+02:00,link\n")
    result = import_file(engine, "preferences", history)
    assert (result.rows_read, result.details) == (4, {"superseded": 1, "repeated": 1})
    (row,) = [r for r in table(engine, Preference) if r["topic"] == "book-tips"]
    assert (row["opted_in"], row["source"]) == (False, "link")
    older = tmp_path / "older.csv"  # another file, older: the stored record stays
    older.write_text(PREFS + f"{BRAM},book-tips,true,2026-08-01T10:00:00+02:00,form\n")
    assert import_file(engine, "preferences", older).rows_imported == 0
    assert [r["opted_in"] for r in table(engine, Preference) if r["topic"] == "book-tips"] == [False]
    newer = tmp_path / "newer.csv"
    newer.write_text(PREFS + f"{BRAM},book-tips,true,2026-11-01T10:00:00+01:00,form\n")
    assert import_file(engine, "preferences", newer).rows_imported == 1
    assert [r["opted_in"] for r in table(engine, Preference) if r["topic"] == "book-tips"] == [True]


def test_a_true_duplicate_is_an_error_naming_both_lines_and_the_stored_record(engine, tmp_path):
    load_all(engine)
    before = snapshot(engine)
    same_time = tmp_path / "dup.csv"
    same_time.write_text(PREFS + f"{BRAM},book-tips,true,2026-05-01T10:00:00+02:00,form\n"
                                 f"{HANNA},book-tips,true,2026-05-01T10:00:00+02:00,form\n"
                                 f"{BRAM},book-tips,false,2026-05-01T08:00:00Z,link\n")
    with pytest.raises(ValidationError) as caught:
        import_file(engine, "preferences", same_time)
    (problem,) = caught.value.problems
    assert (problem.line, problem.field) == (4, "updated_at") and "same time" in problem.message and "line 2" in problem.message
    assert snapshot(engine) == before
    stored = tmp_path / "vs-stored.csv"  # Joost's unsubscribe is stored at 21:40:10 UTC; a yes of the same second
    stored.write_text(PREFS + f"{JOOST},*,true,2026-10-28T22:40:10+01:00,form\n")
    with pytest.raises(ValidationError, match="source mailchimp"):
        import_file(engine, "preferences", stored)


def test_a_customer_without_a_sign_up_date_counts_from_the_first_order_and_never_looks_new(engine):
    load_all(engine)
    as_of = datetime(2026, 12, 1, tzinfo=UTC)
    frame = compute_features(engine, [BRAM, EVA, HANNA, MEES], as_of)
    tenure = dict(zip(frame.customer_ids, frame["tenure_days"]))
    assert tenure[BRAM] == pytest.approx((as_of - datetime(2026, 4, 2, 14, 40, 5, tzinfo=UTC)).total_seconds() / 86400, abs=1e-3)
    assert tenure[EVA] != tenure[EVA]  # no sign-up date and no order: unknown (NaN)
    is_new = dict(zip(frame.customer_ids, frame["is_new"]))
    assert (is_new[BRAM], is_new[EVA], is_new[HANNA], is_new[MEES]) == (0.0, 0.0, 1.0, 1.0)  # Hanna's first order: 29 days


def test_orders_of_an_unknown_customer_are_an_error_and_lines_without_one_are_counted(engine, tmp_path):
    import_file(engine, "customers", SHOPIFY / "customers_export.csv", mapping="shopify")
    orders = tmp_path / "orders.csv"
    orders.write_text("order_id,email,customer_id,ordered_at,product_id,quantity,price\n"
                      "A1,nobody@mail.example,,2026-01-01T10:00:00Z,X,1,5\n"
                      "A2,,,2026-01-01T10:00:00Z,X,1,5\n"
                      f"A3,,{EVA},2026-01-01T10:00:00Z,X,2,5\n")
    with pytest.raises(ValidationError) as caught:
        import_file(engine, "orders", orders)
    (problem,) = caught.value.problems
    assert (problem.line, problem.field) == (2, "email") and "no customer has this e-mail address" in problem.message
    assert "nobody@" not in str(caught.value)  # addresses stay out of CI logs
    result = import_file(engine, "orders", orders, skip_invalid=True, rejects=tmp_path / "r.csv")
    assert (result.rows_imported, result.rows_rejected, result.details["lines_without_customer"],
            result.details["lines_unknown_product"]) == (1, 1, 1, 1)
    (event,) = table(engine, Event)
    assert (event["event_id"], event["customer_id"], event["value"]) == ("order:A3:1", EVA, 10.0)


def test_orders_in_several_spellings_of_one_address_all_find_the_customer(engine, tmp_path):
    # A customer stored as "Jonas.Wagner@Mail.Example" (Shopify keeps what was typed) orders once
    # as "Jonas.wagner@..." and once as "jonas.wagner@...": both lines are that customer's.
    customers = tmp_path / "customers.csv"
    customers.write_text("id,email\nC1,Jonas.Wagner@Mail.Example\n")
    import_file(engine, "customers", customers)
    orders = tmp_path / "orders.csv"
    orders.write_text("order_id,email,ordered_at\n"
                      "O1,Jonas.wagner@mail.example,2026-11-01T10:00:00Z\n"
                      "O2,jonas.wagner@mail.example,2026-11-02T10:00:00Z\n"
                      "O3,JONAS.WAGNER@MAIL.EXAMPLE,2026-11-03T10:00:00Z\n")
    result = import_file(engine, "orders", orders)
    assert result.rows_imported == 3
    assert {e["customer_id"] for e in table(engine, Event)} == {"C1"}


def test_orders_of_an_address_several_customers_share_go_to_the_first_of_them_by_id(engine, tmp_path):
    # A couple's mailbox: two customer records, one address (stored as typed, in two cases as well).
    # Their orders by address go to one of them, the first by id, whichever row the database finds first.
    with engine.begin() as conn:
        for cid, email in (("C3", "shared@home.example"), ("C1", "shared@home.example"), ("C2", "shared@home.example"),
                           ("C9", "Other@Home.example"), ("C5", "other@home.example")):
            conn.execute(Customer.__table__.insert().values(id=cid, email=email, created_at=datetime(2026, 1, 1, tzinfo=UTC),
                                                            attributes={}))
    orders = tmp_path / "orders.csv"
    orders.write_text("order_id,email,ordered_at\n"
                      "O1,shared@home.example,2026-11-01T10:00:00Z\n"
                      "O2,SHARED@home.example,2026-11-02T10:00:00Z\n"
                      "O3,OTHER@home.example,2026-11-03T10:00:00Z\n")
    assert import_file(engine, "orders", orders).rows_imported == 3
    assert {e["event_id"]: e["customer_id"] for e in table(engine, Event)} == {
        "order:O1:1": "C1", "order:O2:1": "C1", "order:O3:1": "C5"}


def test_order_lines_without_a_product_id_are_purchases_and_counted(project, tmp_path):
    # A small shop gives its products no SKU: the orders export's "Lineitem sku" is empty.
    rows = list(csv.reader(io.StringIO((SHOPIFY / "orders_export.csv").read_text(encoding="utf-8"), newline="")))
    sku = rows[0].index("Lineitem sku")
    orders = tmp_path / "orders_export.csv"
    with orders.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([rows[0], *([*r[:sku], "", *r[sku + 1:]] for r in rows[1:])])
    runner = CliRunner()
    base = ["--project", str(project.root), "import"]
    runner.invoke(cli, [*base, "customers", str(SHOPIFY / "customers_export.csv"), "--map", "shopify"])
    result = runner.invoke(cli, [*base, "orders", str(orders), "--map", "shopify"])
    assert result.exit_code == 0, result.output
    assert "14 purchase(s) without a product id (no SKU?)" in result.stdout
    data = json.loads(runner.invoke(cli, [*base, "orders", str(orders), "--map", "shopify", "--json"]).stdout)
    assert (data["details"]["purchases"], data["details"]["lines_without_product"]) == (14, 14)


def test_many_orders_match_their_customers_and_cancel_in_bulk(engine, tmp_path):
    # More addresses and cancelled lines than one lookup list holds: matched in bulk, by case too.
    n = 1234
    customers = tmp_path / "customers.csv"
    customers.write_text("id,email\n" + "".join(f"c{i},Klant.{i}@Mail.example\n" for i in range(n)))
    import_file(engine, "customers", customers)
    orders = tmp_path / "orders.csv"
    rows = [f"o{i},{'klant' if i % 2 else 'Klant'}.{i}@mail.example,2026-01-01T10:00:00Z,,1,5" for i in range(n)]
    orders.write_text("order_id,email,ordered_at,cancelled,quantity,price\n" + "\n".join(rows) + "\n")
    result = import_file(engine, "orders", orders, chunk_size=5000)
    assert result.details["purchases"] == n
    assert {(e["event_id"], e["customer_id"]) for e in table(engine, Event)} == {(f"order:o{i}:1", f"c{i}") for i in range(n)}
    orders.write_text("order_id,email,ordered_at,cancelled,quantity,price\n"
                      + "\n".join(r.replace(",,1,5", ",yes,1,5") for r in rows) + "\n")
    result = import_file(engine, "orders", orders, chunk_size=5000)
    assert (result.details["lines_not_purchases"], result.details["purchases_removed"]) == (n, n)
    assert table(engine, Event) == []


def test_a_bad_mapping_file_changes_nothing_and_names_file_line_and_field(project, tmp_path):
    mapping = tmp_path / "crm.yml"
    mapping.write_text("kind: customers\ncolumns:\n  Customer ID: id\n  Email: email\n  Accepts Email Marketing: {to: consent, parse: yesno}\n")
    runner = CliRunner()
    result = runner.invoke(cli, ["--project", str(project.root), "import", "customers", str(SHOPIFY / "customers_export.csv"),
                                 "--map", str(mapping)])
    assert result.exit_code == 4
    assert f"{mapping}:5: field 'columns.Accepts Email Marketing.parse': unknown parser 'yesno'" in result.stderr
    # A mapping that leaves columns unmapped is refused on the file's header line, each column named.
    mapping.write_text("kind: customers\ncolumns:\n  Customer ID: id\n  Email: email\n")
    result = runner.invoke(cli, ["--project", str(project.root), "import", "customers", str(SHOPIFY / "customers_export.csv"),
                                 "--map", str(mapping), "--max-errors", "0"])
    assert result.exit_code == 4
    assert "customers_export.csv:1: field 'First Name': column 'First Name' is not in the mapping" in result.stderr
    assert result.stderr.count("is not in the mapping") == 18
    with project_engine(project) as engine:
        assert table(engine, Customer) == []


def test_an_export_resaved_by_a_german_spreadsheet_imports_with_its_decimal_mark(project, tmp_path):
    """Shopify's customers export opened and saved by Excel in German: semicolons and 1249,00. The error
    says which decimal mark the file needs; --decimal , reads it as Shopify's own file."""
    rows = list(csv.reader(io.StringIO((SHOPIFY / "customers_export.csv").read_text(encoding="utf-8"))))
    spent = rows[0].index("Total Spent")
    german = tmp_path / "kunden.csv"
    with german.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter=";")
        writer.writerow(rows[0])
        for row in rows[1:]:
            writer.writerow([v.replace(".", ",") if i == spent else v for i, v in enumerate(row)])
    runner = CliRunner()
    base = ["--project", str(project.root), "import", "customers", str(german), "--map", "shopify"]
    refused = runner.invoke(cli, base)
    assert refused.exit_code == 4
    assert "field 'Total Spent'" in refused.stderr and "relmail import --decimal ," in refused.stderr
    assert runner.invoke(cli, ["--project", str(project.root), "import", "customers", str(german), "--decimal", ","]).exit_code == 2
    done = runner.invoke(cli, [*base, "--decimal", ","])
    assert done.exit_code == 0, done.output
    with project_engine(project) as engine:
        imported = {r["id"]: r["attributes"].get("total_spent") for r in table(engine, Customer)}
    expected = {row[0].lstrip("'"): float(row[spent]) for row in rows[1:] if row[spent]}
    assert {k: imported[k] for k in expected} == expected and len(expected) > 5


def _excel_nl(value: str) -> str:
    """A time cell as Excel in Dutch writes it back after reading it as a date: 2024-09-12 18:03:11 -> 12-9-2024 18:03."""
    when = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    return f"{when.day}-{when.month}-{when.year} {when:%H:%M}"


def test_an_export_resaved_by_a_dutch_spreadsheet_imports_with_its_time_format(project, tmp_path):
    """Mailchimp's export opened and saved by Excel in Dutch: ';', a byte order mark and its times as 12-9-2024 18:03.
    The error names the --time-format that reads them; with it the times are the export's own (the day first:
    12-9-2024 is the 12th of September, not the 9th of December)."""
    source = MAILCHIMP / "subscribed_members_export_4f2a9c1e07.csv"
    rows = list(csv.reader(io.StringIO(source.read_text(encoding="utf-8"), newline="")))
    times = [i for i, name in enumerate(rows[0]) if name in ("OPTIN_TIME", "CONFIRM_TIME", "LAST_CHANGED")]
    dutch = tmp_path / source.name
    with dutch.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh, delimiter=";", lineterminator="\r\n")
        writer.writerow(rows[0])
        for row in rows[1:]:
            writer.writerow([_excel_nl(v) if i in times and v else v for i, v in enumerate(row)])
    runner = CliRunner()
    base = ["--project", str(project.root), "import", "customers", str(dutch), "--map", "mailchimp"]
    refused = runner.invoke(cli, base)
    assert refused.exit_code == 4
    assert ("field 'CONFIRM_TIME': '12-9-2024 18:03' is not in the format '%Y-%m-%d %H:%M:%S' (e.g. 2026-03-14 10:12:31); "
            "the file was re-saved by a spreadsheet? relmail import --time-format '%d-%m-%Y %H:%M' reads it "
            "(day first: check a date after the 12th of a month)") in refused.stderr
    without_map = runner.invoke(cli, ["--project", str(project.root), "import", "customers", str(dutch), "--time-format", "%d-%m-%Y"])
    assert without_map.exit_code == 2 and "--time-format applies to the time columns of a mapping" in without_map.stderr
    done = runner.invoke(cli, [*base, "--time-format", "%d-%m-%Y %H:%M"])
    assert done.exit_code == 0, done.output
    with project_engine(project) as engine:
        created = {r["email"]: r["created_at"] for r in table(engine, Customer)}
        consent = {r["customer_id"]: r["updated_at"] for r in table(engine, Preference)}
    assert created["anna.devries@mail.example"].replace(tzinfo=None) == datetime(2024, 9, 12, 18, 3)
    assert created["kim.dekker@mail.example"].replace(tzinfo=None) == datetime(2026, 10, 12, 7, 55)
    assert sorted(v.replace(tzinfo=None) for v in consent.values()) == [  # when each confirmed the subscription
        datetime(2024, 9, 12, 18, 3), datetime(2026, 10, 12, 7, 55), datetime(2026, 11, 20, 20, 16)]


def test_a_time_format_given_replaces_only_the_mappings_own_not_a_columns(tmp_path, engine):
    """--time-format stands for the mapping's times format; a column that names its own keeps it, and its
    cells get no hint about an option that would not change them."""
    mapping = tmp_path / "crm.yml"
    mapping.write_text("kind: customers\ntimes: {format: '%Y-%m-%d', timezone: UTC}\ncolumns:\n  id: id\n  email: email\n"
                       "  joined: {to: created_at, parse: time}\n  news: {to: consent, parse: yes_no}\n"
                       "  since: {to: consent_at, parse: time, format: '%Y/%m/%d'}\n")
    export = tmp_path / "crm.csv"
    export.write_text("id,email,joined,news,since\nK1,k1@mail.example,14.03.2026,yes,2026/03/15\n")
    result = import_file(engine, "customers", export, mapping=str(mapping), time_format="%d.%m.%Y")
    assert result.rows_imported == 1
    export.write_text("id,email,joined,news,since\nK1,k1@mail.example,14.03.2026,yes,15.03.2026\n")
    with pytest.raises(ValidationError) as exc:
        import_file(engine, "customers", export, mapping=str(mapping), time_format="%d.%m.%Y")
    assert [p.message for p in exc.value.problems] == [
        "'15.03.2026' is not in the format '%Y/%m/%d' (e.g. 2026/03/14)"]


def test_a_time_mapped_to_an_attribute_is_stored_as_its_iso_text(tmp_path, engine):
    """Attributes are JSON: a parsed time goes in as ISO 8601 text in UTC (it failed the write with a traceback)."""
    mapping = tmp_path / "crm.yml"
    mapping.write_text("kind: customers\ntimes: {format: '%d-%m-%Y %H:%M', timezone: Europe/Amsterdam}\ncolumns:\n"
                       "  id: id\n  email: email\n  Laatst gezien: {to: attributes.last_seen, parse: time}\n")
    export = tmp_path / "crm.csv"
    export.write_text("id;email;Laatst gezien\nK1;k1@mail.example;15-3-2026 10:12\n")
    assert import_file(engine, "customers", export, mapping=str(mapping)).rows_imported == 1
    assert table(engine, Customer)[0]["attributes"] == {"last_seen": "2026-03-15T09:12:00+00:00"}


def test_the_import_summary_names_flags_skips_and_what_orders_did(project):
    runner = CliRunner()
    base = ["--project", str(project.root), "import"]
    out = runner.invoke(cli, [*base, "customers", str(SHOPIFY / "customers_export.csv"), "--map", "shopify"]).stdout
    assert ("1 customer(s) with an invalid address imported and flagged (never mailed: INVALID_ADDRESS): "
            "line 7 (the part after the @-sign contains invalid characters: '@')") in out
    assert "broken@@mail.example" not in out
    runner.invoke(cli, [*base, "products", str(SHOPIFY / "products_export.csv"), "--map", "shopify"])
    result = runner.invoke(cli, [*base, "orders", str(SHOPIFY / "orders_export.csv"), "--map", "shopify", "--json"])
    assert result.exit_code == 0, result.output
    import json

    data = json.loads(result.stdout)
    assert (data["mapping"], data["rows_imported"], data["details"]["lines_not_purchases"]) == ("shopify/orders.yml", 14, 2)
    assert "--map NAME_OR_FILE" in runner.invoke(cli, ["import", "orders", "--help"]).output
    assert "--strict-addresses" in runner.invoke(cli, ["import", "customers", "--help"]).output


def test_shopify_customers_without_an_e_mail_address_are_skipped_and_counted(engine, tmp_path):
    # Customers made at the till or over the phone: Shopify exports them with an empty Email.
    rows = list(csv.reader(io.StringIO((SHOPIFY / "customers_export.csv").read_text(encoding="utf-8"), newline="")))
    header = rows[0]
    till = dict.fromkeys(header, "")
    till.update({"Customer ID": "'7302117000099", "First Name": "Piet", "Phone": "'+31 6 99999999",
                 "Accepts Email Marketing": "no", "Accepts SMS Marketing": "yes", "Total Spent": "45.00", "Total Orders": "2"})
    export = tmp_path / "customers_export.csv"
    with export.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([*rows, [till[c] for c in header]])
    result = import_file(engine, "customers", export, mapping="shopify")
    assert (result.rows_read, result.rows_imported) == (len(rows), len(rows) - 1)
    assert result.skipped == {"customers without an e-mail address": 1}
    assert "7302117000099" not in {c["id"] for c in table(engine, Customer)}


def test_customers_show_says_an_undated_consent_flag_has_no_date(project):
    runner = CliRunner()
    base = ["--project", str(project.root)]
    runner.invoke(cli, [*base, "import", "customers", str(SHOPIFY / "customers_export.csv"), "--map", "shopify"])
    shown = runner.invoke(cli, [*base, "customers", "show", "7302117000001"])
    assert shown.exit_code == 0, shown.output
    consent = next(line for line in shown.stdout.splitlines() if line.startswith("*"))
    assert consent.split()[-3:] == ["shopify", "no", "date"]  # not 1970-01-01, the stored placeholder
    assert "1970" not in shown.stdout


class project_engine:
    """The project's engine, disposed after use."""

    def __init__(self, project):
        from relmail.store.db import connect

        self.engine = connect(project.database_url)

    def __enter__(self):
        return self.engine

    def __exit__(self, *exc):
        self.engine.dispose()


def test_a_features_context_lets_a_global_opt_in_stand_for_a_topic(engine):
    load_all(engine)
    as_of = datetime(2026, 12, 1, tzinfo=UTC)
    ids = [ANNA, BRAM, JOOST]
    covered = compute_features(engine, ids, as_of, {"m": FeatureContext(topic="book-tips", global_consent=True)})
    own = compute_features(engine, ids, as_of, {"m": FeatureContext(topic="book-tips")})
    # Anna opted in globally; Bram has no record; Joost opted out of everything.
    assert [None if v != v else v for v in covered["m.consent_topic"]] == [1.0, None, None]
    assert all(v != v for v in own["m.consent_topic"])


def test_tenure_segments_count_a_customer_without_sign_up_date_from_the_first_order(engine, tmp_path):
    from relmail.segments import audience, load_segments

    load_all(engine)
    folder = tmp_path / "segments"
    folder.mkdir()
    (folder / "new.yml").write_text("name: new\ndescription: x\ntenure_days: {lt: 90}\n")
    (folder / "old.yml").write_text("name: old\ndescription: x\ntenure_days: {gt: 365}\n")
    segs = load_segments(folder)
    as_of = datetime(2026, 12, 1, tzinfo=UTC)
    # Femke's and Hanna's first orders were 83 and 29 days ago; Mees and Kim joined the list lately; Eva has no date at all.
    assert audience(engine, [segs["new"]], as_of).tolist() == sorted([FEMKE, HANNA, KIM, MEES])
    # Anna, Joost and Lotte joined the list in 2024 and 2025; Ivo has no sign-up date but ordered 393 days ago.
    assert audience(engine, [segs["old"]], as_of).tolist() == sorted([ANNA, IVO, JOOST, LOTTE])


@pytest.mark.parametrize("path, kind, mapping, hint", [
    (SHOPIFY / "customers_export.csv", "customers", None, "customers {} --map shopify"),   # --map forgotten
    (SHOPIFY / "customers_export.csv", "products", "shopify", "customers {} --map shopify"),  # the wrong kind
    (SHOPIFY / "orders_export.csv", "customers", "shopify", "orders {} --map shopify"),
    (MAILCHIMP_FILES[2], "customers", None, "customers {} --map mailchimp"),
])
def test_a_header_that_fits_a_built_in_mapping_names_the_command_that_imports_it(engine, path, kind, mapping, hint):
    with pytest.raises(ValidationError) as err:
        import_file(engine, kind, path, mapping=mapping)
    assert err.value.args[0].endswith(f"(the file is an export a built-in mapping reads: relmail import {hint.format(path)})")
    assert table(engine, Customer) == [] and table(engine, Product) == []


def test_a_header_no_built_in_mapping_reads_gets_no_suggestion(engine, tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("E-mail,Naam\nanna@example.org,Anna\n", encoding="utf-8")
    with pytest.raises(ValidationError) as err:
        import_file(engine, "customers", path)
    assert err.value.args[0].endswith("the header does not fit a customers file; nothing imported")


def test_an_orders_export_keeps_the_feature_store_exact_through_a_refund(engine, tmp_path):
    # Orders are written as bound rows, past the loader's dict path: their
    # customers' aggregates must still follow, also when a re-export turns an
    # order into a refund and its purchases are removed.
    from relmail.store import aggregates

    load_all(engine)
    with engine.begin() as conn:
        assert aggregates.rebuild(conn).total == 0
    # A re-export of order #1001 alone, now voided: no line of it is written.
    header, *lines = (SHOPIFY / "orders_export.csv").read_text(encoding="utf-8").splitlines()
    order = [line.replace(",paid,", ",voided,", 1) for line in lines if line.startswith("#1001,")]
    assert len(order) == 2 and "voided" in order[0]
    refunded = tmp_path / "orders_export.csv"
    refunded.write_text("\n".join([header, *order]) + "\n", encoding="utf-8")
    result = import_file(engine, "orders", refunded, mapping="shopify")
    assert result.details["purchases_removed"] == 2
    with engine.begin() as conn:
        assert aggregates.rebuild(conn).total == 0


def test_a_money_column_that_reads_two_ways_is_refused_whole_until_its_decimal_mark_is_named(engine, tmp_path):
    # A Dutch spreadsheet's 1.249 (1249 euros) and nothing in the column that shows its decimal mark.
    rows = list(csv.reader(io.StringIO((SHOPIFY / "customers_export.csv").read_text(encoding="utf-8"))))
    spent = rows[0].index("Total Spent")
    for n, row in enumerate(rows[1:]):
        row[spent] = ["85", "1.249", "2.100", "0"][n % 4]
    kunden = tmp_path / "kunden.csv"
    with kunden.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    for skip in (False, True):  # all or nothing: rows already written go too
        with pytest.raises(ValidationError) as caught:
            import_file(engine, "customers", kunden, mapping="shopify", skip_invalid=skip, rejects=tmp_path / "r.csv")
        (problem,) = caught.value.problems
        assert (problem.file, problem.line, problem.field) == (str(kunden), 3, "Total Spent")
        assert "'1.249' is 1.249 if the decimal mark is '.' and 1249 if it is ','" in problem.message
        assert "--decimal . or --decimal ," in problem.message
        assert table(engine, Customer) == []
    named = {mark: import_file(engine, "customers", kunden, mapping="shopify", decimal=mark) for mark in (",", ".")}
    assert named[","].rows_imported == 12
    by_id = {c["id"]: c["attributes"].get("total_spent") for c in table(engine, Customer)}
    assert by_id[BRAM] == 1.249  # the last import named '.'
    import_file(engine, "customers", kunden, mapping="shopify", decimal=",")
    assert {c["id"]: c["attributes"].get("total_spent") for c in table(engine, Customer)}[BRAM] == 1249.0
    # One amount with cents shows the mark: the column reads with it, nothing asked.
    rows[5][spent] = "12.50"
    with kunden.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    import_file(engine, "customers", kunden, mapping="shopify")
    assert {c["id"]: c["attributes"].get("total_spent") for c in table(engine, Customer)}[BRAM] == 1.249


def test_a_draft_or_archived_shopify_product_is_not_available_for_recommendations(engine, tmp_path):
    """Shopify's Status: a draft or archived product has no page in the shop (recommendations leave it out)."""
    rows = list(csv.reader((SHOPIFY / "products_export.csv").open(encoding="utf-8")))
    status = rows[0].index("Status")
    handles = sorted({r[0] for r in rows[1:]})
    for r in rows[1:]:
        if r[status]:  # the product's first row carries it
            r[status] = {handles[0]: "draft", handles[1]: "archived"}.get(r[0], r[status])
    path = tmp_path / "products_export.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    import_file(engine, "products", str(path), mapping="shopify")
    available = {p["attributes"]["handle"]: p["attributes"]["available"] for p in table(engine, Product)}
    assert {h for h, yes in available.items() if not yes} == set(handles[:2])
    assert all(available[h] for h in handles[2:])
