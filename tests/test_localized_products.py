"""Products in the customer's language: ``name_de``, ``url_de``, ``description_de`` ... by locale."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relmail.project import Project, init_project
from relmail.render import CustomerContext, MessageSpec, Renderer
from relmail.render.catalog import Catalog, localized

KEY = "test-signing-key-not-secret"

LAMP = {"id": "L1", "name": "Lamp Nova", "price": 49.0, "url": "https://shop.example/p/L1", "category": "lights", "image_url": None,
        "attributes": {"name_de": "Leuchte Nova", "name_de_AT": "Luster Nova", "url_de": "https://shop.example/de/p/L1",
                       "description": "A warm reading lamp", "description_DE": "Eine warme Leselampe", "colour": "amber"}}
CHAIR = {"id": "C1", "name": "Chair Oslo", "price": 199.0, "url": "https://shop.example/p/C1", "category": "furniture", "image_url": None,
         "attributes": {}}


def test_the_most_specific_locale_suffix_wins_and_a_product_without_one_keeps_its_own_value():
    assert localized(LAMP, "de_AT")["name"] == "Luster Nova"
    de = localized(LAMP, "de_DE")
    assert de["name"] == "Leuchte Nova" and de["url"] == "https://shop.example/de/p/L1"
    # Case and '-' do not matter; attributes are localized too, the others stay.
    assert de["attributes"]["description"] == "Eine warme Leselampe" and de["attributes"]["colour"] == "amber"
    assert localized(LAMP, "de-de")["attributes"]["description"] == "Eine warme Leselampe"
    en = localized(LAMP, "en_GB")
    assert en["name"] == "Lamp Nova" and en["url"] == "https://shop.example/p/L1" and en["attributes"]["description"] == "A warm reading lamp"
    assert localized(CHAIR, "de_DE") == CHAIR


def test_a_price_per_language_replaces_the_price_only_where_the_customer_pays_in_another_currency():
    from relmail.render.currency import Currencies

    product = {"id": "L1", "name": "Lamp", "price": 49.0, "attributes": {"price_pl": 219.0}}
    # One currency for everyone: every customer sees the price column, in it.
    assert localized(product, "pl_PL")["price"] == 49.0
    assert localized(product, "pl_PL", Currencies("EUR"))["price"] == 49.0
    # Złoty for Polish customers: theirs is price_pl; the German customer keeps the price column.
    two = Currencies("EUR", {"de": "EUR", "pl": "PLN"})
    assert localized(product, "pl_PL", two)["price"] == 219.0 and localized(product, "de_DE", two)["price"] == 49.0
    assert "price" not in localized(product, "pl_PL", two)["attributes"]


def test_a_localized_attribute_without_a_value_of_its_own_is_the_attribute_in_that_language():
    # A shop selling in Germany and Poland only: description_de and description_pl, no description.
    product = {**CHAIR, "attributes": {"description_de": "Ein Stuhl", "description_PL": "Krzesło", "material_de_AT": "Holz (AT)",
                                       "material_de": "Holz", "care_pl": ""}}
    de, at, pl, en = (localized(product, loc)["attributes"] for loc in ("de_DE", "de_AT", "pl_PL", "en_GB"))
    assert de["description"] == "Ein Stuhl" and de["material"] == "Holz" and "care" not in de
    assert at["material"] == "Holz (AT)"  # the most specific suffix wins here too
    assert pl["description"] == "Krzesło" and "care" not in pl and "material" not in pl
    assert "description" not in en and en["description_de"] == "Ein Stuhl"  # the columns stay readable


def test_an_empty_localized_cell_falls_back_to_the_products_own_value():
    product = {**CHAIR, "attributes": {"name_de": ""}}
    assert localized(product, "de_DE")["name"] == "Chair Oslo"


@given(st.sampled_from(["de", "de_DE", "de_AT", "en_GB", "nl", "fr_CA", "DE-de"]))
def test_a_locale_view_of_the_catalogue_equals_each_product_localized_and_is_made_once(locale):
    catalog = Catalog({"L1": LAMP, "C1": CHAIR})
    view = catalog.for_locale(locale)
    assert view is catalog.for_locale(locale)
    for pid, product in (("L1", LAMP), ("C1", CHAIR)):
        assert dict(view[pid]) == {**localized(product, locale), "attributes": dict(localized(product, locale)["attributes"])}
        assert view(pid)["name"] == localized(product, locale)["name"]


def test_a_catalogue_without_localized_attributes_is_its_own_view():
    catalog = Catalog({"C1": CHAIR})
    assert catalog.for_locale("de_DE") is catalog


@pytest.fixture
def shop(tmp_path, monkeypatch) -> Project:
    monkeypatch.setenv("RELMAIL_SIGNING_KEY", KEY)
    project = init_project(tmp_path / "shop")
    (project.templates_dir / "lamp.html").write_text(
        '{% extends "layouts/base.html" %}{% block subject %}{{ featured.name }}{% endblock %}{% block content %}'
        '<p><a href="{{ featured.url }}">{{ featured.name }}</a>: {{ featured.attributes.description }}</p>'
        '{% for p in products %}<p>{{ p.name }}</p>{% endfor %}<p>{{ product("L1").name }}</p>{% endblock %}', encoding="utf-8")
    return Project.load(project.root)


def context(locale: str, catalog: Catalog | None) -> CustomerContext:
    return CustomerContext(id="X1", email="kunde@example.de", first_name="Uta", locale=locale, featured_products=[LAMP],
                           recommended_products=[LAMP, CHAIR], catalog=catalog)


@pytest.mark.parametrize("with_catalog", [True, False], ids=["whole-catalogue", "chair-not-in-catalogue"])
def test_each_customer_reads_featured_recommended_and_looked_up_products_in_their_language(shop, with_catalog):
    renderer = Renderer(shop)
    spec = MessageSpec(id="lamp", template="lamp", topic="promotions", campaign_id="weekly", run_id="weekly:2026-W48")
    catalog = Catalog({"L1": LAMP, "C1": CHAIR}) if with_catalog else Catalog({"L1": LAMP})
    de = renderer.render(spec, context("de_DE", catalog))
    en = renderer.render(spec, context("en_GB", catalog))
    assert de.subject == "Leuchte Nova" and en.subject == "Lamp Nova"
    assert 'href="https://shop.example/de/p/L1' in de.html and "Eine warme Leselampe" in de.html
    assert 'href="https://shop.example/p/L1' in en.html and "A warm reading lamp" in en.html
    # The recommendation and product("L1") too; the chair has no German name and keeps its own.
    assert de.html.count("Leuchte Nova") == 4 and "Chair Oslo" in de.html
    assert "Leuchte Nova" not in en.html and "Leuchte Nova" not in en.text


def _sell_in_poland(project: Project, currency: str = '{ en = "EUR", pl = "PLN" }') -> Project:
    config = project.root / "relmail.toml"
    config.write_text(config.read_text(encoding="utf-8").replace("[brand]\n", f"[brand]\ncurrency = {currency}\n", 1), encoding="utf-8")
    (project.templates_dir / "prices.html").write_text(
        '{% extends "layouts/base.html" %}{% block subject %}{{ featured.name }}{% endblock %}{% block content %}'
        '{% for p in products %}<p>{{ p.name }}: {{ p.price|money }}</p>{% endfor %}'
        '<p>{% if product("C1").price %}{{ product("C1").price|money }}{% else %}-{% endif %}</p>{% endblock %}', encoding="utf-8")
    return Project.load(project.root)


def test_a_shop_selling_in_two_currencies_shows_each_customer_the_price_in_theirs_and_never_the_other_amount(shop):
    from relmail.render import RenderError

    renderer = Renderer(_sell_in_poland(shop))
    spec = MessageSpec(id="prices", template="prices", topic="promotions", campaign_id="weekly", run_id="weekly:2026-W48")
    lamp = {**LAMP, "attributes": {**LAMP["attributes"], "name_pl": "Lampa Nova", "price_pl": 219.0}}
    catalog = Catalog({"L1": lamp, "C1": CHAIR})

    def render(locale, products):
        return renderer.render(spec, CustomerContext(id="X1", email="k@example.pl", locale=locale, featured_products=[lamp],
                                                     recommended_products=products, catalog=catalog))

    pl = render("pl_PL", [lamp])
    assert "Lampa Nova: 219,00\xa0zł" in pl.html and "49" not in pl.text
    assert "<p>-</p>" in pl.html  # the chair has no price_pl: no price for a Polish customer, it tests false
    en = render("en_GB", [lamp])
    assert "Lamp Nova: €49.00" in en.html and "€199.00" in en.html
    assert "Lamp Nova: 49,00\xa0€" in render("fr_FR", [lamp]).html  # a language the table does not name: the price column's
    # Printing the chair's price to a Polish customer would be euros labelled złoty: an error naming product and column.
    with pytest.raises(RenderError, match=r"product\('C1'\)\.price: no price in PLN for pl_PL customers \(give the product a "
                                          r"price_pl column value; its price column is in EUR\)"):
        render("pl_PL", [lamp, CHAIR])


@pytest.mark.parametrize("currency, message", [
    ('{ de = "EUR", pl = "PLN" }', "no entry for 'en', the language of default_locale"),
    ('{ en = "EUR", pl = "ZLOTY" }', "currency.pl: 'ZLOTY' is not an ISO 4217 currency code"),
    ('"EURO"', "'EURO' is not an ISO 4217 currency code"),
])
def test_a_currency_setting_that_cannot_be_right_is_refused_naming_the_key(shop, currency, message):
    from relmail.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        Renderer(_sell_in_poland(shop, currency))


def test_a_locale_with_a_currency_of_its_own_takes_its_own_price_column_never_its_languages_in_another_currency():
    from types import SimpleNamespace

    from relmail.render.catalog import localized
    from relmail.render.currency import Currencies

    settings = SimpleNamespace(raw={"brand": {"currency": {"he": "ILS", "en": "USD", "en_AE": "AED"}}}, default_locale="he_IL")
    currencies = Currencies.from_settings(settings)
    assert [currencies.for_locale(x) for x in ("he_IL", "en_US", "en_AE", "en-ae", "ar_AE")] == ["ILS", "USD", "AED", "AED", "ILS"]
    product = {"id": "OLV-500", "name": "Olive oil", "price": 89.9, "attributes": {"price_en": 24.5, "price_en_AE": 89.0}}
    assert localized(product, "en_US", currencies)["price"] == 24.5
    assert localized(product, "en_AE", currencies)["price"] == 89.0
    # Without a price_en_AE, the USD price is no AED price: none, and printing it names the column to fill in.
    bare = {**product, "attributes": {"price_en": 24.5}}
    missing = localized(bare, "en_AE", currencies)["price"]
    assert not missing
    assert "give the product a price_en_AE column value; its price column is in ILS" in missing._undefined_message
