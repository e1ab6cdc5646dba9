"""A product's sale: imported with its dates, priced as of the moment an e-mail is rendered, shown struck through.

The importer tests use the repository's WooCommerce export (``examples/woocommerce/``), whose poetry
book is on sale from 27 to 30 November 2026 in the shop's local time. Each test that touches the store
runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import email
import re
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import UndefinedError
from sqlalchemy import insert, select, update
from tests.sendkit import AS_OF, WINDOW, build

from relmail.importers.fields import FieldError
from relmail.importers.values import make_time
from relmail.render import CustomerContext, MessageSpec, Renderer
from relmail.render.catalog import Catalog
from relmail.render.catalog import localized as in_locale
from relmail.render.contexts import load_catalog
from relmail.render.currency import Currencies
from relmail.render.sale import Prices, priced
from relmail.sending.run import send
from relmail.store.db import make_engine, upgrade
from relmail.store.models import Product
from shop_imports import import_json, invoke_import, localized
from shop_imports import table_rows as rows

PRODUCTS = Path(__file__).resolve().parent.parent / "examples" / "woocommerce" / "wc-product-export-6-12-2026.csv"
POEMS = "9789046707077"
#: The poetry book's row and its sale dates as WooCommerce writes them (Y-m-d G:i:s, the shop's local time).
SALE_CELLS = ",2026-11-27 0:00:00,2026-11-30 23:59:59,"


def export(tmp_path, old: str = SALE_CELLS, new: str = SALE_CELLS, *more: tuple[str, str]) -> str:
    """The example export with ``old`` (in the poetry book's row) replaced by ``new``, and each of ``more``."""
    text = PRODUCTS.read_text(encoding="utf-8-sig")
    for a, b in ((old, new), *more):
        assert text.count(a) == 1
        text = text.replace(a, b)
    path = tmp_path / "wc-product-export-7-12-2026.csv"
    path.write_text(text, encoding="utf-8")
    return str(path)


def poems(project) -> dict:
    return next(r for r in rows(project, Product) if r["id"] == POEMS)


def test_woocommerce_sale_dates_are_read_in_the_projects_time_zone(project, tmp_path):
    localized(project, "America/New_York", "en_US")
    import_json(project, "products", export(tmp_path), "--map", "woocommerce")
    book = poems(project)
    assert (book["price"], book["sale_price"]) == (12.5, 10.0)
    assert book["sale_starts_at"].replace(tzinfo=UTC) == datetime(2026, 11, 27, 5, 0, tzinfo=UTC)  # EST, UTC-5
    assert book["sale_ends_at"].replace(tzinfo=UTC) == datetime(2026, 12, 1, 4, 59, 59, tzinfo=UTC)


def test_a_sale_date_that_does_not_parse_is_named_by_file_line_and_column(project, tmp_path):
    path = export(tmp_path, new=",2026-11-27 0:00:00,30/11/2026,")
    result = invoke_import(project, "products", path, "--map", "woocommerce")
    assert result.exit_code != 0
    assert "wc-product-export-7-12-2026.csv:3: field 'Date sale price ends': '30/11/2026' is not in the format" in result.output
    assert rows(project, Product) == []  # all or nothing


def test_a_sale_that_ends_before_it_starts_is_refused_naming_the_line(project, tmp_path):
    path = export(tmp_path, new=",2026-11-30 23:59:59,2026-11-27 0:00:00,")
    result = invoke_import(project, "products", path, "--map", "woocommerce")
    assert result.exit_code != 0
    assert "wc-product-export-7-12-2026.csv:3: field 'Date sale price ends': the sale ends (2026-11-26T23:00:00+00:00) before it starts" in result.output
    assert rows(project, Product) == []


def test_a_sale_the_shop_ended_is_gone_after_the_next_import(project, tmp_path):
    import_json(project, "products", export(tmp_path), "--map", "woocommerce")
    assert poems(project)["sale_price"] == 10.0
    # The next week's export: the shop took the sale off (price, dates and all).
    week2 = export(tmp_path, SALE_CELLS, ",,,", (",10.00,12.50,", ",,12.50,"))
    import_json(project, "products", week2, "--map", "woocommerce")
    book = poems(project)
    assert (book["sale_price"], book["sale_starts_at"], book["sale_ends_at"]) == (None, None, None)


TIMES = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC))


@given(at=TIMES, starts=st.none() | TIMES, ends=st.none() | TIMES,
       regular=st.decimals(min_value=1, max_value=5000, places=2), off=st.decimals(min_value="0.01", max_value="0.99", places=2))
@settings(max_examples=300, deadline=None)
def test_the_price_is_the_sale_price_exactly_while_the_sale_runs(at, starts, ends, regular, off):
    sale = float(round(regular * (1 - off), 2))
    product = {"id": "P", "name": "P", "price": float(regular), "sale_price": sale, "sale_starts_at": starts,
               "sale_ends_at": ends, "attributes": {}}
    shown = priced(product, at)
    runs = (starts is None or starts <= at) and (ends is None or at < ends)
    assert shown["price"] == (sale if runs else float(regular))
    assert shown["on_sale"] is (runs and sale < float(regular))
    assert shown["regular_price"] == float(regular)
    assert not {"sale_price", "sale_starts_at", "sale_ends_at"} & set(shown)  # a template never reads a stale sale


@given(products=st.lists(st.tuples(st.none() | TIMES, st.none() | TIMES), min_size=1, max_size=6),
       moments=st.lists(TIMES, min_size=1, max_size=8))
@settings(max_examples=200, deadline=None)
def test_a_catalogue_asked_at_moment_after_moment_prices_each_as_if_new(products, moments):
    stored = [{"id": f"P{i}", "name": "P", "price": 20.0, "sale_price": 15.0, "sale_starts_at": s, "sale_ends_at": e,
               "attributes": {}} for i, (s, e) in enumerate(products)]
    prices = Prices(stored)
    for at in moments:  # in any order: forwards, backwards, the same moment twice
        catalog = prices.at(at)
        assert {pid: catalog[pid]["price"] for pid in catalog} == {r["id"]: priced(r, at)["price"] for r in stored}


def test_the_example_templates_strike_the_regular_price_through_during_a_sale(project):
    renderer = Renderer(project)
    stored = {"id": "B1", "name": "Gedichten", "price": 12.5, "sale_price": 10.0, "url": "https://shop.example/b1",
              "category": "poezie", "image_url": None, "attributes": {},
              "sale_starts_at": datetime(2026, 11, 27, tzinfo=UTC), "sale_ends_at": datetime(2026, 12, 1, tzinfo=UTC)}

    def newsletter(at: datetime):
        catalog = Catalog({"B1": priced(stored, at)})
        ctx = CustomerContext("C1", "anna@example.com", "Anna", None, "en_GB", "Europe/London", {}, [catalog["B1"]],
                              {"owned_products": []}, catalog=catalog)
        return renderer.render(MessageSpec(id="news", template="newsletter", topic="newsletter", campaign_id="c", run_id="r"), ctx)

    during = newsletter(datetime(2026, 11, 28, tzinfo=UTC))
    # The CSS is inlined: each element carries its style.
    assert re.search(r'<s class="was"[^>]*>€12.50</s> <span class="price"[^>]*>€10.00</span>', during.html)
    assert "Gedichten: €10.00 (was €12.50)" in during.text
    after = newsletter(datetime(2026, 12, 1, tzinfo=UTC))
    assert re.search(r'<br>\s*<span class="price"[^>]*>€12.50</span>', after.html)
    assert "€10.00" not in after.html and "<s " not in after.html
    assert "Gedichten: €12.50\n" in after.text


def test_an_e_mail_sent_after_the_sale_ended_shows_the_regular_price_though_planned_during_it(project):
    """Planned (and partly sent) on Friday while the sale runs, the rest sent on Saturday after it ended."""
    engine = build(project, customers=60)
    ends = AS_OF + timedelta(hours=20)
    P = Product.__table__
    with engine.begin() as conn:
        regular = dict(conn.execute(select(P.c.id, P.c.price)).all())
        conn.execute(update(P).values(sale_price=P.c.price - 5, sale_ends_at=ends))
    with engine.connect() as conn:
        assert {p: c["price"] for p, c in load_catalog(conn, AS_OF).items()} == {p: r - 5 for p, r in regular.items()}
        assert {p: c["price"] for p, c in load_catalog(conn, ends).items()} == regular  # the end is not part of the sale

    def sent_html() -> list[str]:
        out = []
        for path in sorted((project.root / "outbox").glob("*.eml")):
            msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
            out.append(msg.get_body(("html",)).get_content())
            path.unlink()
        return out

    first = send(project, engine, "sendtest", WINDOW, limit=20, now=lambda: AS_OF)
    assert first.done["accepted"] == 20
    friday = sent_html()
    assert sum('class="was"' in html for html in friday) > 0
    rest = send(project, engine, "sendtest", WINDOW, now=lambda: ends + timedelta(hours=1))
    assert not rest.planned_now and rest.done["accepted"] > 0  # the plan of Friday, sent on Saturday
    saturday = sent_html()
    assert len(saturday) == rest.done["accepted"]
    assert not any('class="was"' in html for html in saturday)
    assert sum('class="price"' in html for html in saturday) > 0


def test_a_customer_paying_in_another_currency_sees_that_currencys_sale_price_or_none():
    two = Currencies("EUR", {"de": "EUR", "pl": "PLN"})
    stored = {"id": "K1", "name": "Czajnik", "price": 49.9, "sale_price": 39.9, "sale_starts_at": None, "sale_ends_at": None,
              "attributes": {"price_pl": 219.0, "sale_price_pl": 179.0}}
    during = in_locale(priced(stored, AS_OF), "pl_PL", two)
    assert (during["price"], during["regular_price"], during["on_sale"]) == (179.0, 219.0, True)
    # Without the sale price in złoty: no price rather than the regular one, which would overstate it.
    without = in_locale(priced({**stored, "attributes": {"price_pl": 219.0}}, AS_OF), "pl_PL", two)
    assert without["regular_price"] == 219.0 and not without["price"]
    with pytest.raises(UndefinedError, match=r"no sale price in PLN for pl_PL customers \(give the product a sale_price_pl"):
        str(without["price"])
    assert in_locale(priced({**stored, "sale_price": None}, AS_OF), "pl_PL", two)["price"] == 219.0


def test_upgrading_a_store_takes_the_undated_sale_price_out_of_the_attributes(empty_db_url):
    """A 0017 store kept WooCommerce's sale price as an attribute; merged by every import, it would never leave."""
    engine = make_engine(empty_db_url)
    try:
        upgrade(engine, "0017")
        with engine.begin() as conn:
            conn.execute(insert(Product.__table__), [
                {"id": "B1", "name": "Gedichten", "category": "poezie", "price": 12.5, "features": [],
                 "attributes": {"sale_price": 10.0, "woocommerce_id": "102"}},
                {"id": "B2", "name": "Het diner", "category": "romans", "price": 22.5, "features": [], "attributes": {}}])
        upgrade(engine)
        with engine.connect() as conn:
            stored = {r.id: r for r in conn.execute(select(Product.__table__))}
        assert stored["B1"].attributes == {"woocommerce_id": "102"} and stored["B2"].attributes == {}
        assert stored["B1"].sale_price is None and stored["B1"].price == 12.5
    finally:
        engine.dispose()


@given(local=st.datetimes(min_value=datetime(1980, 1, 1), max_value=datetime(2199, 12, 31)).filter(lambda d: d.hour >= 4))
@settings(max_examples=300, deadline=None)
def test_a_sale_date_reads_as_the_shops_local_time_however_far_ahead(local):
    # Hours from 04:00: the clocks change at 02:00 and 03:00, where a local time is missing or twice.
    local = local.replace(microsecond=0)
    parse = make_time("%Y-%m-%d %H:%M:%S", "Europe/Amsterdam", ahead=True)
    written = f"{local:%Y-%m-%d} {local.hour}:{local:%M:%S}"  # as WooCommerce writes it: the hour without its zero
    assert parse(written) == local.replace(tzinfo=ZoneInfo("Europe/Amsterdam")).astimezone(UTC)


def test_a_sale_date_before_1900_is_a_placeholder_and_refused_and_other_times_still_may_not_lie_ahead():
    with pytest.raises(FieldError, match="implausible time: '1899-12-31 0:00:00' lies before 1900"):
        make_time("%Y-%m-%d %H:%M:%S", "Europe/Amsterdam", ahead=True)("1899-12-31 0:00:00")
    with pytest.raises(FieldError, match="lies in the future"):
        make_time("%Y-%m-%d %H:%M:%S", "Europe/Amsterdam")("2199-12-31 0:00:00")
