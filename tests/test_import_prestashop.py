"""A PrestaShop 8 shop in Lyon selling in French and Spanish, through the built-in ``prestashop`` mapping.

The files are the repository's samples (``examples/prestashop/``) in the
layouts PrestaShop writes them: Customers > Export from a back office in
French (``;``, the header in the employee's language, "Ventes" as
``1 234,50 €`` with narrow no-break spaces between the groups, MySQL's zero
date for a customer who never visited), the SQL Manager's CSV of the
queries the docs give (customers with their language, the order lines
naming their customer by id, the newsletter's guests), the newsletter
module's own export (``implode(';')``, guests as ``N2``), and the Orders >
Export grid, which names a customer only as "F. Dupont" and is refused, the
product catalogue (the SQL query's one row per reference an order line
carries, and Catalog > Products > Export from a back office in French). The
project's time zone is the shop's (Europe/Paris). Each test that stores
runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from babel.numbers import format_currency
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from relmail.cli import cli
from relmail.errors import ValidationError
from relmail.importers.fields import FieldError
from relmail.importers.mapping import load_mapping, parse_mapping
from relmail.importers.values import make_money, make_time
from relmail.store.models import Customer, Event, Preference, Product
from shop_imports import import_json as run
from shop_imports import invoke_import as invoke
from shop_imports import localized, product_campaign, relmail_ok
from shop_imports import table_rows as rows

PRESTASHOP = Path(__file__).resolve().parent.parent / "examples" / "prestashop"
GRID = PRESTASHOP / "customer_2026-12-07_101500.csv"
CUSTOMERS, ORDERS, GUESTS = (PRESTASHOP / f"request_sql_{n}.csv" for n in (1, 2, 3))
MODULE = PRESTASHOP / "export_1804289383.csv"
ORDER_GRID = PRESTASHOP / "order_2026-12-07_101700.csv"
PRODUCTS = PRESTASHOP / "request_sql_4.csv"
PRODUCT_GRID = PRESTASHOP / "product_2026-12-07_101600.csv"
PARIS = ZoneInfo("Europe/Paris")
NNBSP, NBSP = "\u202f", "\u00a0"


@pytest.fixture
def shop(project):
    return localized(project, "Europe/Paris", "fr_FR")


def consent(project) -> dict[tuple[str, str], bool]:
    return {(r["customer_id"], r["topic"]): r["opted_in"] for r in rows(project, Preference)}


def aware(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC) if value.tzinfo is None else value


def test_the_grid_export_of_a_back_office_in_french_imports_with_its_locale_formats(shop):
    done = run(shop, "customers", str(GRID), "--map", "prestashop")
    assert (done["mapping"], done["rows_read"], done["rows_imported"]) == ("prestashop/customers-fr.yml", 6, 6)
    customers = {r["id"]: r for r in rows(shop, Customer)}
    assert set(customers) == {"2", "3", "4", "5", "6", "7"}
    hugo = customers["6"]
    assert (hugo["email"], hugo["first_name"], hugo["last_name"], hugo["locale"]) == (
        "hugo.martin@mail.example", "Hugo", "Martin", "fr_FR")  # the grid has no language: the project's
    # "Inscription" is the shop's local time (summer time in June).
    assert aware(hugo["created_at"]) == datetime(2025, 6, 21, 9, 2, 45, tzinfo=PARIS)
    # "1 234,50 €": narrow no-break spaces between the groups, a no-break space before the euro sign.
    assert hugo["attributes"]["prestashop_sales"] == 1234.5
    assert hugo["attributes"]["prestashop_social_title"] == "M."
    assert hugo["attributes"]["prestashop_last_visit"] == "2026-12-06T07:15:37+00:00"
    assert customers["4"]["attributes"]["prestashop_last_visit"] is None  # 0000-00-00 00:00:00: never
    assert customers["3"]["attributes"]["prestashop_enabled"] is False
    assert "prestashop_sales" not in customers["3"]["attributes"]  # no valid order: an empty cell
    assert "Atelier Dubois" not in json.dumps([c["attributes"] for c in customers.values()])  # Société is dropped
    # Newsletter is the global consent; Offres partenaires the topic partner-offers. Chloé said no to both: no global
    # record (she did not opt in), but a "no" for the partners' offers, so the global opt-in of another never covers it.
    assert consent(shop) == {
        ("2", "*"): True, ("3", "*"): True, ("4", "*"): True, ("6", "*"): True, ("7", "*"): True,
        ("2", "partner-offers"): True, ("6", "partner-offers"): True, ("3", "partner-offers"): False,
        ("4", "partner-offers"): False, ("5", "partner-offers"): False, ("7", "partner-offers"): False}
    assert (done["details"]["consent_records"], done["details"]["topic_consent_records"]) == (5, 6)
    assert done["details"]["without_consent"] == 1


def test_the_sql_manager_exports_give_each_customer_their_language_and_their_orders(shop):
    run(shop, "customers", str(CUSTOMERS), "--map", "prestashop")
    guests = run(shop, "customers", str(GUESTS), "--map", "prestashop")
    orders = run(shop, "orders", str(ORDERS), "--map", "prestashop")
    assert guests["mapping"] == "prestashop/customers-newsletter.yml"
    customers = {r["id"]: r for r in rows(shop, Customer)}
    assert {i: c["locale"] for i, c in customers.items()} == {
        "2": "es_ES", "3": "fr_FR", "4": "es_ES", "5": "fr_FR", "6": "fr_FR", "7": "es_ES", "N2": "fr_FR", "N3": "es_ES"}
    # The date of the first subscription is kept, not taken as the consent's: PrestaShop keeps it on unsubscribing.
    assert customers["7"]["attributes"]["prestashop_newsletter_since"] == "2026-11-02T17:45:00+00:00"
    records = {(r["customer_id"], r["topic"]): (r["opted_in"], aware(r["updated_at"])) for r in rows(shop, Preference)}
    undated = datetime(1970, 1, 1, tzinfo=UTC)
    assert records[("7", "*")] == (True, undated)
    # A guest's subscription is dated: the module writes the time it was made.
    assert records[("N3", "*")] == (True, datetime(2026, 11, 30, 20, 2, 17, tzinfo=PARIS))
    assert ("N3", "partner-offers") not in records

    assert (orders["mapping"], orders["rows_read"], orders["rows_imported"]) == ("prestashop/orders.yml", 7, 5)
    # Chloé's cancelled order and Carlos's unpaid bank wire are no purchases.
    assert orders["details"]["lines_not_purchases"] == 2
    purchases = {r["event_id"]: (r["customer_id"], r["product_id"], r["value"], aware(r["occurred_at"]))
                 for r in rows(shop, Event) if r["type"] == "purchase"}
    assert purchases == {
        "order:31:1": ("7", "FOU-SOIE-ROUGE", 89.9, datetime(2026, 11, 2, 18, 52, 31, tzinfo=PARIS)),
        "order:30:1": ("6", "CARRE-90-BLEU", 149.0, datetime(2026, 11, 29, 10, 14, 8, tzinfo=PARIS)),
        "order:30:2": ("6", "POCHETTE-SOIE", 65.5, datetime(2026, 11, 29, 10, 14, 8, tzinfo=PARIS)),
        "order:28:1": ("4", "FOU-SOIE-ROUGE", 59.0, datetime(2026, 11, 20, 11, 12, 40, tzinfo=PARIS)),
        "order:26:1": ("2", "CARRE-90-BLEU", 298.0, datetime(2026, 6, 4, 12, 40, 3, tzinfo=PARIS)),
    }


def test_the_newsletter_module_export_names_guests_and_customers_apart(shop):
    run(shop, "customers", str(CUSTOMERS), "--map", "prestashop")
    done = run(shop, "customers", str(MODULE), "--map", "prestashop")
    assert (done["mapping"], done["rows_imported"]) == ("prestashop/customers-newsletter.yml", 4)
    customers = {r["id"]: r for r in rows(shop, Customer)}
    assert set(customers) == {"2", "3", "4", "5", "6", "7", "N2", "N3"}
    assert customers["7"]["first_name"] == "Lucía" and customers["7"]["locale"] == "es_ES"  # kept: the file has none
    assert customers["N2"]["locale"] == "fr_FR"  # the project's
    records = {(r["customer_id"], r["topic"]): aware(r["updated_at"]) for r in rows(shop, Preference)}
    # The module dates a customer's subscription too: a dated opt-in wins over the customers export's undated flag.
    assert records[("6", "*")] == datetime(2025, 6, 21, 9, 3, 10, tzinfo=PARIS)


def test_the_orders_grid_export_is_refused_naming_the_export_to_use(shop):
    result = invoke(shop, "orders", str(ORDER_GRID), "--map", "prestashop")
    assert result.exit_code == 4, result.output
    assert "the PrestaShop Orders > Export grid (back office in French) cannot be imported; nothing imported" in result.output
    assert f'{ORDER_GRID}:1: the Orders > Export grid names each customer only as "F. Dupont"' in result.output
    assert 'export the SQL Manager query "relmail orders"' in result.output


def french_grid(tmp_path: Path, *rows: list[str], bom: bool = False) -> Path:
    header = ["ID", "Titre", "Prénom", "Nom", "E-mail", "Groupe", "Ventes", "Activé", "Newsletter", "Offres partenaires",
              "Inscription", "Dernière visite"]
    text = "\n".join(";".join(f'"{c}"' if " " in c else c for c in line) for line in (header, *rows)) + "\n"
    path = tmp_path / "customer_2026-12-07_101500.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def test_a_grid_export_re_saved_with_a_bom_oui_non_and_dates_as_the_spreadsheet_shows_them_reads_the_same(shop, tmp_path):
    # Excel's "CSV UTF-8" puts a BOM before the first column's name, writes the flags as the back office shows them
    # (Oui/Non) and the times as day/month/year; PrestaShop 1.7.6+ headers say "Titre" or "Civilité", "E-mail" or
    # "Adresse e-mail" by version.
    path = french_grid(tmp_path, ["12", "Mme", "Élodie", "Perrin", "elodie.perrin@mail.example", "Client",
                                  f"12{NNBSP}345,60{NBSP}€", "Oui", "Oui", "Non", "07/12/2025 14:03:22", "05/01/2026 08:00"],
                       bom=True)
    done = run(shop, "customers", str(path), "--map", "prestashop")
    assert done["rows_imported"] == 1
    (elodie,) = rows(shop, Customer)
    assert elodie["id"] == "12"  # the BOM is no part of the column "ID"
    assert aware(elodie["created_at"]) == datetime(2025, 12, 7, 14, 3, 22, tzinfo=PARIS)  # 7 December, not 12 July
    assert elodie["attributes"]["prestashop_last_visit"] == "2026-01-05T07:00:00+00:00"
    assert elodie["attributes"]["prestashop_sales"] == 12345.6
    assert elodie["attributes"]["prestashop_social_title"] == "Mme"
    assert consent(shop) == {("12", "*"): True, ("12", "partner-offers"): False}


DEMO = "PrestaShop's demo customer John DOE (pub@prestashop.com)"


def test_prestashops_demo_customer_is_in_no_export_a_customer_and_his_sample_orders_are_no_purchases(shop, tmp_path):
    """A shop that kept the sample data's John DOE (subscribed to the newsletter) must not mail PrestaShop's address."""
    def with_rows(source: Path, name: str, *lines: str) -> Path:
        path = tmp_path / name
        path.write_text(source.read_text(encoding="utf-8").rstrip("\n") + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
        return path

    sql = run(shop, "customers", str(with_rows(CUSTOMERS, "request_sql_1.csv",
                                               '1;pub@prestashop.com;John;DOE;fr-FR;M.;Client;1;"2024-02-01 10:00:00";1;'
                                               '"2024-02-01 10:00:00";1')), "--map", "prestashop")
    grid = run(shop, "customers", str(french_grid(tmp_path, ["1", "M.", "John", "DOE", " Pub@PrestaShop.com", "Client",
                                                             f"61,80{NBSP}€", "1", "1", "1", "2024-02-01 10:00:00",
                                                             "2024-02-01 10:00:00"])), "--map", "prestashop")
    module = run(shop, "customers", str(with_rows(MODULE, "export_1.csv",
                                                  "1;Soierie Bellecour;M.;DOE;John;pub@prestashop.com;1;2024-02-01 10:00:00")),
                 "--map", "prestashop")
    orders = run(shop, "orders", str(with_rows(ORDERS, "request_sql_2.csv",
                                               '1;XKBKNABJK;1;pub@prestashop.com;"2024-02-01 10:05:00";paid;EUR;61.800000;'
                                               'FOU-SOIE-ROUGE;1;61.800000')), "--map", "prestashop")
    for done in (sql, grid, module, orders):
        assert done["skipped"] == {f"rows of {DEMO}": 1}, done
    assert "1" not in {r["id"] for r in rows(shop, Customer)}
    assert not [r for r in rows(shop, Preference) if r["customer_id"] == "1"]
    assert orders["rows_imported"] == 5 and not [r for r in rows(shop, Event) if r["customer_id"] == "1"]


def test_an_older_newsletter_export_that_puts_back_a_changed_address_says_so(shop, tmp_path):
    """Hugo changed his address in the shop; last week's module export still has the old one."""
    newer = tmp_path / "request_sql_1.csv"
    newer.write_text(CUSTOMERS.read_text(encoding="utf-8").replace("hugo.martin@mail.example", "hugo@nouveau.example"),
                     encoding="utf-8")
    first = run(shop, "customers", str(newer), "--map", "prestashop")
    assert first["details"]["address_changed"] == 0  # new customers, nothing replaced
    stale = run(shop, "customers", str(MODULE), "--map", "prestashop")
    assert stale["details"]["address_changed"] == 1
    assert {r["id"]: r["email"] for r in rows(shop, Customer)}["6"] == "hugo.martin@mail.example"
    printed = invoke(shop, "customers", str(MODULE), "--map", "prestashop")
    assert "stored customer(s) given another e-mail address" not in printed.output  # the same file again changes nothing
    again = invoke(shop, "customers", str(newer), "--map", "prestashop")
    assert ("1 stored customer(s) given another e-mail address by this file: the file's replaces theirs (an older "
            "export imported after a newer one puts an old address back)") in again.output


def test_a_mapping_skips_rows_with_a_value_in_a_column_the_file_has_and_names_a_bad_equals():
    with pytest.raises(ValidationError) as bad:
        parse_mapping("kind: customers\nskip_rows: {equals: {E-mail: 3}}\ncolumns: {ID: id, E-mail: email}\n", "m.yml")
    assert "skip_rows.equals.E-mail" in str(bad.value.problems[0]) and "values" in str(bad.value.problems[0])
    with pytest.raises(ValidationError) as empty:
        parse_mapping("kind: customers\nskip_rows: {reason: x}\ncolumns: {ID: id, E-mail: email}\n", "m.yml")
    assert "'blank'" in str(empty.value.problems[0]) and "'equals'" in str(empty.value.problems[0])
    mapping = parse_mapping("kind: customers\nskip_rows: {equals: {E-mail: [Demo@Shop.example], Mail: x@y.z}}\n"
                            "columns: {ID: id, E-mail: email}\n", "m.yml")
    assert mapping.skip_equals == (("E-mail", frozenset({"demo@shop.example"})), ("Mail", frozenset({"x@y.z"})))


def test_a_bad_cell_is_named_by_file_line_and_column_and_nothing_is_imported(shop, tmp_path):
    good = ["12", "Mme", "Élodie", "Perrin", "elodie.perrin@mail.example", "Client", f"45,00{NBSP}€", "1", "1", "0",
            "2025-12-07 14:03:22", "0000-00-00 00:00:00"]
    path = french_grid(tmp_path, good, ["13", "M.", "Marc", "Roux", "marc.roux@mail.example", "Client", f"45,00{NBSP}$", "1",
                                        "peut-être", "0", "2025-12-08 09:00:00", "0000-00-00 00:00:00"])
    result = invoke(shop, "customers", str(path), "--map", "prestashop")
    assert result.exit_code == 4, result.output
    assert f"{path}:3: field 'Ventes': '45,00\\xa0$' is in USD/CAD/AUD/NZD/SGD/HKD/MXN; the mapping expects EUR" in result.output
    assert f"{path}:3: field 'Newsletter': 'peut-être' is neither yes nor no" in result.output
    assert rows(shop, Customer) == [] and rows(shop, Preference) == []  # all or nothing: line 2 is not written either


def test_a_partner_offers_flag_that_changed_between_two_exports_counts_as_of_the_import(shop, tmp_path):
    row = ["12", "Mme", "Élodie", "Perrin", "elodie.perrin@mail.example", "Client", "", "1", "1", "0", "2025-12-07 14:03:22",
           "0000-00-00 00:00:00"]
    run(shop, "customers", str(french_grid(tmp_path, row)), "--map", "prestashop")
    row[9] = "1"
    later = run(shop, "customers", str(french_grid(tmp_path, row)), "--map", "prestashop")
    assert later["details"]["given_since_last_export"] == 1
    (record,) = [r for r in rows(shop, Preference) if r["topic"] == "partner-offers"]
    assert record["opted_in"] is True and aware(record["updated_at"]) > datetime(2026, 1, 1, tzinfo=UTC)
    assert consent(shop)[("12", "*")] is True  # the newsletter's flag did not change


def test_a_partner_offers_message_goes_only_to_who_ticked_the_box(shop):
    """The newsletter opt-in never stands in for the partners' offers: an unticked box is a no on record."""
    run(shop, "customers", str(GRID), "--map", "prestashop")
    (shop.root / "campaigns" / "partners.yml").write_text(
        "title: Partners\npolicy: {consent: opt-in, min_relevance: 0}\nmessages:\n"
        "  - {id: partners, template: partners, topic: partner-offers, segments: [everyone], offer: loyalty, value: 1}\n")
    (shop.root / "segments" / "everyone.yml").write_text("name: everyone\ndescription: Every customer\n")
    (shop.root / "templates" / "partners.html").write_text(
        "<html><head><title>{% block subject %}Offre{% endblock %}</title></head><body>"
        "<a href=\"{{ links.unsubscribe }}\">x</a></body></html>")
    planned = CliRunner().invoke(cli, ["--project", str(shop.root), "plan", "partners", "--window", "this-week", "--json"])
    assert planned.exit_code == 0, planned.output
    why = CliRunner().invoke(cli, ["--project", str(shop.root), "why", "7", "--json"])
    decisions = json.loads(why.stdout)
    text = json.dumps(decisions)
    assert "NO_CONSENT" in text and "partner-offers" in text, text


def test_the_built_in_mapping_names_a_bad_topic_and_a_refusal_without_its_columns():
    with pytest.raises(ValidationError) as bad:
        parse_mapping("kind: customers\ncolumns:\n  Email: email\n  Partners: consent.Partner Offers\n", "maps/x.yml")
    assert "maps/x.yml:4" in str(bad.value.problems[0]) and "a topic is lower-case letters" in str(bad.value.problems[0])
    with pytest.raises(ValidationError) as refused:
        parse_mapping("kind: orders\nrefuse: no customer in it\n", "maps/y.yml")
    assert "refuse is the reason a variant picked by when_header_has gives" in str(refused.value.problems[0])
    # The English back office's grid picks the English variant.
    header = ["ID", "Social title", "First name", "Last name", "Email address", "Group", "Company", "Sales", "Enabled",
              "Newsletter", "Partner offers", "Registration", "Last visit"]
    assert load_mapping("prestashop", "customers", header).file == "prestashop/customers-en.yml"
    # The English back office's Orders grid is refused as the French one is; the SQL query's file is read.
    orders = ["ID", "Reference", "New client", "Delivery", "Customer", "Total", "Payment", "Status", "Date"]
    with pytest.raises(ValidationError, match=r"order_x\.csv: the PrestaShop Orders > Export grid \(back office in English\)"):
        load_mapping("prestashop", "orders", orders, "order_x.csv")
    assert load_mapping("prestashop", "orders").file == "prestashop/orders.yml"  # no header (JSON Lines): never the refusal


def test_the_grid_export_of_a_back_office_in_english_reads_month_first_and_a_dot_for_decimals(shop, tmp_path):
    header = "ID;Social title;First name;Last name;Email address;Group;Company;Sales;Enabled;Newsletter;Partner offers;Registration;Last visit"
    line = 'ID0;Mr.;Tom;Hardy;tom.hardy@mail.example;Customer;;€1,234.50;Yes;yes;No;"12/07/2025 14:03:22";"0000-00-00 00:00:00"'
    path = tmp_path / "customer_2026-12-07_101500.csv"
    path.write_text(f"{header}\n{line.replace('ID0', '21')}\n", encoding="utf-8")
    done = run(shop, "customers", str(path), "--map", "prestashop")
    assert done["mapping"] == "prestashop/customers-en.yml"
    (tom,) = rows(shop, Customer)
    assert aware(tom["created_at"]) == datetime(2025, 12, 7, 14, 3, 22, tzinfo=PARIS)  # December 7th: month first
    assert tom["attributes"]["prestashop_sales"] == 1234.5
    assert consent(shop) == {("21", "*"): True, ("21", "partner-offers"): False}


# PrestaShop formats prices with CLDR, as Babel does: the same bytes for each locale.
_LOCALES = {"fr_FR": ",", "es_ES": ",", "en_US": ".", "en_GB": "."}


@settings(max_examples=200, deadline=None)
@given(cents=st.integers(min_value=-10**11, max_value=10**11), locale=st.sampled_from(sorted(_LOCALES)))
def test_a_price_as_prestashop_formats_it_for_the_back_office_language_reads_back_as_the_amount(cents, locale):
    amount = Decimal(cents) / 100
    shown = format_currency(amount, "EUR", locale=locale)
    assert make_money("EUR", _LOCALES[locale])(shown) == pytest.approx(float(amount), abs=1e-9), shown
    # The SQL Manager writes the database's decimal(20,6).
    assert make_money("EUR", ".")(f"{amount:.6f}") == pytest.approx(float(amount), abs=1e-9)


FRENCH_TIMES = ["%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M"]


@settings(max_examples=200, deadline=None)
@given(moment=st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2025, 12, 31)),
       shown=st.sampled_from(FRENCH_TIMES))
def test_a_time_as_prestashop_or_a_spreadsheet_writes_it_reads_back_as_that_moment_in_the_shop_time_zone(moment, shown):
    # The text of a time in the hour the clocks repeat in autumn says nothing of which one it was: read as the
    # first (fold=0, daylight saving time), as relmail documents; hypothesis may draw the second.
    moment = moment.replace(microsecond=0, second=0 if shown.endswith("%M") else moment.second, fold=0)
    local = moment.replace(tzinfo=PARIS)
    if local.astimezone(UTC).astimezone(PARIS).replace(tzinfo=None) != moment:
        return  # the hour the clocks skip in spring: no such local time (refused, as its own test shows)
    parsed = make_time(FRENCH_TIMES, "Europe/Paris")(moment.strftime(shown))
    assert parsed == local.astimezone(UTC)


def test_a_time_in_none_of_the_formats_names_them_all_and_a_zero_date_is_no_time():
    parse = make_time(FRENCH_TIMES, "Europe/Paris", blank=["0000-00-00 00:00:00"])
    assert parse("0000-00-00 00:00:00") is None
    with pytest.raises(FieldError) as bad:
        parse("7 déc. 2025")
    assert str(bad.value) == ("'7 déc. 2025' is not in the format '%Y-%m-%d %H:%M:%S' (e.g. 2026-03-14 10:12:31) or in the "
                              "format '%d/%m/%Y %H:%M:%S' (e.g. 14/03/2026 10:12:31) or in the format '%d/%m/%Y %H:%M' "
                              "(e.g. 14/03/2026 10:12)")
    with pytest.raises(FieldError, match="never happened in Europe/Paris"):
        parse("29/03/2026 02:30:00")
    assert parse("25/10/2026 02:30:00") == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # twice that night: the first


def test_a_french_and_a_spanish_customer_get_their_template_with_prices_and_dates_of_their_language(tmp_path, monkeypatch):
    """Lucía (es-ES in the SQL export) gets the .es variant, Hugo the French base; a price in the subject keeps the
    no-break spaces of its language (a mail client must not break "1 234,50 €" over two lines) and the subject's
    accents are MIME-encoded."""
    import email
    import email.policy

    from relmail.project import Project, init_project
    from relmail.render import CustomerContext, MessageSpec, Renderer

    monkeypatch.setenv("RELMAIL_SIGNING_KEY", "test-signing-key-not-secret")
    init_project(tmp_path / "shop", "Soierie Bellecour", blank=True, domain="soierie.example", locale="fr_FR",
                 timezone="Europe/Paris")
    templates = tmp_path / "shop" / "templates"
    (templates / "hiver.html").write_text(
        "<html><head><title>{% block subject %}Soieries d'hiver : votre carré à {{ 1234.5|money }}{% endblock %}</title></head>"
        "<body><p>Bonjour {{ customer.first_name }}, jusqu'au {{ now|date }}.</p></body></html>", encoding="utf-8")
    (templates / "hiver.es.html").write_text(
        "<html><head><title>{% block subject %}Sedas de invierno: su pañuelo a {{ 12345.5|money }}{% endblock %}</title></head>"
        "<body><p>Hola, {{ customer.first_name }}: hasta el {{ now|date }}.</p></body></html>", encoding="utf-8")
    renderer = Renderer(Project.load(tmp_path / "shop"))
    spec = MessageSpec(id="hiver", template="hiver", topic="newsletter", campaign_id="hiver", run_id="hiver:2026-W50")
    hugo = renderer.render(spec, CustomerContext(id="6", email="hugo.martin@mail.example", first_name="Hugo", locale="fr_FR"))
    lucia = renderer.render(spec, CustomerContext(id="7", email="lucia.garcia@correo.example", first_name="Lucía",
                                                  locale="es_ES"))
    assert hugo.subject == f"Soieries d'hiver : votre carré à 1{NNBSP}234,50{NBSP}€"
    assert lucia.subject == f"Sedas de invierno: su pañuelo a 12.345,50{NBSP}€"
    assert "Bonjour Hugo" in hugo.html and "Hola, Lucía:" in lucia.html
    for rendered in (hugo, lucia):
        raw_subject = next(line for line in rendered.raw.decode("ascii").splitlines() if line.startswith("Subject:"))
        assert "=?utf-8?" in raw_subject  # é, ñ and the no-break spaces travel encoded
        parsed = email.message_from_bytes(rendered.raw, policy=email.policy.default)
        assert parsed["Subject"] == rendered.subject
    assert email.message_from_bytes(lucia.raw, policy=email.policy.default)["Content-Language"] == "es"


def test_the_first_week_imports_plans_and_sends_each_customer_the_e_mail_in_their_language(project, tmp_path):
    """The shop's week from the command line: the SQL exports in, a campaign with a French template and its Spanish
    variant planned and sent to the file adapter; nobody without the newsletter's consent gets it."""
    import email
    import email.policy

    from relmail.project import init_project

    # The shop's own project (relmail init --blank), on the test's database, without the example newsletter.
    shop = init_project(tmp_path / "soierie", "Soierie Bellecour", blank=True, domain="soierie-bellecour.example",
                        locale="fr_FR", timezone="Europe/Paris")
    (shop.root / "campaigns" / "newsletter.yml").unlink()
    (shop.root / "templates" / "newsletter.html").unlink()
    run(shop, "customers", str(CUSTOMERS), "--map", "prestashop")
    run(shop, "customers", str(GUESTS), "--map", "prestashop")
    run(shop, "orders", str(ORDERS), "--map", "prestashop")
    (shop.root / "campaigns" / "hiver.yml").write_text(
        "title: Soieries d'hiver\npolicy: {consent: opt-in, min_relevance: 0}\nmessages:\n"
        "  - {id: hiver, template: hiver, topic: newsletter, segments: [everyone], offer: loyalty, value: 5}\n")
    templates = shop.root / "templates"
    (templates / "hiver.html").write_text(
        "<html><head><title>{% block subject %}Soieries d'hiver : le carré à {{ 149|money }}{% endblock %}</title></head>"
        "<body><p>Bonjour {{ customer.first_name|default('', true) }},</p><a href=\"{{ links.unsubscribe }}\">x</a></body></html>",
        encoding="utf-8")
    (templates / "hiver.es.html").write_text(
        "<html><head><title>{% block subject %}Sedas de invierno: el pañuelo a {{ 149|money }}{% endblock %}</title></head>"
        "<body><p>Hola, {{ customer.first_name|default('', true) }}:</p><a href=\"{{ links.unsubscribe }}\">x</a></body></html>",
        encoding="utf-8")

    def relmail(*args: str):
        result = CliRunner().invoke(cli, ["--project", str(shop.root), *args])
        assert result.exit_code == 0, result.output
        return result

    relmail("templates", "check")
    relmail("plan", "hiver", "--window", "this-week")
    assert "NO_CONSENT" in relmail("why", "5").output  # Chloé: no newsletter
    relmail("send", "hiver", "--window", "this-week")
    sent = {}
    for path in (shop.root / "outbox").glob("*.eml"):
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        sent[parsed["To"].addresses[0].addr_spec] = (parsed["Subject"], parsed["Content-Language"])
    french, spanish = (f"Soieries d'hiver : le carré à 149,00{NBSP}€", "fr"), (f"Sedas de invierno: el pañuelo a 149,00{NBSP}€", "es")
    assert sent == {
        "hugo.martin@mail.example": french, "amelie.dubois@mail.example": french, "paul.girard@mail.example": french,
        "lucia.garcia@correo.example": spanish, "javier.fernandez@correo.example": spanish,
        "carlos.nunez@correo.example": spanish, "ines.moreno@correo.example": spanish}


SHOP_URL = "https://fietsenwinkel.example"  # the project's [brand] url


def catalogue(project) -> dict[str, tuple]:
    return {r["id"]: (r["name"], r["category"], r["price"], r["url"], r["image_url"], r["attributes"])
            for r in rows(project, Product)}


def test_the_products_query_gives_one_product_per_reference_an_order_line_carries(shop):
    done = run(shop, "products", str(PRODUCTS), "--map", "prestashop")
    assert (done["mapping"], done["rows_read"], done["rows_imported"]) == ("prestashop/products.yml", 7, 7)
    url = SHOP_URL + "/index.php?controller=product&id_product={}&id_product_attribute={}"

    def attributes(product, combination, quantity, active, name_es):
        return {"prestashop_id_product": product, "prestashop_id_product_attribute": combination,
                "prestashop_quantity": quantity, "prestashop_active": active, "available": active, "name_es": name_es}

    assert catalogue(shop) == {
        # Each combination with a reference of its own is a product: its order lines carry that reference.
        "FOU-SOIE-ROUGE": ("Foulard en soie", "foulards", 89.9, url.format(1, 3), f"{SHOP_URL}/4-large_default/foulard-en-soie.jpg",
                           attributes("1", "3", 12, True, "Fular de seda")),
        "FOU-SOIE-BLEU": ("Foulard en soie", "foulards", 89.9, url.format(1, 4), f"{SHOP_URL}/4-large_default/foulard-en-soie.jpg",
                          attributes("1", "4", 0, True, "Fular de seda")),
        "CARRE-90-BLEU": ("Carré de soie 90 x 90", "carres-de-soie", 149.0, url.format(2, 7),
                          f"{SHOP_URL}/9-large_default/carre-de-soie-90-x-90.jpg",
                          attributes("2", "7", 5, True, "Pañuelo de seda 90 x 90")),
        "CARRE-90-OR": ("Carré de soie 90 x 90", "carres-de-soie", 159.0, url.format(2, 8),
                        f"{SHOP_URL}/9-large_default/carre-de-soie-90-x-90.jpg",
                        attributes("2", "8", 3, True, "Pañuelo de seda 90 x 90")),
        "POCHETTE-SOIE": ("Pochette en soie", "accessoires", 65.5, url.format(3, 0),
                          f"{SHOP_URL}/11-large_default/pochette-en-soie.jpg",
                          attributes("3", "0", 20, True, "Pañuelo de bolsillo de seda")),
        "ETOLE-LIN": ("Étole en lin", "etoles", 120.0, url.format(4, 0), f"{SHOP_URL}/12-large_default/etole-en-lin.jpg",
                      attributes("4", "0", 0, False, "Estola de lino")),
        # No cover image: no half-made image address.
        "ECHARPE-CACHEMIRE": ("Écharpe en cachemire", "echarpes", 1180.0, url.format(6, 0), None,
                              attributes("6", "0", 2, True, "Bufanda de cachemir")),
    }


def test_purchases_link_to_the_catalogue_and_a_message_featuring_a_product_skips_who_bought_it(shop):
    """The references of the products query are those of the orders query: every purchase is of a known product, and a
    promotion of the blue silk square is not sent to Hugo, who bought one, while Lucía, who did not, may get it."""
    run(shop, "customers", str(CUSTOMERS), "--map", "prestashop")
    run(shop, "products", str(PRODUCTS), "--map", "prestashop")
    orders = run(shop, "orders", str(ORDERS), "--map", "prestashop")
    assert orders["rows_imported"] == 5
    assert orders["details"].get("lines_unknown_product", 0) == 0
    product_campaign(shop, "carres", "carre-bleu", "CARRE-90-BLEU")

    def relmail(*args: str) -> str:
        return relmail_ok(shop, *args)

    relmail("plan", "carres", "--window", "this-week")
    assert "OWNS_PRODUCT: already owns CARRE-90-BLEU" in relmail("why", "6")  # Hugo: order 30
    assert "OWNS_PRODUCT: already owns CARRE-90-BLEU" in relmail("why", "2")  # Carlos: order 26 (27 is unpaid)
    lucia = relmail("why", "7")  # she bought the red scarf, not the square
    assert "carre-bleu: SEND" in lucia and "OWNS_PRODUCT" not in lucia


def test_a_disabled_product_is_never_recommended_but_can_still_be_featured(shop, tmp_path):
    """A product the shop disabled has no page ("product not available"): an e-mail must not link to it unasked."""
    products = tmp_path / "request_sql_4.csv"
    products.write_text(PRODUCTS.read_text(encoding="utf-8")
                        + "7;0;ETOLE-LAINE;\"Étole en laine\";\"Estola de lana\";Étoles;95.00;4;1;13;etole-en-laine\n"
                        + "8;0;ETOLE-SOIE;\"Étole en soie\";\"Estola de seda\";Étoles;110.00;6;1;14;etole-en-soie\n",
                        encoding="utf-8")
    orders = tmp_path / "request_sql_2.csv"
    orders.write_text("id_order;reference;id_customer;email;date_add;status;currency;order_total;product_reference;"
                      "product_quantity;total_price_tax_incl\n"
                      '40;QWERTYUIO;6;hugo.martin@mail.example;"2026-11-30 10:00:00";paid;EUR;110.000000;ETOLE-SOIE;1;110.000000\n',
                      encoding="utf-8")
    run(shop, "customers", str(CUSTOMERS), "--map", "prestashop")
    run(shop, "products", str(products), "--map", "prestashop")
    run(shop, "orders", str(orders), "--map", "prestashop")
    assert {r["id"]: r["attributes"].get("available") for r in rows(shop, Product)}["ETOLE-LIN"] is False
    product_campaign(shop, "hiver", "hiver", "POCHETTE-SOIE")
    (shop.root / "templates" / "hiver.html").write_text(
        "<html><head><title>{% block subject %}{{ featured.name }}{% endblock %}</title></head><body>"
        "{% for p in products %}<p>[{{ p.id }}]</p>{% endfor %}<a href=\"{{ links.unsubscribe }}\">x</a></body></html>")
    # Hugo bought a stole: of the other two, the disabled linen one is left out.
    assert "[ETOLE-LAINE]" in relmail_ok(shop, "preview", "hiver", "--customer", "6", "--text").replace("\\", "")
    assert "[ETOLE-LIN]" not in relmail_ok(shop, "preview", "hiver", "--customer", "6", "--text").replace("\\", "")
    product_campaign(shop, "lin", "lin", "ETOLE-LIN")  # featured on purpose: the campaign's choice
    assert "Étole en lin" in relmail_ok(shop, "preview", "lin", "--customer", "6", "--html")


def test_the_catalogue_grid_of_a_back_office_in_french_reads_its_prices_and_skips_products_without_a_reference(shop):
    done = run(shop, "products", str(PRODUCT_GRID), "--map", "prestashop")
    assert (done["mapping"], done["rows_read"], done["rows_imported"]) == ("prestashop/products-grid-fr.yml", 6, 5)
    assert done["skipped"] == {"products without a reference": 1}  # the gift card
    image = "https://soierie-bellecour.example/{}.jpg"
    assert catalogue(shop) == {
        # "1 180,00 €": a narrow no-break space between the groups, a no-break space before the euro sign.
        "ECHARPE-CACHEMIRE": ("Écharpe en cachemire", "echarpes", 1180.0, None, None,
                              {"prestashop_id_product": "6", "prestashop_quantity": 2}),
        "ETOLE-LIN": ("Étole en lin", "etoles", 120.0, None, image.format("12/etole-en-lin"),
                      {"prestashop_id_product": "4", "prestashop_quantity": 0}),
        "POCHETTE-SOIE": ("Pochette en soie", "accessoires", 65.5, None, image.format("11/pochette-en-soie"),
                          {"prestashop_id_product": "3", "prestashop_quantity": 20}),
        # The product's own reference: the grid has no combinations.
        "CARRE-90": ("Carré de soie 90 x 90", "carres-de-soie", 149.0, None, image.format("9/carre-de-soie-90-x-90"),
                     {"prestashop_id_product": "2", "prestashop_quantity": 8}),
        "FOU-SOIE": ("Foulard en soie", "foulards", 89.9, None, image.format("4/foulard-en-soie"),
                     {"prestashop_id_product": "1", "prestashop_quantity": 12}),
    }
    assert "\u202f" in PRODUCT_GRID.read_text(encoding="utf-8")  # the sample is as PrestaShop writes it


def test_the_catalogue_grid_of_a_back_office_in_english_reads_a_dot_for_decimals(shop, tmp_path):
    # PrestaShop 8.1's grid names the first column "ID"; without stock management it has no Quantity column.
    path = tmp_path / "product_2026-12-07_101600.csv"
    path.write_text('ID;Image;Name;Reference;Category;"Price (tax excl.)";"Price (tax incl.)";Status;Position\n'
                    '6;;"Cashmere scarf";ECHARPE-CACHEMIRE;Scarves;€983.33;€1,180.00;1;\n', encoding="utf-8")
    done = run(shop, "products", str(path), "--map", "prestashop")
    assert done["mapping"] == "prestashop/products-grid-en.yml"
    assert catalogue(shop) == {"ECHARPE-CACHEMIRE": ("Cashmere scarf", "scarves", 1180.0, None, None,
                                                     {"prestashop_id_product": "6"})}


def test_a_bad_catalogue_row_is_named_by_file_line_and_column_and_nothing_is_imported(shop, tmp_path):
    lines = PRODUCT_GRID.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].replace(f"120,00{NBSP}€", f"120,00{NBSP}$")  # line 4: Étole en lin
    lines[6] = lines[6].replace(";12;0;", ";douze;0;")  # line 7: Foulard en soie
    path = tmp_path / PRODUCT_GRID.name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = invoke(shop, "products", str(path), "--map", "prestashop")
    assert result.exit_code == 4, result.output
    assert f"{path}:4: field 'Prix (TTC)': '120,00\\xa0$' is in USD/CAD/AUD/NZD/SGD/HKD/MXN; the mapping expects EUR" \
        in result.output
    assert f"{path}:7: field 'Quantité': 'douze'" in result.output
    assert rows(shop, Product) == []  # all or nothing: the good rows are not written either


def test_the_newsletter_flag_of_a_guest_or_an_account_is_the_mailboxs_and_the_latest_change_wins(shop, tmp_path):
    """A guest checkout and the account opened later (one address, in another case) are one mailbox: an account's
    flag that turned to no stops the guest too, and the guest's undated yes of an old checkout never undoes it."""
    header = "ID;Social title;First name;Last name;Email address;Group;Company;Sales;Enabled;Newsletter;Partner offers;Registration;Last visit"
    guest = '7;;Kim;Jansen;kim@mail.example;Guest;;€0.00;Yes;{};No;"06/01/2025 10:00:00";"0000-00-00 00:00:00"'
    account = '9;;Kim;Jansen;Kim@Mail.example;Customer;;€99.00;Yes;{};No;"09/01/2025 10:00:00";"0000-00-00 00:00:00"'
    path = tmp_path / "customer_2026-12-07_101500.csv"

    def export(*lines: str) -> dict:
        path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
        return run(shop, "customers", str(path), "--map", "prestashop")

    export(guest.format("yes"), account.format("yes"))
    assert consent(shop)[("7", "*")] is True and consent(shop)[("9", "*")] is True
    # The next export lists the account only (a filtered export): it unsubscribed in the shop in between.
    done = export(account.format("No"))
    assert done["details"]["consent_shared_records"] >= 1
    assert consent(shop)[("9", "*")] is False and consent(shop)[("7", "*")] is False
    # The old guest row again, still saying yes without a date: the mailbox's opt-out stands under both ids.
    export(guest.format("yes"))
    assert consent(shop)[("7", "*")] is False and consent(shop)[("9", "*")] is False
