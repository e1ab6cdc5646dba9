"""The undefined policy: testing a missing optional value is false or empty; printing it, or a typo, is an error."""

from __future__ import annotations

import pytest

from relmail.project import Project, init_project
from relmail.render import CustomerContext, MessageSpec, Renderer, RenderError

#: Each line tests one way of asking about X; the rendered line says what the template saw.
TESTS = """{% block subject %}s{% endblock %}<html><body><pre>
if={% if X %}yes{% else %}no{% endif %}
eq={% if X == "vip" %}yes{% else %}no{% endif %}
ne={% if X != "vip" %}yes{% else %}no{% endif %}
in={% if "vip" in X %}yes{% else %}no{% endif %}
in-list={% if X in ["vip", "gold"] %}yes{% else %}no{% endif %}
gt={% if X > 3 %}yes{% else %}no{% endif %}
defined={% if X is defined %}yes{% else %}no{% endif %}
default={{ X | default("fallback") }}
length={{ X | length }}
for={% for t in X %}[{{ t }}]{% else %}empty{% endfor %}
chained={% if X.city %}yes{% else %}no{% endif %}
</pre></body></html>
"""

MISSING = ["if=no", "eq=no", "ne=yes", "in=no", "in-list=no", "gt=no", "defined=no", "default=fallback", "length=0",
           "for=empty", "chained=no"]

PLACES = {
    "customer attribute": ("customer.attributes.tags", lambda v: {"attributes": {"tags": v}}, lambda v: {}),
    "product attribute": ("p.attributes.tags", lambda v: {"recommended_products": [{"id": "A", "attributes": {"tags": v}}]},
                          lambda v: {"recommended_products": [{"id": "A", "attributes": {}}]}),
    "product field": ("p.badge", lambda v: {"recommended_products": [{"id": "A", "badge": v}]},
                      lambda v: {"recommended_products": [{"id": "A"}]}),
    "message data": ("message.data.offer.tags", lambda v: {"_data": {"offer": {"tags": v}}}, lambda v: {"_data": {"offer": {}}}),
}


@pytest.fixture
def render_project(tmp_path, monkeypatch) -> Project:
    monkeypatch.setenv("RELMAIL_SIGNING_KEY", "test-signing-key-not-secret")
    return init_project(tmp_path / "shop")


def render(render_project: Project, body: str, ctx_kwargs: dict) -> str:
    (render_project.templates_dir / "opt.html").write_text(body, encoding="utf-8")
    kwargs = dict(ctx_kwargs)
    data = kwargs.pop("_data", {})
    spec = MessageSpec(id="opt", template="opt", topic="promotions", run_id="r", data=data)
    ctx = CustomerContext("C1", "c1@example.com", "Ann", None, "en_GB", **kwargs)
    return Renderer(render_project).render(spec, ctx).html


def lines(html: str) -> list[str]:
    return [line for line in html[html.index("<pre>") + 5: html.index("</pre>")].strip().splitlines()]


def with_loop(expr: str, template: str) -> str:
    """Product expressions run inside the products loop."""
    body = template.replace("X", expr)
    if expr.startswith("p."):
        body = body.replace("<pre>", "<pre>{% for p in products %}").replace("</pre>", "{% endfor %}</pre>")
    return body


@pytest.mark.parametrize("place", list(PLACES))
def test_testing_a_missing_optional_value_is_false_or_empty(render_project, place):
    expr, present, absent = PLACES[place]
    assert lines(render(render_project, with_loop(expr, TESTS), absent(None))) == MISSING


@pytest.mark.parametrize("place", list(PLACES))
def test_a_present_value_tests_as_itself(render_project, place):
    expr, present, absent = PLACES[place]
    got = dict(line.split("=", 1) for line in lines(render(render_project, with_loop(expr, TESTS.replace("X > 3", "X|length > 3").replace("X.city", "X")), present(["vip", "new"]))))
    assert got == {"if": "yes", "eq": "no", "ne": "yes", "in": "yes", "in-list": "no", "gt": "no", "defined": "yes",
                   "default": "[&#39;vip&#39;, &#39;new&#39;]", "length": "2", "for": "[vip][new]", "chained": "yes"}
    got = dict(line.split("=", 1) for line in lines(render(render_project, with_loop(expr, TESTS.replace("X.city", "X").replace("X > 3", "X|length > 3")), present("vip"))))
    assert (got["if"], got["eq"], got["ne"], got["in"], got["in-list"], got["chained"]) == ("yes", "yes", "no", "yes", "yes", "yes")


@pytest.mark.parametrize("place", list(PLACES))
def test_printing_a_missing_optional_value_is_an_error_naming_it(render_project, place):
    expr, _, absent = PLACES[place]
    body = with_loop(expr, "{% block subject %}s{% endblock %}<html><body><pre>\n\nhello {{ X }}</pre></body></html>")
    with pytest.raises(RenderError) as err:
        render(render_project, body, absent(None))
    where = {"customer attribute": "customer.attributes.tags", "product attribute": "product.attributes.tags",
             "product field": "product.badge", "message data": "message.data.offer.tags"}[place]
    assert f"{where} is missing" in str(err.value) and "default" in str(err.value)
    assert err.value.file == "opt.html" and err.value.line == 3


@pytest.mark.parametrize("expr", ["custmer.attributes.tags", "customer.atributes.tags", "customer.nickname", "mesage.data.x"])
def test_a_typo_outside_optional_data_fails_even_in_a_test(render_project, expr):
    body = "{% block subject %}s{% endblock %}<html><body>{% if " + expr + " == 'vip' %}x{% endif %}</body></html>"
    with pytest.raises(RenderError, match="undefined"):
        render(render_project, body, {"attributes": {"tags": "vip"}})


def test_optional_data_stays_a_mapping_for_filters_and_json(render_project):
    body = ("{% block subject %}s{% endblock %}<html><body>{{ customer.attributes|tojson }} {{ products|map(attribute='name')|join(',') }} "
            "{{ customer.attributes.get('city', 'none') }} {{ 'tier' in customer.attributes }} {{ products|sum(attribute='price') }}</body></html>")
    html = render(render_project, body, {"attributes": {"tier": "gold"}, "recommended_products": [{"name": "A", "price": 2}, {"name": "B", "price": 3}]})
    assert '{"tier": "gold"} A,B none True 5' in html


def test_a_misspelt_field_of_the_featured_product_is_named_as_written_with_the_fields_it_has(render_project):
    from relmail.render.catalog import Catalog

    book = {"id": "978", "name": "De tweeling", "price": 12.5, "url": "https://x.example/b", "category": "roman",
            "image_url": None, "attributes": {}}
    catalog = Catalog({"978": book})
    body = "{% block subject %}s{% endblock %}<html><body>\n<p>{{ featured.nme }}</p></body></html>"
    with pytest.raises(RenderError) as err:
        render(render_project, body, {"featured_products": [catalog("978")], "catalog": catalog})
    # The template says featured, not the catalogue's product('978'); the fields it has point at the typo.
    assert "featured.nme is missing" in str(err.value) and "product('978')" not in str(err.value)
    assert "featured has: attributes, category, id, image_url, name, price, url" in str(err.value)
    assert err.value.line == 2


def test_a_misspelt_customer_attribute_lists_the_attributes_the_customer_has(render_project):
    body = "{% block subject %}s{% endblock %}<html><body>{{ customer.attributes.cty }}</body></html>"
    with pytest.raises(RenderError) as err:
        render(render_project, body, {"attributes": {"city": "Delft", "tier": "gold"}})
    assert "customer.attributes.cty is missing" in str(err.value) and "customer.attributes has: city, tier" in str(err.value)
