"""Products in templates: image_url and attributes, product("SKU") lookups, and no featured product twice."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert

from relmail.importers import import_file
from relmail.project import Project, init_project
from relmail.render import CustomerContext, MessageSpec, Renderer, RenderError
from relmail.render.catalog import Catalog
from relmail.render.contexts import customer_contexts, load_catalog
from relmail.store.models import Customer, Event

T = datetime(2026, 11, 1, tzinfo=UTC)
PRODUCTS = (
    "id,name,category,price,url,image_url,vendor,format\n"
    "B1,De tweeling,roman,12.50,https://shop.example/b1,https://cdn.example/b1.jpg,Prometheus,paperback\n"
    "B2,Het smelt,roman,24.99,https://shop.example/b2,,Das Mag,\n"
    "B3,Max Havelaar,roman,9.99,https://shop.example/b3,,Querido,gebonden\n"
    "K1,Dolfje Weerwolfje,kinderboek,14.99,https://shop.example/k1,,Leopold,\n"
)


@pytest.fixture
def catalog_store(engine, tmp_path):
    path = tmp_path / "products.csv"
    path.write_text(PRODUCTS)
    import_file(engine, "products", path)
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__), [{"id": "A", "email": "a@example.com", "locale": "en_GB", "timezone": "UTC",
                                                   "created_at": T, "attributes": {}, "email_valid": True}])
        conn.execute(insert(Event.__table__), [
            {"customer_id": "A", "type": "purchase", "occurred_at": T, "product_id": pid, "value": 10.0} for pid in ("B2", "K1")])
    return engine


def test_products_carry_image_url_and_extra_columns_as_attributes(catalog_store):
    with catalog_store.connect() as conn:
        catalog = load_catalog(conn, T)
    assert catalog["B1"]["image_url"] == "https://cdn.example/b1.jpg"
    assert catalog["B1"]["attributes"] == {"vendor": "Prometheus", "format": "paperback"}
    assert catalog["B2"]["image_url"] is None and catalog["B2"]["attributes"] == {"vendor": "Das Mag"}  # empty cells left out


def test_recommendations_never_repeat_a_featured_product_nor_one_the_customer_owns(catalog_store):
    with catalog_store.connect() as conn:
        catalog = load_catalog(conn, T)
        plain = customer_contexts(conn, ["A"], T, catalog)["A"]
        featuring = customer_contexts(conn, ["A"], T, catalog, featured=("B1",))["A"]
    assert [p["id"] for p in plain.recommended_products] == ["B1", "B3"]  # romans, B2 owned
    assert [p["id"] for p in featuring.featured_products] == ["B1"]
    assert [p["id"] for p in featuring.recommended_products] == ["B3"]  # B1 is featured: shown once
    assert featuring.catalog("K1")["name"] == "Dolfje Weerwolfje"


@pytest.fixture
def renderer(tmp_path, monkeypatch):
    monkeypatch.setenv("RELMAIL_SIGNING_KEY", "catalog-test-key")
    project = init_project(tmp_path / "shop")
    (project.templates_dir / "tip.html").write_text(
        "{% block subject %}Tip: {{ featured.name }}{% endblock %}"
        "<p>{{ featured.name }} {{ featured.price|money }} <img src=\"{{ featured.image_url }}\" alt=\"\"></p>"
        "{% set other = product('B3') %}<p>{{ other.name }} by {{ other.attributes.vendor }}</p>"
        "{% if catalog['NOPE'] is defined %}never{% endif %}"
        "{% for p in products %}<p>also {{ p.name }}</p>{% endfor %}<a href=\"{{ links.unsubscribe }}\">x</a>", encoding="utf-8")
    (project.templates_dir / "typo.html").write_text(
        "{% block subject %}x{% endblock %}{{ product('B9').name }}<a href=\"{{ links.unsubscribe }}\">x</a>", encoding="utf-8")
    return Renderer(Project.load(project.root))


def test_a_template_looks_products_up_in_the_catalogue(catalog_store, renderer):
    with catalog_store.connect() as conn:
        ctx = customer_contexts(conn, ["A"], T, load_catalog(conn, T), featured=("B1",))["A"]
    email = renderer.render(MessageSpec(id="tip", template="tip", topic="t", campaign_id="c", run_id="r"), ctx)
    assert email.subject == "Tip: De tweeling"
    assert "https://cdn.example/b1.jpg" in email.html and "Max Havelaar by Querido" in email.html
    assert email.html.count("De tweeling") == 2 and "also De tweeling" not in email.html  # subject block + featured only


def test_a_product_the_catalogue_lacks_fails_that_customers_render_with_its_line(catalog_store, renderer):
    with catalog_store.connect() as conn:
        ctx = customer_contexts(conn, ["A"], T, load_catalog(conn, T))["A"]
    with pytest.raises(RenderError) as caught:
        renderer.render(MessageSpec(id="typo", template="typo", topic="t", campaign_id="c", run_id="r"), ctx)
    assert "product('B9'): no product with this id in the catalogue" in str(caught.value)
    assert caught.value.file == "typo.html"


def test_templates_check_has_no_database_and_gives_a_stand_in_for_any_id():
    catalog = Catalog({"B1": {"id": "B1", "name": "De tweeling"}}, stand_in=True)
    assert catalog("B1")["name"] == "De tweeling" and catalog("ANY")["name"] == "Product ANY"
    with pytest.raises(LookupError, match="no product with this id"):
        Catalog({})("B1")
    assert CustomerContext(id="x", email="x@example.com").catalog is None  # templates then get an empty catalogue
